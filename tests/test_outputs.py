"""Outputs appear whole or not at all, and a bad ``--out`` is refused before any work, naming the path given."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ofakit.device_profiles import SHIPPED_DIR, load_profile
from ofakit.device_profiles.ofa_yaml import export_ofa
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.fileio import check_out, staged_folder
from ofakit.ofa_core.space import sample_arch, space_for_width


def test_staged_folder_whole_or_nothing(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_folder(dest) as tmp:
            (tmp / "a.txt").write_text("a")
            raise RuntimeError("disk full halfway")
    assert not dest.exists() and list(tmp_path.iterdir()) == []  # no temp folder left either
    with staged_folder(dest) as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt"]
    (dest / "mine.txt").write_text("user's own file")
    with staged_folder(dest, last="b.txt") as tmp:
        (tmp / "a.txt").write_text("A")
        (tmp / "b.txt").write_text("B")
    assert {p.name: p.read_text() for p in dest.iterdir()} == {"a.txt": "A", "b.txt": "B",
                                                               "mine.txt": "user's own file"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("given, kind, words", [
    ("", "folder", "name a folder"),
    (".", "file", "name a file"),
    ("{file}/sub/x.json", "file", "is a file, not a folder"),
    ("{file}", "folder", "is a file, not a folder"),
    ("{dir}", "file", "is a folder, not a file"),
    ("{dir}/" + "n" * 300, "folder", "longer than"),
])
def test_check_out_refuses_naming_the_path(tmp_path, given, kind, words):
    (tmp_path / "f.txt").write_text("x")
    path = given.format(file=tmp_path / "f.txt", dir=tmp_path)
    with pytest.raises(UserError) as info:
        check_out(path, kind)
    msg = str(info.value)
    assert words in msg and (f"--out {path!r}:" in msg or f"--out {path}:" in msg), msg
    check_out(tmp_path / "new" / "x.json", "file")  # fine: folders are made
    check_out(None, "file")


def test_search_refuses_bad_out_before_searching(cli, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    bad = tmp_path / "f.txt" / "best.json"
    r = cli("search", "-a", "mlp:/nonexistent", "--latency", "10", "--out", str(bad))
    assert r.returncode == 2 and str(bad) in r.stderr and "is a file, not a folder" in r.stderr
    assert "nonexistent" not in r.stderr  # refused before the predictor was even loaded


def test_export_ofa_writes_all_tables_or_none(tmp_path):
    prof = load_profile(SHIPPED_DIR / "cpu-onnxruntime-1t")
    prof.meta.resolutions = [*prof.meta.resolutions, 1000]  # the last table cannot be built: no such rows
    with pytest.raises(UserError):
        export_ofa(prof, tmp_path / "tables")
    assert list(tmp_path.iterdir()) == []


def test_cli_os_error_is_one_line_naming_the_file(cli, tmp_path):
    r = cli("predict", str(tmp_path))  # a folder where an arch file is expected
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(tmp_path) in r.stderr


def test_prediction_never_prints_a_negative_latency(cli, tmp_path):
    """A calibration that passes the schema yet predicts <= 0 for a subnet is an error naming the profile."""
    import shutil
    prof = tmp_path / "p"
    shutil.copytree(SHIPPED_DIR / "cpu-onnxruntime-1t", prof)
    meta = json.loads((prof / "profile.json").read_text())
    meta["calibration"]["intercept"] = -1e6
    (prof / "profile.json").write_text(json.dumps(meta))
    arch = tmp_path / "a.json"
    arch.write_text(sample_arch(np.random.default_rng(0), space_for_width(1.0), resolutions=[160]).to_json())
    r = cli("predict", str(arch), "--profile", str(prof), "--predictor", "calibrated")
    assert r.returncode == 2 and str(prof) in r.stderr and " ms" not in r.stdout
    meta["calibration"]["coef"][0] = -1.0
    (prof / "profile.json").write_text(json.dumps(meta))
    r = cli("predict", str(arch), "--profile", str(prof), "--predictor", "calibrated")
    assert r.returncode == 2 and "lut_ms coefficient must be > 0" in r.stderr and str(prof) in r.stderr


def test_export_check_fails_on_nan_output(tmp_path):
    """`export --check` compares with max_abs_diff: a NaN output is an infinite difference, never within tolerance."""
    import torch
    from torch import nn

    from ofakit.ofa_core.export import export_onnx, max_abs_diff
    model = nn.Sequential(nn.Conv2d(3, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    x = torch.randn(1, 3, 8, 8)
    path = export_onnx(model, x, tmp_path / "nan.onnx")
    assert max_abs_diff(path, model, x) == float("inf")
