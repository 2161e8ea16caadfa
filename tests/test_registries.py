"""Contracts checked over the registries: every backend (its runtime metadata is the one source for the board
agent, the probe, `devices check` and the inventory) and every latency predictor (scikit-learn's estimator
contract, the one default, saved folders), so a new backend or predictor is tested by being registered."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from ofakit.device_profiles import DEFAULT_PROFILE, load_profile
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import sample_batch, space_for_width
from ofakit.predictors.registry import (create_predictor, default_predictor, list_predictors, register_predictor)
from ofakit.profiler.agent import ofakit_agent as agent
from ofakit.profiler.backends import backend_class, board_backends, list_backends, register_backend

BACKENDS = list_backends()
PREDICTORS = list_predictors()


@pytest.fixture(scope="module")
def shipped():
    return load_profile(DEFAULT_PROFILE)


@pytest.fixture(scope="module")
def bare():
    """The shipped profile without its calibration (a LUT alone)."""
    prof = load_profile(DEFAULT_PROFILE)
    prof.meta.calibration = None
    return prof


def batch(profile, n: int = 16, seed: int = 0):
    return sample_batch(np.random.default_rng(seed), n, space_for_width(profile.meta.width), profile.meta.resolutions)


# --- backends ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BACKENDS)
def test_backend_metadata(name):
    cls = backend_class(name)
    assert cls.name == name and cls.format and cls.suffix.startswith(".") and cls.device in ("cpu", "gpu")
    assert isinstance(cls.runtime_modules, tuple) and all(isinstance(m, str) for m in cls.runtime_modules)
    if cls.on_boards:  # the board agent must know how to time it, and the check how to install it
        assert cls.device == "cpu" and cls.runtime_modules and cls.pip_name
        assert name in agent.RUNTIMES


def test_the_agents_own_runtime_map_agrees_with_the_backend_classes():
    assert agent.RUNTIME_MODULES == {n: c.runtime_modules for n, c in board_backends().items()}


def test_check_and_inventory_derive_from_the_backend_classes():
    from ofakit.profiler.remote import check
    from ofakit.profiler.remote.inventory import InventoryError, parse_inventory

    assert check.RUNTIME_MODULES == {n: c.runtime_modules for n, c in board_backends().items()}
    assert check.RUNTIME_PIP == {n: c.pip_name for n, c in board_backends().items()}
    for name in BACKENDS:
        data = {"devices": {"b": {"host": "h", "backend": name}}}
        if name in board_backends():
            assert parse_inventory(data, "inv.yaml").get("b").backend == name
        else:
            with pytest.raises(InventoryError, match="expected one of"):
                parse_inventory(data, "inv.yaml")


def test_a_backend_name_registered_twice_warns():
    from ofakit.profiler import backends

    first = backend_class("onnxruntime")
    with pytest.warns(RuntimeWarning, match="registered twice"):
        register_backend("onnxruntime")(type("Impostor", (first,), {}))
    backends._REGISTRY["onnxruntime"] = first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_backend("onnxruntime")(first)  # the same class again (a re-import) is not a duplicate


# --- latency predictors --------------------------------------------------------------------------------------

def test_the_registry_lists_the_builtin_predictors():
    assert {"lut", "calibrated", "latency-regressor", "few-shot"} <= set(PREDICTORS)
    assert list_predictors("l*") == [n for n in PREDICTORS if n.startswith("l")]
    assert set(list_predictors(saved=False)) >= {"lut", "calibrated"}
    assert set(list_predictors(saved=True)) >= {"latency-regressor", "few-shot"}


def test_one_default_predictor(shipped, bare):
    assert default_predictor(shipped) == "calibrated" and default_predictor(bare) == "lut"
    b = batch(shipped)
    np.testing.assert_allclose(create_predictor(None, shipped).predict(b), create_predictor("calibrated",
                                                                                             shipped).predict(b))


def fitted(name: str, profile):
    """A predictor of every registered kind, ready to predict on ``profile``'s subnets (saved kinds fitted on
    LUT sums of the profile: persistence and contracts, not accuracy)."""
    if name in list_predictors(saved=False):
        return create_predictor(name, profile)
    b = batch(profile, 24, seed=1)
    ms = profile.table().evaluate(b) * 1.2
    if name == "latency-regressor":
        from ofakit.predictors.regressors import LatencyRegressor

        return LatencyRegressor(model="ridge", profile=profile).fit(b, ms)
    if name == "few-shot":
        from ofakit.predictors.fewshot import FewShotPredictor
        from ofakit.predictors.lut import LUTPredictor

        return FewShotPredictor(references={"lut": LUTPredictor(profile)}, n_basis=200).fit(b, ms)
    pytest.fail(f"no fixture for the registered predictor {name!r}: add one here")


@pytest.mark.parametrize("name", PREDICTORS)
def test_predictor_contract(name, shipped, tmp_path):
    pred = fitted(name, shipped)
    b = batch(shipped, seed=2)
    y = pred.predict(b)
    assert y.shape == (len(b),) and np.all(np.isfinite(y)) and np.all(y > 0)
    # scikit-learn: parameters round-trip, clone gives an equal unfitted estimator, fitted attributes end in _
    params = pred.get_params()
    twin = clone(pred)
    assert type(twin) is type(pred) and twin.get_params().keys() == params.keys()
    assert not [k for k in vars(twin) if k.endswith("_") and not k.startswith("_")]
    assert [k for k in vars(pred) if k.endswith("_")] or name in list_predictors(saved=False)
    if hasattr(pred, "save"):  # saved kinds: the folder is a predictor of its own
        np.testing.assert_allclose(create_predictor(str(pred.save(tmp_path / name))).predict(b), y, rtol=1e-9)


@pytest.mark.parametrize("name", list_predictors(saved=True))
def test_unfitted_saved_kinds_raise_sklearns_not_fitted_error(name, shipped):
    unfitted = clone(fitted(name, shipped))
    with pytest.raises(NotFittedError):
        unfitted.predict(batch(shipped))
    with pytest.raises(UserError):  # and the CLI prints it as one line
        unfitted.predict(batch(shipped))


def test_calibrated_keeps_its_features_argument_when_it_loads_the_stored_calibration(shipped):
    from ofakit.predictors.lut import CalibratedLUTPredictor

    pred = CalibratedLUTPredictor(shipped, features=("lut_ms",))
    pred.predict(batch(shipped))  # loads the stored calibration (its own features)
    assert pred.features == ("lut_ms",) and pred.features_ == tuple(shipped.meta.calibration["features"])
    twin = clone(pred)
    assert twin.features == ("lut_ms",) and not hasattr(twin, "coef_")
    b = batch(shipped, 30, seed=4)
    refit = twin.fit(b, shipped.table().evaluate(b) * 1.1)
    assert refit is twin and refit.features_ == ("lut_ms",) and len(refit.coef_) == 1


def test_calibrated_without_a_calibration_is_not_fitted(bare):
    with pytest.raises(NotFittedError, match="has no calibration"):
        create_predictor("calibrated", bare).predict(batch(bare))


def test_a_predictor_name_registered_twice_warns(bare):
    from ofakit.predictors import registry
    from ofakit.predictors.lut import LUTPredictor

    with pytest.warns(RuntimeWarning, match="registered twice"):
        register_predictor("lut")(type("Impostor", (LUTPredictor,), {}))
    registry._REGISTRY["lut"] = registry.PredictorEntry("lut", LUTPredictor)
    assert create_predictor("lut", bare).__class__ is LUTPredictor
