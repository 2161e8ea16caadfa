"""OFA's Note10 LUT and accuracy predictor ship with ofakit: OFA's tutorial search runs with no other file."""
from __future__ import annotations

import json

import numpy as np

from ofakit.device_profiles import load_profile, store
from ofakit.ofa_core.space import sample_batch, space_for_width
from ofakit.predictors.accuracy import AccuracyMLP, load_accuracy_predictor


def test_note10_and_ofa_predictor_are_shipped():
    prof = load_profile("note10")
    assert store.is_shipped(prof.path) and prof.meta.width == 1.2 and len(prof) == 1632
    acc = load_accuracy_predictor("ofa")
    assert acc.width_ == 1.2
    batch = sample_batch(np.random.default_rng(0), 200, space_for_width(1.2))
    top1 = acc.predict(batch)
    assert np.all((top1 > 0.7) & (top1 < 0.85))  # OFA's ImageNet predictor: top-1 of its subnets


def test_ofa_tutorial_search_on_a_fresh_home(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.chdir(tmp_path)
    r = cli("search", "--profile", "note10", "--latency", "25", "--accuracy-predictor", "ofa", "--seed", "1",
            "--out", "best.json")
    assert r.returncode == 0, r.stderr
    arch = json.loads((tmp_path / "best.json").read_text())
    assert arch["width"] == 1.2
    assert "latency[note10] from: profile" in r.stdout and "predictor lut" in r.stdout
    assert "top-1 from: accuracy predictor ofa" in r.stdout


def test_width_mismatch_of_profile_and_predictor_is_refused(cli, tmp_path):
    r = cli("search", "--profile", "cpu-onnxruntime-1t", "--latency", "12", "--accuracy-predictor", "ofa")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--accuracy-predictor" in r.stderr and "width-1.2" in r.stderr
    assert "profile 'cpu-onnxruntime-1t' describes width 1" in r.stderr


def test_fitted_mlp_knows_its_width(tmp_path):
    batch = sample_batch(np.random.default_rng(0), 40, space_for_width(1.0))
    acc = np.linspace(0.6, 0.8, 40)
    model = AccuracyMLP(hidden=(8,), epochs=2, random_state=0).fit(batch, acc)
    assert model.width_ == 1.0
    assert AccuracyMLP.load(model.save(tmp_path / "m")).width_ == 1.0


def test_no_shipped_profile_was_measured_under_emulation():
    """An emulated board's timings are not a device's: such a profile is never shipped as hardware."""
    shipped = [load_profile(str(p.parent)) for p in store.SHIPPED_DIR.glob("*/profile.json")]
    assert {p.name for p in shipped} >= {"cpu-onnxruntime-1t", "note10"}
    assert [p.name for p in shipped if (p.meta.environment or {}).get("emulated")] == []
