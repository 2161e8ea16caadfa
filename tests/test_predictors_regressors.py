"""Learned latency regressors: fit on real measured latencies (HELP GPU data), compiled models equal sklearn's,
JSON persistence round trip without pickle, rejected tampered/other-version files, profile features, the
shared predictor factory and the measured-data reader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ofakit.device_profiles.ofa_yaml import import_ofa
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import ArchBatch, sample_batch, space_for_width
from ofakit.predictors.registry import create_predictor
from ofakit.predictors.features import ARCH_FEATURES, PROFILE_FEATURES, arch_features, latency_features
from ofakit.predictors.persist import META_FILE
from ofakit.predictors.metrics import latency_metrics
from ofakit.predictors.regressors import LatencyRegressor, load_measured

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HELP = SHARED / "data" / "help_ofa_gpu_latency" / "ofa_subnets_gpu_latency.jsonl"
NOTE10 = SHARED / "data" / "ofa_note10_lut"


@pytest.fixture(scope="module")
def help_data():
    rows = [json.loads(line) for line in HELP.read_text().splitlines()[:1200]]
    b = ArchBatch(np.array([r["ks"] for r in rows]), np.array([r["e"] for r in rows]),
                  np.array([r["d"] for r in rows]), np.array([r["r"] for r in rows]))
    return b, np.array([r["latency_ms"]["v100_64"] for r in rows])


@pytest.fixture(scope="module")
def note10():
    return import_ofa(NOTE10, "note10", 1.2)


def test_arch_features_match_per_subnet_sums():
    from ofakit.ofa_core.ops import subnet_macs, subnet_params

    b = sample_batch(np.random.default_rng(0), 5)
    x = arch_features(b)
    for i, cfg in enumerate(b.to_configs()):
        assert x[i, ARCH_FEATURES.index("macs_m")] == pytest.approx(subnet_macs(cfg) / 1e6)
        assert x[i, ARCH_FEATURES.index("params_m")] == pytest.approx(subnet_params(cfg) / 1e6)
        assert x[i, ARCH_FEATURES.index("n_blocks")] == sum(cfg.d)
        assert x[i, ARCH_FEATURES.index("resolution")] == cfg.r
    assert np.allclose(x[:, [ARCH_FEATURES.index(f"macs_m_{s}") for s in range(5)]].sum(1) <
                       x[:, ARCH_FEATURES.index("macs_m")], True)


@pytest.mark.parametrize("model", ["ridge", "gbr", "rf"])
def test_regressors_on_measured_gpu_latency(help_data, model, tmp_path):
    b, ms = help_data
    train, test = np.arange(300), np.arange(300, 1200)
    reg = LatencyRegressor(model=model, n_estimators=60)
    assert reg.fit(b[train], ms[train]) is reg
    pred = reg.predict(b[test])
    m = latency_metrics(ms[test], pred)
    assert m.spearman > 0.97 and m.within10 > 0.85, m  # v100 batch 64 is compute-bound: FLOPs explain it
    # the compiled arrays predict exactly what sklearn's fitted model predicts
    x, _ = latency_features(b[test])
    target = reg.estimator_.predict((x - reg.compiled_.mean) / reg.compiled_.scale if model == "ridge" else x)
    np.testing.assert_allclose(reg.compiled_.predict(x), target, rtol=1e-10, atol=1e-12)
    # JSON round trip
    folder = reg.save(tmp_path / model)
    loaded = LatencyRegressor.load(folder)
    np.testing.assert_array_equal(loaded.predict(b[test]), pred)
    assert loaded.get_params() == reg.get_params()
    assert b"pickle" not in (folder / "model.json").read_bytes()


def test_regressor_with_profile_learns_a_lut_correction(note10, tmp_path):
    """Targets built from the Note10 LUT with a known parameter-dependent slowdown: the ratio model recovers it."""
    spec = space_for_width(1.2)
    b = sample_batch(np.random.default_rng(1), 400, spec, resolutions=range(160, 225, 4))
    lut = note10.table().evaluate(b)
    params = arch_features(b)[:, ARCH_FEATURES.index("params_m")]
    ms = lut * (1.0 + 0.02 * params) * np.random.default_rng(2).lognormal(0, 0.01, len(b))
    reg = LatencyRegressor(model="ridge", profile=note10, alpha=1e-3).fit(b[:100], ms[:100])
    assert reg.feature_names_ == PROFILE_FEATURES + ARCH_FEATURES
    m = latency_metrics(ms[100:], reg.predict(b[100:]))
    raw = latency_metrics(ms[100:], lut[100:])
    assert m.within10 > 0.99 and raw.within10 < 0.5, (m, raw)
    loaded = create_predictor(str(reg.save(tmp_path / "corr")))
    np.testing.assert_allclose(loaded.predict(b), reg.predict(b), rtol=1e-12)
    with pytest.raises(UserError, match="width"):
        reg.predict(sample_batch(np.random.default_rng(0), 2, space_for_width(1.0), resolutions=[160]))


def test_regressor_rejects_tampered_and_other_version(help_data, tmp_path):
    b, ms = help_data
    folder = LatencyRegressor(model="gbr", n_estimators=5).fit(b[:100], ms[:100]).save(tmp_path / "g")
    meta = folder / META_FILE
    good = meta.read_text()
    body = json.loads(good)
    body["version"] = 0
    meta.write_text(json.dumps(body))
    with pytest.raises(UserError, match="format version 0"):
        LatencyRegressor.load(folder)
    body = json.loads(good)
    body["meta"]["feature_names"][0] = "flops"
    meta.write_text(json.dumps(body))
    with pytest.raises(UserError, match="checksum mismatch"):
        LatencyRegressor.load(folder)
    meta.write_text(good)
    model = json.loads((folder / "model.json").read_text())
    model["compiled"]["trees"][0]["left"][0] = 0  # a cycle
    (folder / "model.json").write_text(json.dumps(model))
    with pytest.raises(UserError, match="model.json: checksum mismatch"):
        LatencyRegressor.load(folder)
    with pytest.raises(UserError, match="holds a 'latency-regressor' predictor"):
        from ofakit.predictors.accuracy import AccuracyMLP
        AccuracyMLP.load(folder)


def test_regressor_bad_input(help_data):
    b, ms = help_data
    with pytest.raises(UserError, match="model: expected one of"):
        LatencyRegressor(model="svm").fit(b[:10], ms[:10])
    with pytest.raises(UserError, match="positive"):
        LatencyRegressor().fit(b[:10], -ms[:10])
    with pytest.raises(UserError, match="latencies for"):
        LatencyRegressor().fit(b[:10], ms[:9])
    with pytest.raises(UserError, match="not fitted"):
        LatencyRegressor().predict(b[:2])
    with pytest.raises(UserError, match="no device profile"):
        LatencyRegressor(profile="no-such-device").fit(b[:10], ms[:10])


def test_make_latency_predictor_errors(note10):
    with pytest.raises(UserError, match="neither a known name"):
        create_predictor("magic", note10)
    with pytest.raises(UserError, match="needs a device profile"):
        create_predictor("lut", None)
    with pytest.raises(UserError, match="no saved predictor"):
        create_predictor("/nonexistent/folder")
    lut = create_predictor("lut", note10)
    b = sample_batch(np.random.default_rng(0), 3, space_for_width(1.2), resolutions=[224])
    np.testing.assert_allclose(lut.predict(b), note10.table().evaluate(b))


def test_load_measured_csv_and_jsonl(help_data, tmp_path):
    b, ms = help_data
    cfgs = b[:3].to_configs()
    csv_path = tmp_path / "m.csv"
    lines = ["ks,e,d,r,width,ms"] + [f'"{list(c.ks)}","{list(c.e)}","{list(c.d)}",{c.r},1.0,{v}'
                                      for c, v in zip(cfgs, ms[:3])]
    csv_path.write_text("\n".join(lines) + "\n")
    got_b, got_ms = load_measured(csv_path)
    assert got_b.to_configs() == cfgs and np.allclose(got_ms, ms[:3])
    # the layout `ofakit validate` writes: arch dict as JSON in one column, measured_ms beside other columns
    val = tmp_path / "validation.csv"
    val.write_text("arch,resolution,measured_ms,raw_ms\n" + "".join(
        '"{}",{},{},1.0\n'.format(json.dumps(c.to_ofa_dict()).replace('"', '""'), c.r, v)
        for c, v in zip(cfgs, ms[:3])))
    got_b, got_ms = load_measured(val)
    assert got_b.to_configs() == cfgs and np.allclose(got_ms, ms[:3])
    jl = tmp_path / "m.jsonl"
    jl.write_text("\n".join(json.dumps(dict(c.to_ofa_dict(), measured_ms=v)) for c, v in zip(cfgs, ms[:3])))
    assert np.allclose(load_measured(jl)[1], ms[:3])
    jl.write_text(json.dumps(cfgs[0].to_ofa_dict()) + "\n")
    with pytest.raises(UserError, match=r"m.jsonl:1: no latency"):
        load_measured(jl)
    csv_path.write_text(lines[0] + "\n" + lines[1].replace(",1.0,", ",1.0,-3"))
    with pytest.raises(UserError, match=r"m.csv:2: ms: expected a positive latency"):
        load_measured(csv_path)


def test_metrics_definition():
    m = latency_metrics(np.array([1.0, 2.0, 4.0, 8.0]), np.array([1.05, 2.5, 4.0, 7.0]))
    assert m.within10 == pytest.approx(0.5) and m.within5 == pytest.approx(0.25) and m.n == 4  # 1.05 / 1 is just over 5%
    assert m.mape == pytest.approx((0.05 + 0.25 + 0 + 0.125) / 4)
    assert m.spearman == pytest.approx(stats.spearmanr([1, 2, 4, 8], [1.05, 2.5, 4, 7]).statistic)
