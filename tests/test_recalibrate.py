"""`ofakit profile recalibrate`: a small real profile of this CPU, its calibration subnets re-measured now, the
device-state factor stored in profile.json and applied by the calibrated predictor (predict, search, validate);
one-line refusals; profile.json written atomically and read back with and without the field."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ofakit.device_profiles import OpStats, Profile, ProfileError, ProfileMeta, load_profile
from ofakit.ofa_core.ops import enumerate_ops
from ofakit.ofa_core.space import ArchConfig, sample_batch, space_for_width
from ofakit.predictors.lut import CalibratedLUTPredictor, anchor_archs, state_factor

FAST = ["--min-time", "0.003", "--rounds", "2", "--extra-rounds", "0"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """A real profile of this CPU at one resolution with 4 calibration subnets (measured once per module)."""
    from ofakit.cli import main

    folder = tmp_path_factory.mktemp("measured")
    mp = pytest.MonkeyPatch()
    mp.setenv("OFAKIT_CACHE_DIR", str(cache))
    try:
        code = main(["profile", "cpu", "-r", "128", *FAST, "--calibration-subnets", "4", "--out",
                     str(folder / "p"), "--work", str(folder / "work"), "--name", "small"])
    finally:
        mp.undo()
    assert code == 0
    return folder / "p"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_recalibrate_stores_the_factor_and_predictions_scale_by_it(measured: Path, tmp_path: Path, cli) -> None:
    folder = _copy(measured, tmp_path / "p")
    lut_before = (folder / "lut.csv").read_bytes()
    work = tmp_path / "work"
    r = cli("profile", "recalibrate", str(folder), "--anchors", "3", "--rounds", "2", "--work", str(work))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "state factor" in r.stdout and " s -> " in r.stdout
    prof = load_profile(folder)
    cal = prof.meta.calibration
    st = cal["state"]
    assert st["n"] == 3 and st["rounds"] == 2 and len(st["anchor_ms"]) == 3 and st["date"]
    assert [ArchConfig.from_json(a) for a in st["anchor_archs"]] == anchor_archs(prof, 3)
    then = dict(zip(cal["fit_archs"], cal["fit_measured_ms"]))
    assert st["factor"] == pytest.approx(state_factor([then[a] for a in st["anchor_archs"]], st["anchor_ms"]))
    assert 0.5 < st["factor"] < 2.0  # the same machine minutes later: a real, modest ratio
    assert (folder / "lut.csv").read_bytes() == lut_before  # profile.json only
    stamp = "".join(c for c in prof.meta.created if c.isalnum())[:15]
    assert not (work / f"recalibrate-{stamp}.jsonl").exists()  # the finished journal is put aside, not resumed
    assert len(list(work.glob(f"recalibrate-{stamp}-*.jsonl"))) == 1

    batch = sample_batch(np.random.default_rng(1), 50, resolutions=[128])
    with_state = CalibratedLUTPredictor(prof).predict(batch)
    without = CalibratedLUTPredictor(prof, state=False).predict(batch)
    assert with_state / without == pytest.approx(np.full(50, st["factor"]), rel=1e-12)
    assert CalibratedLUTPredictor(prof).state_factor_ == st["factor"]
    assert CalibratedLUTPredictor(prof, state=False).state_factor_ == 1.0

    # `ofakit predict` and the search's latency constraint go through the stored factor
    from ofakit.predictors.constraints import latency_constraint

    arch = batch.to_configs()[0]
    (tmp_path / "a.json").write_text(json.dumps(arch.to_ofa_dict()))
    r = cli("predict", str(tmp_path / "a.json"), "-p", str(folder), "--predictor", "calibrated")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(f"{with_state[0]:.3f} ms  (profile small (")
    assert r.stdout.strip().endswith("predictor calibrated)")
    constraint, _ = latency_constraint(str(folder), 100.0)
    assert constraint.table.evaluate(batch) == pytest.approx(with_state, rel=1e-12)

    # validate: "corrected" is the profile as stored, "state-adjusted" = calibration x the factor measured now
    out = tmp_path / "val"
    r = cli("validate", str(folder), "--n", "2", "--seed", "4", "--rounds", "2", "--anchors", "3",
            "--work", str(work), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"stored state factor {st['factor']:.3f} (3 anchors, {st['date']})" in r.stdout
    now = float(r.stdout.split("\nstate factor ")[1].split(":")[0])
    rows = list(csv.DictReader(open(out / "validation.csv")))
    archs = [ArchConfig.from_ofa_dict(json.loads(row["arch"])) for row in rows]
    base = CalibratedLUTPredictor(prof, state=False).predict(archs)
    assert [float(row["corrected_ms"]) for row in rows] == pytest.approx(base * st["factor"], rel=1e-5)
    assert [float(row["adjusted_ms"]) for row in rows] == pytest.approx(base * now, rel=2e-3)

    r = cli("profile", "recalibrate", str(folder), "--anchors", "3", "--rounds", "2", "--work", str(work))
    assert r.returncode == 0, r.stderr
    assert f"(was {st['factor']:.3f} from {st['date']})" in r.stdout


def _synthetic(tmp_path: Path, **meta: object) -> Path:
    """A saved profile with a calibration whose subnets were 'measured' (errors are raised before measuring)."""
    rows = [OpStats(key=k, ms=0.05) for k in enumerate_ops(space_for_width(1.0), [128])]
    archs = sample_batch(np.random.default_rng(3), 5, resolutions=[128]).to_configs()
    cal = {"model": "linear-per-op-v1", "features": ["lut_ms"], "coef": [1.0], "intercept": 0.0, "n_fit": 5,
           "fit_archs": [a.to_json() for a in archs], "fit_measured_ms": [3.0, 3.5, 4.0, 4.5, 5.0]}
    kw = {"name": "syn", "device": "cpu", "backend": "onnxruntime", "threads": 1, "resolutions": [128],
          "calibration": cal, **meta}
    return Profile(ProfileMeta(**kw), rows).save(tmp_path / str(kw["name"]))


def test_recalibrate_refuses_in_one_line(tmp_path: Path, cli) -> None:
    cases = {
        str(_synthetic(tmp_path, name="nocal", calibration={})): "stores no calibration subnets",
        str(_synthetic(tmp_path, name="imported", source="ofa-import:x")): "not measured by ofakit",
        str(_synthetic(tmp_path, name="othercpu", environment={"cpu_model": "Acme Turbo 9000"})): "Acme Turbo 9000",
        str(tmp_path / "missing"): "no device profile",
    }
    for target, msg in cases.items():
        r = cli("profile", "recalibrate", target)
        assert r.returncode == 2, (target, r.stdout)
        assert len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr, (target, r.stderr)
    ok = str(_synthetic(tmp_path))
    for n in ("2", "6"):
        r = cli("profile", "recalibrate", ok, "--anchors", n)
        assert r.returncode == 2 and "--anchors: must lie in 3..5" in r.stderr, r.stderr
    r = cli("profile", "recalibrate", ok, "--rounds", "0")
    assert r.returncode == 2 and "--rounds" in r.stderr
    assert "state" not in load_profile(ok).meta.calibration  # nothing stored by a refused run


def test_profile_json_round_trip_with_and_without_a_state(tmp_path: Path) -> None:
    folder = _synthetic(tmp_path)
    raw = json.loads((folder / "profile.json").read_text())
    assert "state" not in raw["calibration"]  # an older file: no factor, predictions as fitted
    prof = load_profile(folder)
    batch = sample_batch(np.random.default_rng(2), 20, resolutions=[128])
    base = CalibratedLUTPredictor(prof).predict(batch)
    assert CalibratedLUTPredictor(prof).state_factor_ == 1.0
    assert base == pytest.approx(CalibratedLUTPredictor(prof, state=False).predict(batch), rel=0)

    prof.meta.calibration["state"] = {"factor": 1.25, "date": "2026-11-26T04:00:00+00:00", "n": 3}
    prof.save_meta()
    back = load_profile(folder)
    assert back.meta.calibration["state"]["factor"] == 1.25
    assert CalibratedLUTPredictor(back).predict(batch) == pytest.approx(base * 1.25, rel=1e-12)
    # a fresh fit is relative to its own measurements: no stored factor applies, and none is written back
    fit = CalibratedLUTPredictor(back, ("lut_ms",)).fit(batch[:5], base[:5])
    assert fit.state_factor_ == 1.0 and "state" not in fit.to_calibration()

    back.meta.calibration["state"] = {"factor": "fast", "date": "x"}
    with pytest.raises(ProfileError, match="calibration.state.factor"):  # never written...
        back.save_meta()
    raw = json.loads((folder / "profile.json").read_text())
    raw["calibration"]["state"]["factor"] = "fast"
    (folder / "profile.json").write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match=r"profile\.json: calibration\.state\.factor"):  # ...nor read
        load_profile(folder)
    with pytest.raises(ProfileError, match="no folder"):
        Profile(ProfileMeta(name="nowhere")).save_meta()
