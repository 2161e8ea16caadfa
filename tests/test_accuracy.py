"""Accuracy predictors: OFA's pretrained MLP checked against an independent computation, our MLP's training,
persistence round trip, rejected tampered/other-version files, clear errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import ArchBatch, ArchConfig, sample_batch
from ofakit.predictors.accuracy import (CHUNK, ENCODINGS, AccuracyMLP, accuracy_metrics, build_mlp, load_accuracy_jsonl,
                                 load_accuracy_predictor)
from ofakit.predictors.persist import META_FILE

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OFA_PTH = SHARED / "data" / "ofa_acc_predictor" / "acc_predictor.pth"

LITERAL_ARCHS = [
    {"ks": [3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5],
     "e": [6, 4, 3, 6, 4, 3, 6, 4, 3, 6, 4, 3, 6, 4, 3, 6, 4, 3, 6, 4], "d": [2, 3, 4, 2, 3], "r": 224},
    {"ks": [7] * 20, "e": [6] * 20, "d": [4, 4, 4, 4, 4], "r": 208},
    {"ks": [3] * 20, "e": [3] * 20, "d": [2, 2, 2, 2, 2], "r": 160},
    {"ks": [5, 3, 3, 7, 7, 5, 3, 3, 5, 5, 7, 3, 3, 3, 7, 5, 7, 7, 5, 3],
     "e": [4, 4, 6, 3, 6, 6, 4, 3, 3, 4, 6, 6, 4, 3, 3, 6, 6, 4, 4, 3], "d": [3, 4, 2, 4, 3], "r": 176},
]


def hand_encode(arch: dict) -> list[float]:
    """OFA's encoding written out literally (per the reference README), one block at a time."""
    ks_part, e_part = [], []
    for stage in range(5):
        for i in range(4):
            blk = stage * 4 + i
            active = i < arch["d"][stage]
            ks_part += [1.0 if active and arch["ks"][blk] == k else 0.0 for k in (3, 5, 7)]
            e_part += [1.0 if active and arch["e"][blk] == e else 0.0 for e in (3, 4, 6)]
    r_part = [0.0] * 8
    r_part[(arch["r"] - 112) // 16] = 1.0
    return ks_part + e_part + r_part


@pytest.fixture(scope="module")
def ofa_predictor():
    return load_accuracy_predictor(f"ofa:{OFA_PTH}")


def test_ofa_predictor_matches_independent_computation(ofa_predictor):
    sd = {k: v.double().numpy() for k, v in torch.load(OFA_PTH, map_location="cpu", weights_only=True).items()}
    x = np.array([hand_encode(a) for a in LITERAL_ARCHS])
    h = x
    for i in (0, 2, 4):
        h = np.maximum(h @ sd[f"{i}.weight"].T + sd[f"{i}.bias"], 0.0)
    expected = (h @ sd["6.weight"].T + sd["6.bias"])[:, 0]
    got = ofa_predictor.predict([ArchConfig.from_ofa_dict(a) for a in LITERAL_ARCHS])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert np.all((expected > 0.6) & (expected < 0.9))  # OFA's subnets are 70-82% top-1 on ImageNet
    # the largest subnet predicts higher than the smallest
    assert got[1] > got[2]


def test_ofa_predictor_batch_equals_single(ofa_predictor):
    b = sample_batch(np.random.default_rng(3), 40_000, resolutions=range(160, 225, 16))
    full = ofa_predictor.predict(b)  # spans several chunks
    some = np.array([0, 1, 32767, 32768, 39_999])
    np.testing.assert_allclose(full[some], ofa_predictor.predict(b[some]), atol=1e-6)


@pytest.mark.parametrize("spec", ["acc.pth", "ofa:", "pth:/x", "mlp:/nonexistent/folder", "ofa:/nonexistent.pth"])
def test_bad_spec_is_one_line_user_error(spec):
    with pytest.raises(UserError) as exc:
        load_accuracy_predictor(spec)
    assert "\n" not in str(exc.value)


def test_ofa_rejects_foreign_files(tmp_path):
    text = tmp_path / "text.pth"
    text.write_text("not torch")
    with pytest.raises(UserError, match="not a loadable torch state dict"):
        load_accuracy_predictor(f"ofa:{text}")
    wrong = tmp_path / "wrong.pth"
    torch.save({"0.weight": torch.zeros(10, 128), "0.bias": torch.zeros(10)}, wrong)
    with pytest.raises(UserError, match="do not match a 128-400-400-400-1 MLP"):
        load_accuracy_predictor(f"ofa:{wrong}")


def test_ofa_rejects_pickled_objects(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"0.weight": AccuracyMLP()}, evil)  # an arbitrary object needs unpickling: refused
    with pytest.raises(UserError, match="not a loadable torch state dict"):
        load_accuracy_predictor(f"ofa:{evil}")


# --- our MLP ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(ofa_predictor):
    """Honest synthetic labels: OFA's pretrained predictor's outputs on random width-1.0 subnets."""
    b = sample_batch(np.random.default_rng(0), 900, resolutions=range(160, 225, 4))
    return b, ofa_predictor.predict(b)


@pytest.fixture(scope="module")
def fitted(synthetic):
    b, y = synthetic
    return AccuracyMLP(hidden=(64, 64), epochs=60, patience=10, lr=2e-3, random_state=1).fit(b, y)


def test_mlp_learns_ranking(fitted, synthetic):
    assert fitted.n_epochs_ >= 10
    assert fitted.validation_.n == 90
    assert fitted.validation_.kendall_tau > 0.6
    assert fitted.validation_.rmse_points < 1.0
    b, y = synthetic
    test = sample_batch(np.random.default_rng(9), 300, resolutions=range(160, 225, 4))
    assert fitted.predict(test).shape == (300,)


def test_mlp_estimator_contract(synthetic):
    est = AccuracyMLP(hidden=(8,), epochs=2)
    assert not hasattr(est, "layers_")
    assert clone(est).get_params() == est.get_params()
    b, y = synthetic
    assert est.fit(b, y) is est
    with pytest.raises(UserError, match="not fitted"):
        AccuracyMLP().predict(b)


def test_mlp_fit_rejects_bad_input(synthetic):
    b, y = synthetic
    with pytest.raises(UserError, match="fraction"):
        AccuracyMLP(epochs=1).fit(b, y * 100)
    with pytest.raises(UserError, match="values for"):
        AccuracyMLP(epochs=1).fit(b, y[:-1])
    with pytest.raises(UserError, match="encoding"):
        AccuracyMLP(encoding="onehot").fit(b, y)


def test_mlp_save_load_round_trip(fitted, synthetic, tmp_path):
    b, _ = synthetic
    folder = fitted.save(tmp_path / "acc")
    loaded = load_accuracy_predictor(f"mlp:{folder}")
    np.testing.assert_array_equal(loaded.predict(b), fitted.predict(b))
    assert loaded.get_params() == fitted.get_params()
    assert loaded.validation_ == fitted.validation_
    # the metadata file itself also works as the path
    np.testing.assert_array_equal(load_accuracy_predictor(f"mlp:{folder / META_FILE}").predict(b[:5]),
                                  fitted.predict(b[:5]))


def test_mlp_rejects_tampered_and_other_version(fitted, tmp_path):
    folder = fitted.save(tmp_path / "acc")
    meta_path = folder / META_FILE
    good = meta_path.read_text()

    body = json.loads(good)
    body["meta"]["y_mean"] += 0.01  # edited by hand
    meta_path.write_text(json.dumps(body))
    with pytest.raises(UserError, match="checksum mismatch"):
        AccuracyMLP.load(folder)

    body = json.loads(good)
    body["version"] = 99
    meta_path.write_text(json.dumps(body))
    with pytest.raises(UserError, match="format version 99"):
        AccuracyMLP.load(folder)

    meta_path.write_text(good)
    weights = folder / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="weights.pt: checksum mismatch"):
        AccuracyMLP.load(folder)

    meta_path.write_text("{ truncated")
    with pytest.raises(UserError, match="corrupt predictor metadata"):
        AccuracyMLP.load(folder)


def test_metrics():
    m = accuracy_metrics(np.array([0.7, 0.75, 0.8]), np.array([0.71, 0.74, 0.8]))
    assert m.rmse_points == pytest.approx(np.sqrt((1 + 1 + 0) / 3), rel=1e-9)
    assert m.kendall_tau == pytest.approx(1.0) and m.spearman == pytest.approx(1.0)


def test_jsonl_reader(tmp_path):
    good = tmp_path / "acc.jsonl"
    lines = [dict(a, width=1.0, acc=0.7 + 0.01 * i) for i, a in enumerate(LITERAL_ARCHS)]
    good.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    b, y = load_accuracy_jsonl(good)
    assert len(b) == 4 and y[3] == pytest.approx(0.73)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + "\n" + json.dumps(dict(lines[1], acc=73.0)) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2: acc: expected a fraction"):
        load_accuracy_jsonl(bad)
    bad.write_text(json.dumps(dict(lines[0], ks=[3] * 19)) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl:1: ks: expected 20 values"):
        load_accuracy_jsonl(bad)
    bad.write_text("{oops\n")
    with pytest.raises(UserError, match=r"bad.jsonl:1: not valid JSON"):
        load_accuracy_jsonl(bad)


def test_predict_rejects_values_outside_the_space(ofa_predictor):
    b = sample_batch(np.random.default_rng(0), 4)
    b.e[2, 19] = 5  # even in a block the depth may skip
    with pytest.raises(UserError, match=r"e: 5 is not one of \[3, 4, 6\]"):
        ofa_predictor.predict(b)
    b = sample_batch(np.random.default_rng(0), 4, resolutions=[96])
    with pytest.raises(UserError, match="112..239"):
        ofa_predictor.predict(b)


@pytest.mark.parametrize("field, value, message", [
    ("ks", 4, r"ks: 4 is not one of \[3, 5, 7\]"), ("ks", -3, r"ks: -3 is not one of"),
    ("e", 99, r"e: 99 is not one of \[3, 4, 6\]"), ("d", 5, r"d: 5 is not one of \[2, 3, 4\]"),
    ("d", 1, r"d: 1 is not one of"), ("r", 2000, r"r: the general encoding covers resolutions 32..1024 only")])
@pytest.mark.parametrize("n", [3, CHUNK + 3])
def test_predict_bad_batch_is_one_user_error(field, value, message, n):
    model = random_mlp("general")
    b = sample_batch(np.random.default_rng(1), n)
    getattr(b, field)[(n - 1, 0) if field != "r" else n - 1] = value
    with pytest.raises(UserError, match=message) as exc:
        model.predict(b)
    assert "\n" not in str(exc.value)


# --- the table path against the dense computation -----------------------------------------------------

def random_mlp(encoding: str, hidden: tuple[int, ...] = (128, 128), seed: int = 0) -> AccuracyMLP:
    model = AccuracyMLP(hidden=hidden, encoding=encoding)
    torch.manual_seed(seed)
    model._set_weights(build_mlp(ENCODINGS[encoding](sample_batch(np.random.default_rng(0), 1)).shape[1],
                                 hidden).state_dict())
    model.y_mean_, model.y_std_ = 0.75, 0.04
    return model


def dense_predict(model: AccuracyMLP, b: ArchBatch) -> np.ndarray:
    """The plain computation in float64: encode, then every layer as a matmul from the saved state dict."""
    sd = {k: v.double().numpy() for k, v in model.state_dict().items()}
    h = ENCODINGS[model.encoding](b).astype(np.float64)
    n = len(sd) // 2
    for i in range(n):
        h = h @ sd[f"{2 * i}.weight"].T + sd[f"{2 * i}.bias"]
        if i < n - 1:
            h = np.maximum(h, 0.0)
    return h[:, 0] * model.y_std_ + model.y_mean_


@pytest.mark.parametrize("encoding", ["general", "ofa"])
@pytest.mark.parametrize("n", [1, 100, 2 * CHUNK + 7])
def test_table_path_equals_dense(encoding, n):
    model = random_mlp(encoding)
    res = range(112, 240) if encoding == "ofa" else range(32, 1025)  # every resolution the encoding covers
    b = sample_batch(np.random.default_rng(n), n, resolutions=res)
    np.testing.assert_allclose(model.predict(b), dense_predict(model, b), rtol=0, atol=1e-5)


def test_table_path_every_depth_and_choice():
    """Each stage's (depth, last blocks) factor at every value, skipped blocks set to non-base choices."""
    model = random_mlp("general", seed=3)
    rng = np.random.default_rng(4)
    b = sample_batch(rng, 3 ** 5 * 9)
    b.d[:] = np.array(np.unravel_index(np.arange(3 ** 5), (3,) * 5)).T.repeat(9, axis=0) + 2
    b.ks[:, 3::4] = 7
    np.testing.assert_allclose(model.predict(b), dense_predict(model, b), rtol=0, atol=1e-5)


def test_ofa_predictor_table_path_equals_dense(ofa_predictor):
    b = sample_batch(np.random.default_rng(5), 3000, resolutions=range(112, 240))
    np.testing.assert_allclose(ofa_predictor.predict(b), dense_predict(ofa_predictor, b), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ofa_predictor.predict(b[:100]), dense_predict(ofa_predictor, b[:100]), rtol=0,
                               atol=1e-5)


def test_tables_follow_the_weights(synthetic):
    """The first-layer tables are rebuilt whenever the weights change: after a refit and after a load."""
    b, y = synthetic
    test = sample_batch(np.random.default_rng(11), 500, resolutions=range(160, 225, 4))
    model = AccuracyMLP(hidden=(32, 32), epochs=3, random_state=0).fit(b, y)
    first = model.predict(test)
    np.testing.assert_allclose(first, dense_predict(model, test), rtol=0, atol=1e-5)
    model.set_params(random_state=1, hidden=(32,)).fit(b[:600], y[:600])  # other weights, other shapes
    second = model.predict(test)
    np.testing.assert_allclose(second, dense_predict(model, test), rtol=0, atol=1e-5)
    assert np.max(np.abs(second - first)) > 1e-4
    other = random_mlp("general", hidden=(32,), seed=9)
    model._set_weights(other.state_dict())
    np.testing.assert_allclose(model.predict(test), dense_predict(model, test), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="read-only"):  # weights are replaced, never edited in place
        model.layers_[0][0][0, 0] = 1.0
