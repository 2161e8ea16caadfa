"""Few-shot latency adaptation: real GPU measurements (HELP) as references and targets, the robust fit and the
nested leave-one-out it selects with, persistence with embedded LUT references, errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ofakit.device_profiles.ofa_yaml import import_ofa
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import ArchBatch, sample_batch, space_for_width
from ofakit.predictors.registry import create_predictor
from ofakit.predictors.fewshot import (FewShotPredictor, TableReference, _huber_fit, _loo_error, _nested_loo_error,
                                fit_few_shot)
from ofakit.predictors.lut import LUTPredictor
from ofakit.predictors.persist import META_FILE
from ofakit.predictors.metrics import latency_metrics

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HELP = SHARED / "data" / "help_ofa_gpu_latency" / "ofa_subnets_gpu_latency.jsonl"
NOTE10 = SHARED / "data" / "ofa_note10_lut"


@pytest.fixture(scope="module")
def help_data():
    rows = [json.loads(line) for line in HELP.read_text().splitlines()[:2000]]
    b = ArchBatch(np.array([r["ks"] for r in rows]), np.array([r["e"] for r in rows]),
                  np.array([r["d"] for r in rows]), np.array([r["r"] for r in rows]))
    configs = list(rows[0]["latency_ms"])
    return b, {c: np.array([r["latency_ms"][c] for r in rows]) for c in configs}


@pytest.fixture(scope="module")
def note10():
    return import_ofa(NOTE10, "note10", 1.2)


def _split(n: int, seed: int = 0, k: int = 10):
    idx = np.random.default_rng(seed).choice(n, k, replace=False)
    return idx, np.setdiff1d(np.arange(n), idx)


@pytest.mark.parametrize("target, min_rho, min_within", [("v100_64", 0.98, 0.9), ("titan_rtx_1", 0.75, 0.6)])
def test_ten_samples_predict_a_left_out_gpu(help_data, target, min_rho, min_within):
    b, lat = help_data
    refs = {c: TableReference(b, ms, c) for c, ms in lat.items() if c != target}
    train, test = _split(len(b))
    model = FewShotPredictor(references=refs, basis=b).fit(b[train], lat[target][train])
    m = latency_metrics(lat[target][test], model.predict(b[test]))
    assert m.spearman > min_rho and m.within10 > min_within, (m, model.description)
    assert model.n_train_ == 10 and model.description


def test_without_references_falls_back_to_arch_features(help_data):
    b, lat = help_data
    train, test = _split(len(b), seed=1)
    model = FewShotPredictor().fit(b[train], lat["v100_1"][train])
    assert all(not c.refs and not c.pcs for c in model.candidates_)
    assert latency_metrics(lat["v100_1"][test], model.predict(b[test])).spearman > 0.7  # launch-bound: kernels


def test_huber_fit_ignores_one_slow_measurement():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 1))
    y = 0.5 + 2.0 * x[:, 0] + rng.normal(scale=0.01, size=10)
    y[4] += np.log(1.5)  # one measurement 50% slow
    beta = _huber_fit(x, y, delta=0.05, ridge=0.0)
    assert beta == pytest.approx([2.0, 0.5], abs=0.03)
    ls = np.linalg.lstsq(np.column_stack([x, np.ones(10)]), y, rcond=None)[0]
    assert abs(ls[1] - 0.5) > abs(beta[1] - 0.5)


def test_nested_loo_matches_explicit_loops():
    rng = np.random.default_rng(1)
    y = rng.normal(size=8)
    designs = [rng.normal(size=(8, 1)), rng.normal(size=(8, 2)), np.column_stack([y + rng.normal(0, .1, 8)])]
    args = (0.05, 1e-3, 0.15)
    errs = []
    for i in range(8):
        keep = np.arange(8) != i
        inner = [_loo_error(x[keep], y[keep], *args) for x in designs]
        x = designs[int(np.argmin(inner))]
        beta = _huber_fit(x[keep], y[keep], 0.05, 1e-3)
        errs.append(min(abs(np.append(x[i], 1.0) @ beta - y[i]), 0.15) ** 2)
    assert _nested_loo_error(designs, y, *args) == pytest.approx(np.mean(errs), rel=1e-4)
    assert _nested_loo_error(designs[:1], y, *args) == pytest.approx(_loo_error(designs[0], y, *args))


def test_table_reference_lookup(help_data):
    b, lat = help_data
    ref = TableReference(b, lat["v100_1"], "v100_1")
    perm = np.random.default_rng(0).permutation(len(b))[:50]
    np.testing.assert_array_equal(ref.predict(b[perm]), lat["v100_1"][perm])
    with pytest.raises(UserError, match="no measurement"):
        ref.predict(sample_batch(np.random.default_rng(9), 2))


@pytest.fixture(scope="module")
def lut_model(note10):
    """A width-1.2 target derived from the Note10 LUT (documented synthetic: 1.3x slower plus 0.05 ms per
    kernel launch), with the Note10 LUT as the only reference: tests persistence, not accuracy."""
    from ofakit.predictors.features import ARCH_FEATURES, arch_features

    b = sample_batch(np.random.default_rng(2), 10, space_for_width(1.2), resolutions=range(160, 225, 8))
    kernels = arch_features(b)[:, ARCH_FEATURES.index("n_kernels")]
    ms = 1.3 * note10.table().evaluate(b) + 0.05 * kernels
    return FewShotPredictor(references={"note10": LUTPredictor(note10)}, n_basis=300).fit(b, ms), b


def test_save_load_round_trip_and_tamper(lut_model, tmp_path):
    model, b = lut_model
    folder = model.save(tmp_path / "fs")
    loaded = create_predictor(str(folder))
    test = sample_batch(np.random.default_rng(3), 50, space_for_width(1.2), resolutions=range(160, 225, 4))
    np.testing.assert_allclose(loaded.predict(test), model.predict(test), rtol=1e-12)
    assert loaded.description == model.description
    meta = folder / META_FILE
    body = json.loads(meta.read_text())
    body["meta"]["coefs"][0][0] *= 2
    meta.write_text(json.dumps(body))
    with pytest.raises(UserError, match="checksum mismatch"):
        FewShotPredictor.load(folder)
    body["version"] = 7
    meta.write_text(json.dumps(body))
    with pytest.raises(UserError, match="format version 7"):
        FewShotPredictor.load(folder)


def test_table_references_cannot_be_saved(help_data, tmp_path):
    b, lat = help_data
    train, _ = _split(len(b))
    model = FewShotPredictor(references={"v100_64": TableReference(b, lat["v100_64"])}, basis=b).fit(
        b[train], lat["titan_rtx_64"][train])
    with pytest.raises(UserError, match="only LUT references can be saved"):
        model.save(tmp_path / "x")


def test_fit_few_shot_from_profiles(note10, lut_model, tmp_path, monkeypatch):
    model, b = lut_model
    note10.save(tmp_path / "note10")
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(tmp_path))
    ms = model.predict(b)
    fitted = fit_few_shot(b, ms, references=["note10"], n_basis=300)
    assert fitted.reference_names_ == ("note10",)
    assert fitted.predict(b) == pytest.approx(ms, rel=0.05)
    auto = fit_few_shot(b, ms, n_basis=300)  # every known profile that covers these subnets
    assert auto.reference_names_ == ("note10",)
    b10 = sample_batch(np.random.default_rng(0), 10, space_for_width(1.0), resolutions=[160])
    with pytest.raises(UserError, match="is for width 1.2"):
        fit_few_shot(b10, np.ones(10), references=["note10"])
    assert "note10" not in fit_few_shot(b10, np.linspace(1, 2, 10)).reference_names_  # width 1.2 only


def test_bad_input(help_data):
    b, lat = help_data
    y = lat["v100_1"]
    with pytest.raises(UserError, match="at least 4"):
        FewShotPredictor().fit(b[:3], y[:3])
    with pytest.raises(UserError, match="positive"):
        FewShotPredictor().fit(b[:10], -y[:10])
    with pytest.raises(UserError, match="latencies for"):
        FewShotPredictor().fit(b[:10], y[:9])
    with pytest.raises(UserError, match="not fitted"):
        FewShotPredictor().predict(b[:2])
    with pytest.raises(UserError, match="width"):
        FewShotPredictor().fit(b[:10], y[:10]).predict(
            sample_batch(np.random.default_rng(0), 2, space_for_width(1.2), resolutions=[160]))
