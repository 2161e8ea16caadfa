"""`ofakit predict`, `ofakit fit-accuracy` and `ofakit fit-latency` end to end through the CLI entry point."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ofakit.device_profiles.ofa_yaml import import_ofa
from ofakit.ofa_core.space import ArchConfig, sample_batch
from ofakit.cli import main
from ofakit.predictors.accuracy import load_accuracy_predictor

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NOTE10 = SHARED / "data" / "ofa_note10_lut"
HELP = SHARED / "data" / "help_ofa_gpu_latency" / "ofa_subnets_gpu_latency.jsonl"
OFA_PTH = SHARED / "data" / "ofa_acc_predictor" / "acc_predictor.pth"


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("profiles")
    import_ofa(NOTE10, "note10", 1.2).save(root / "note10")
    return root


@pytest.fixture
def env(profile_dir, monkeypatch):
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(profile_dir))
    return profile_dir


def _arch_file(tmp_path: Path, arch: ArchConfig, with_width: bool = False) -> Path:
    p = tmp_path / "arch.json"
    d = arch.to_ofa_dict()
    if with_width:
        d["width"] = arch.width
    p.write_text(json.dumps(d))
    return p


def test_predict_prints_lut_sum(env, tmp_path, capsys):
    from ofakit.device_profiles import load_profile

    arch = ArchConfig([5] * 20, [4] * 20, [3] * 5, 208, 1.2)
    path = _arch_file(tmp_path, arch)
    assert main(["predict", str(path), "--profile", "note10"]) == 0
    out = capsys.readouterr().out.strip()
    expected = load_profile("note10").table().evaluate([arch])[0]
    assert out.startswith(f"{expected:.3f} ms  (profile note10 (") and out.endswith("predictor lut)")
    assert 10 < expected < 60  # Note10 subnets take tens of ms


def test_predict_default_profile_lut_and_calibrated(tmp_path, capsys):
    from ofakit.device_profiles import DEFAULT_PROFILE, load_profile
    from ofakit.predictors.lut import CalibratedLUTPredictor

    arch = ArchConfig([5] * 20, [4] * 20, [3] * 5, 192, 1.0)
    path = _arch_file(tmp_path, arch)
    assert main(["predict", str(path), "--predictor", "lut"]) == 0
    lut = float(capsys.readouterr().out.split()[0])
    assert main(["predict", str(path), "--predictor", "calibrated"]) == 0
    cal = float(capsys.readouterr().out.split()[0])
    assert main(["predict", str(path)]) == 0  # the default: calibrated, as the shipped profile has a calibration
    out = capsys.readouterr().out
    default = float(out.split()[0])
    assert "predictor calibrated" in out
    prof = load_profile(DEFAULT_PROFILE)
    assert prof.meta.calibration and default == cal
    assert lut == pytest.approx(prof.table().evaluate([arch])[0], abs=5e-4)
    assert cal == pytest.approx(CalibratedLUTPredictor(prof).predict([arch])[0], abs=5e-4)


def test_predict_errors_are_one_line(env, tmp_path, capsys):
    arch = ArchConfig([5] * 20, [4] * 20, [3] * 5, 208, 1.0)
    path = _arch_file(tmp_path, arch, with_width=True)
    cases = [
        (["predict", str(path), "--profile", "note10"], "pass --width 1.2"),
        (["predict", str(path), "--profile", "nope"], "no device profile 'nope'"),
        (["predict", str(tmp_path / "missing.json"), "--profile", "note10"], "cannot read arch file"),
        (["predict", str(path), "--profile", "note10", "--predictor", "magic"], "neither a known name"),
        (["predict", str(path), "--width", "1.2", "--predictor", str(tmp_path)], "no saved predictor"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ks": [9] * 20, "e": [4] * 20, "d": [3] * 5, "r": 208}))
    assert main(["predict", str(bad), "--profile", "note10"]) == 2
    assert "ks[0]: 9 is not one of [3, 5, 7]" in capsys.readouterr().err
    # a resolution the table lacks
    low = _arch_file(tmp_path, ArchConfig([5] * 20, [4] * 20, [3] * 5, 128, 1.2))
    assert main(["predict", str(low), "--profile", "note10"]) == 2
    assert "resolution 128 is not in this table" in capsys.readouterr().err


def test_fit_accuracy_cli(tmp_path, capsys):
    ofa = load_accuracy_predictor(f"ofa:{OFA_PTH}")
    b = sample_batch(np.random.default_rng(5), 300, resolutions=range(160, 225, 4))
    acc = ofa.predict(b)
    data = tmp_path / "acc.jsonl"
    data.write_text("".join(json.dumps(dict(c.to_dict(), acc=float(a))) + "\n"
                            for c, a in zip(b.to_configs(), acc)))
    out = tmp_path / "model"
    assert main(["fit-accuracy", str(data), "--out", str(out), "--hidden", "32,32", "--epochs", "20",
                 "--encoding", "ofa", "--test", str(data)]) == 0
    text = capsys.readouterr().out
    assert "held-out: n=30  RMSE=" in text and "Kendall tau=" in text and "Spearman=" in text
    model = load_accuracy_predictor(f"mlp:{out}")
    assert model.predict(b).shape == (300,)
    assert main(["fit-accuracy", str(data), "--out", str(out), "--hidden", "a,b"]) == 2
    assert "--hidden: expected comma-separated" in capsys.readouterr().err


def test_fit_latency_cli_and_predict_with_it(env, tmp_path, capsys):
    rows = [json.loads(line) for line in HELP.read_text().splitlines()[:200]]
    data = tmp_path / "measured.jsonl"
    data.write_text("".join(json.dumps({"ks": r["ks"], "e": r["e"], "d": r["d"], "r": r["r"],
                                        "ms": r["latency_ms"]["titan_rtx_64"]}) + "\n" for r in rows))
    out = tmp_path / "reg"
    assert main(["fit-latency", str(data), "--out", str(out), "--model", "ridge"]) == 0
    text = capsys.readouterr().out
    assert "held-out (50 subnets): n=50  Spearman=" in text
    arch = ArchConfig(rows[0]["ks"], rows[0]["e"], rows[0]["d"], rows[0]["r"])
    assert main(["predict", str(_arch_file(tmp_path, arch)), "--predictor", str(out)]) == 0
    ms = float(capsys.readouterr().out.split()[0])
    assert abs(ms / rows[0]["latency_ms"]["titan_rtx_64"] - 1) < 0.15
    assert main(["predict", str(tmp_path / "arch.json"), "--predictor", str(out), "--profile", "note10"]) == 2
    assert "leave the profile out" in capsys.readouterr().err
    assert main(["fit-latency", str(data), "--out", str(out), "--model", "svm"]) == 2
    assert "model: expected one of" in capsys.readouterr().err


def test_fit_few_shot_cli(tmp_path, capsys):
    """10 subnets of a GPU config (HELP) + this CPU's shipped LUT as the reference, saved and used by predict."""
    from ofakit.predictors.registry import create_predictor
    from ofakit.predictors.metrics import latency_metrics
    from ofakit.predictors.regressors import load_measured

    rows = [json.loads(line) for line in HELP.read_text().splitlines()[:400]]
    data = tmp_path / "ten.jsonl"
    data.write_text("".join(json.dumps({"ks": r["ks"], "e": r["e"], "d": r["d"], "r": r["r"],
                                        "ms": r["latency_ms"]["v100_64"]}) + "\n" for r in rows[:10]))
    out = tmp_path / "fs"
    assert main(["fit-few-shot", str(data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model: log ms ~" in text and "cpu-onnxruntime-1t" in text
    rest = tmp_path / "rest.jsonl"
    rest.write_text("".join(json.dumps({"ks": r["ks"], "e": r["e"], "d": r["d"], "r": r["r"],
                                        "ms": r["latency_ms"]["v100_64"]}) + "\n" for r in rows[10:]))
    b, ms = load_measured(rest)
    m = latency_metrics(ms, create_predictor(str(out)).predict(b))
    assert m.spearman > 0.9, m  # batch-64 GPU latency tracks compute, which the CPU LUT also tracks
    assert main(["fit-few-shot", str(data), "--out", str(out), "--reference", "nope"]) == 2
    assert "no device profile 'nope'" in capsys.readouterr().err
