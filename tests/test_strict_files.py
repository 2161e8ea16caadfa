"""The damaged files found by hand, one by one: each is refused in one line naming the file (exit code 2 through the
CLI), and the valid spellings next to them are read."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ofakit.device_profiles import SHIPPED_DIR
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import sample_arch, space_for_width
from ofakit.ofa_core.train.config import load_config

SHARED = Path(__file__).resolve().parents[2] / "shared"
NOTE10 = SHARED / "data" / "ofa_note10_lut"
CONFIGS = Path(__file__).resolve().parents[1] / "ofa_core" / "configs"
BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))


def refused(cli, path: Path, *args: str) -> str:
    r = cli(*args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and str(path) in lines[0] and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture
def arch(tmp_path) -> Path:
    p = tmp_path / "arch.json"
    p.write_text(sample_arch(np.random.default_rng(0), space_for_width(1.0), resolutions=[160]).to_json())
    return p


@pytest.fixture
def profile(tmp_path) -> Path:
    p = tmp_path / "prof"
    shutil.copytree(SHIPPED_DIR / "cpu-onnxruntime-1t", p)
    return p


@pytest.mark.parametrize("field, value", [
    ("resolutions", []), ("resolutions", "abc"), ("resolutions", [None]), ("resolutions", [1e13]),
    ("resolutions", [10 ** 13]), ("calibration", "linear"), ("width", True),
])
def test_profile_json_structure(cli, profile, arch, field, value):
    meta = json.loads((profile / "profile.json").read_text())
    meta[field] = value
    (profile / "profile.json").write_text(json.dumps(meta))
    assert field in refused(cli, profile, "predict", str(arch), "--profile", str(profile))


@pytest.mark.parametrize("edit", [
    lambda c: c.update(coef=[float("nan"), 0.2]), lambda c: c.update(intercept=float("inf")),
    lambda c: c.update(state={"factor": float("nan")}), lambda c: c.update(coef=[-1, 0]),
])
def test_calibration_numbers(cli, profile, arch, edit):
    meta = json.loads((profile / "profile.json").read_text())
    edit(meta["calibration"])
    (profile / "profile.json").write_text(json.dumps(meta))  # json.dumps writes NaN / Infinity as given
    refused(cli, profile, "predict", str(arch), "--profile", str(profile), "--predictor", "calibrated")


def test_lut_rows_that_would_sum_to_infinity(cli, profile, arch):
    lines = (profile / "lut.csv").read_text().splitlines()
    cells = lines[1].split(",")
    cells[2] = "1e308"
    lines[1] = ",".join(cells)
    (profile / "lut.csv").write_text("\n".join(lines) + "\n")
    assert "lut.csv:2" in refused(cli, profile, "predict", str(arch), "--profile", str(profile))


def test_deep_json_huge_ints_and_long_csv_fields(cli, profile, arch, tmp_path):
    good = arch.read_text()
    arch.write_text("[" * 100_000 + "]" * 100_000)
    assert "nested" in refused(cli, arch, "predict", str(arch))
    arch.write_text('{"ks": ' + "9" * 5000 + "}")
    assert "too large" in refused(cli, arch, "predict", str(arch))
    arch.write_text(good)  # a valid arch: now the profile is what is damaged
    (profile / "lut.csv").write_text("key,ms\n" + "x" * 200_000 + ",1\n")
    assert "field larger" in refused(cli, profile, "predict", str(arch), "--profile", str(profile))
    (profile / "lut.csv").write_bytes(b"key,ms\n\xff\xfe,1\n")
    assert "not UTF-8" in refused(cli, profile, "predict", str(arch), "--profile", str(profile))


@pytest.mark.skipif(not NOTE10.is_dir(), reason="OFA's Note10 tables are not available")
@pytest.mark.parametrize("mean", [".nan", "-1.0", ".inf", "1e400", "true"])
def test_import_ofa_bad_numbers_missing_entries_and_duplicates(cli, tmp_path, mean):
    src = tmp_path / "tables"
    src.mkdir()
    text = (NOTE10 / "160_lookup_table.yaml").read_text()
    data = yaml.safe_load(text)
    key = sorted(data)[0]
    (src / "160_lookup_table.yaml").write_text(text.replace(f"mean: {data[key]['mean']}", f"mean: {mean}", 1))
    out = tmp_path / "out"
    refused(cli, src, "profile", "import-ofa", str(src), "--name", "n", "--width", "1.2", "--out", str(out))
    assert not out.exists()
    keep = dict(list(data.items())[: len(data) * 3 // 10])  # 70% of the entries missing
    (src / "160_lookup_table.yaml").write_text(yaml.safe_dump(keep))
    assert "missing" in refused(cli, src, "profile", "import-ofa", str(src), "--name", "n", "--width", "1.2",
                                "--out", str(out))
    (src / "160_lookup_table.yaml").write_text(text + f"{key}:\n  count: 1\n  mean: 9.0\n  std: 0.1\n")
    assert "twice" in refused(cli, src, "profile", "import-ofa", str(src), "--name", "n", "--width", "1.2",
                              "--out", str(out))
    assert not out.exists()


@pytest.mark.parametrize("meta_edit, words", [({"y_std": -1.0}, "y_std"), ({"y_mean": 5.0}, "y_mean")])
def test_accuracy_predictor_output_scale(tmp_path, meta_edit, words):
    from ofakit.predictors.accuracy import AccuracyMLP
    from ofakit.predictors.persist import _canonical, _sha256
    archs = [sample_arch(np.random.default_rng(i), space_for_width(1.0), resolutions=[160]) for i in range(20)]
    folder = AccuracyMLP(hidden=(8,), epochs=2, random_state=0).fit(archs, np.linspace(0.6, 0.8, 20)) \
        .save(tmp_path / "mlp")
    body = json.loads((folder / "predictor.json").read_text())
    body["meta"].update(meta_edit)
    body.pop("checksum")
    body["checksum"] = _sha256(_canonical(body))  # re-signed: a checksum is no guard against edits
    (folder / "predictor.json").write_text(json.dumps(body))
    with pytest.raises(UserError, match=words) as info:
        AccuracyMLP.load(folder)
    assert str(folder) in str(info.value)


def test_training_config_numbers_and_alias_bomb(tmp_path):
    base = yaml.safe_load(sorted(CONFIGS.glob("*.yaml"))[0].read_text())
    path = tmp_path / "c.yaml"
    for field in ("lr", "kd_ratio"):
        cfg = json.loads(json.dumps(base))
        cfg["phases"][-1][field] = "INF"
        path.write_text(yaml.safe_dump(cfg).replace("INF", ".inf"))
        with pytest.raises(UserError, match="not a finite number"):
            load_config(path)
    cfg = json.loads(json.dumps(base))
    cfg.setdefault("optim", {})["weight_decay"] = "WD"
    path.write_text(yaml.safe_dump(cfg).replace("WD", "3e-05"))  # JSON-style exponent: a number, not a string
    assert load_config(path).optim.weight_decay == 3e-05
    path.write_text(BOMB)
    t = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_config(path)
    assert time.perf_counter() - t < 1.0 and len(str(info.value)) < 300 and str(path) in str(info.value)


def test_inventory_group_with_unhashable_members(cli, tmp_path):
    inv = tmp_path / "devices.yaml"
    inv.write_text("devices: {a: {host: h}}\ngroups:\n  g: {devices: [[a], {b: 1}]}\n")
    assert "member" in refused(cli, inv, "devices", "list", "--inventory", str(inv))
