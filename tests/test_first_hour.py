"""What a new user meets first: sample, predict on many archs and profiles, clear one-line errors, --version."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ofakit.device_profiles import load_profile
from ofakit.ofa_core.space import ArchConfig
from ofakit.predictors.lut import CalibratedLUTPredictor, LUTPredictor


def test_version(cli):
    from ofakit.ofa_core import __version__

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"ofakit {__version__}"


def test_sample_writes_valid_arch_files(cli, tmp_path):
    assert cli("sample", "--n", "3", "--seed", "1", "--out", str(tmp_path / "d")).returncode == 0
    files = sorted((tmp_path / "d").glob("arch-*.json"))
    assert len(files) == 3
    archs = [ArchConfig.from_json(f.read_text()) for f in files]
    assert len({a.to_json() for a in archs}) == 3 and all(a.width == 1.0 for a in archs)
    assert cli("sample", "--n", "5", "--seed", "1", "--width", "1.2", "--resolutions", "160,224",
               "--out", str(tmp_path / "a.json")).returncode == 0
    doc = json.loads((tmp_path / "a.json").read_text())
    assert len(doc) == 5 and {d["r"] for d in doc} <= {160, 224} and {d["width"] for d in doc} == {1.2}
    # the same seed gives the same subnets
    assert cli("sample", "--n", "3", "--seed", "1", "--out", str(tmp_path / "b.jsonl")).returncode == 0
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [json.loads(f.read_text()) for f in files]


def test_predict_many_archs_many_profiles(cli, tmp_path):
    cli("sample", "--n", "2", "--seed", "4", "--width", "1.2", "--resolutions", "160:224:4",
        "--out", str(tmp_path / "a.json"))
    cli("sample", "--n", "3", "--seed", "5", "--width", "1.2", "--resolutions", "160:224:4",
        "--out", str(tmp_path / "b.jsonl"))
    note10 = load_profile("note10")
    archs = [ArchConfig.from_ofa_dict(d) for d in json.loads((tmp_path / "a.json").read_text())]
    r = cli("predict", str(tmp_path / "a.json"), str(tmp_path / "b.jsonl"), "--profile", "note10", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["columns"][0]["profile"] == "note10" and doc["columns"][0]["predictor"] == "lut"
    assert [row["arch"] for row in doc["rows"]][:3] == [f"{tmp_path / 'a.json'}[0]", f"{tmp_path / 'a.json'}[1]",
                                                        f"{tmp_path / 'b.jsonl'}:1"]
    got = [row["ms"][0] for row in doc["rows"][:2]]
    assert got == pytest.approx(LUTPredictor(note10).predict(archs).tolist())
    # one column per profile, never "the last wins"; each says where its numbers came from
    r = cli("predict", str(tmp_path / "b.jsonl"), "--profile", "note10", "--profile", "note10",
            "--predictor", "lut")
    head, *rows, source = r.stdout.splitlines()
    assert head.split() == ["arch", "note10", "note10"] and len(rows) == 3
    assert source.startswith("ms from: note10 = profile note10")
    # ofakit's own CSVs: a search front
    front = tmp_path / "front.csv"
    assert cli("search", "--profile", "note10", "--sweep", "20:30:10", "--accuracy-predictor", "ofa",
               "--generations", "3", "--out", str(front)).returncode == 0
    r = cli("predict", str(front), "--profile", "note10")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 4


@pytest.mark.parametrize("name,content,msg", [
    ("net.onnx", b"\x08\x07", "a model file; arch files are"),
    ("net.bin", b"\x80\xff\x00", "arch file is not UTF-8 text"),
    ("x.json", b'{"a": 1}', "no arch (ks, e, d, r) here"),
    ("x.csv", b"a,b\n1,2\n", "no arch (ks, e, d, r) here"),
])
def test_predict_refuses_other_files_in_one_line(cli, tmp_path, name, content, msg):
    (tmp_path / name).write_bytes(content)
    r = cli("predict", str(tmp_path / name))
    assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1


def test_resolution_not_a_multiple_of_4(cli, tmp_path):
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 130}))
    r = cli("predict", str(arch))
    assert r.returncode == 2 and "130 is not a multiple of 4" in r.stderr


def test_lut_predictors_refuse_another_width_like_the_cli():
    prof = load_profile("cpu-onnxruntime-1t")
    arch = ArchConfig([3] * 20, [3] * 20, [2] * 5, 160, 1.2)
    for pred in (LUTPredictor(prof), CalibratedLUTPredictor(prof)):
        with pytest.raises(Exception, match=r"describes the width-1.0 supernet, the arch has width 1.2"):
            pred.predict([arch])
    ok = ArchConfig([3] * 20, [3] * 20, [2] * 5, 160, 1.0)
    assert np.isfinite(LUTPredictor(prof).predict([ok])).all()


@pytest.mark.parametrize("argv", [["validate", "note10", "--n", "3"], ["profile", "recalibrate", "note10"]])
def test_imported_profiles_have_nothing_to_measure(cli, argv):
    r = cli(*argv)
    assert r.returncode == 2 and "nothing to measure" in r.stderr and r.stderr.count("\n") == 1


def test_fit_on_too_few_samples_says_so(cli, tmp_path):
    rows = [{"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": r, "ms": 1.0 + r / 100} for r in (160, 176, 192, 208)]
    data = tmp_path / "m.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("fit-latency", str(data), "--out", str(tmp_path / "reg"), "--model", "ridge", "--holdout", "0.25")
    assert r.returncode == 0, r.stderr
    assert "Spearman n/a (too few subnets to rank: 1" in r.stdout and "nan" not in r.stdout


def test_export_ofa_round_trip_predicts_the_same(cli, tmp_path):
    from ofakit.device_profiles.ofa_yaml import import_ofa
    from ofakit.ofa_core.space import sample_batch, space_for_width

    assert cli("profile", "export-ofa", "cpu-onnxruntime-1t", str(tmp_path / "yaml")).returncode == 0
    prof = load_profile("cpu-onnxruntime-1t")
    back = import_ofa(tmp_path / "yaml", "back", 1.0)
    batch = sample_batch(np.random.default_rng(0), 200, space_for_width(1.0))
    assert LUTPredictor(back).predict(batch) == pytest.approx(LUTPredictor(prof).predict(batch), rel=1e-12)
