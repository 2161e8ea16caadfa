"""The predictor interface shared by search, validate and the CLI.

A predictor is any object with ``predict(archs) -> np.ndarray`` taking an :class:`~ofa_core.space.ArchBatch`
(or a list of :class:`~ofa_core.space.ArchConfig`) and returning one float per subnet: milliseconds for latency
predictors, top-1 accuracy as a fraction for accuracy predictors.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from ofa_core.space import ArchBatch, ArchConfig

if TYPE_CHECKING:
    from device_profiles import Profile

Archs = Union[ArchBatch, ArchConfig, Sequence[ArchConfig]]


@runtime_checkable
class Predictor(Protocol):
    def predict(self, archs: Archs) -> np.ndarray:
        """One value per subnet, shape (N,)."""
        ...


def checked(values: np.ndarray, source: object, unit: str = "ms") -> np.ndarray:
    """``values`` as they leave a predictor: every one finite and > 0, else a one-line error naming ``source``
    (the profile or saved predictor whose numbers produced it). Never lets a NaN or a negative latency through."""
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        v = values[bad][0]
        from ofa_core.errors import UserError
        raise UserError(f"{source}: predicted {v:.6g} {unit} for a subnet; the numbers this prediction is made "
                        f"of are damaged or out of range")
    return values


# --- latency predictors by name or saved folder (used by `ofakit predict`, validate and search) -------------

LatencyFactory = Callable[["Profile"], Predictor]


def _lut_factory(profile: "Profile") -> Predictor:
    from .lut import LUTPredictor
    return LUTPredictor(profile)


def _calibrated_factory(profile: "Profile") -> Predictor:
    from .lut import CalibratedLUTPredictor
    return CalibratedLUTPredictor(profile)


LATENCY_PREDICTORS: dict[str, LatencyFactory] = {"lut": _lut_factory, "calibrated": _calibrated_factory}
"""Named latency predictors built from a device profile (``--predictor NAME``); a new kind is one entry here."""

SAVED_PREDICTORS: dict[str, str] = {
    "latency-regressor": "predictors.regressors:LatencyRegressor",
    "few-shot": "predictors.fewshot:FewShotPredictor",
}
"""Kinds of saved predictor folders (``predictor.json`` "kind") and the class whose ``load`` reads them."""


def load_saved_predictor(path: str) -> Predictor:
    """Load any saved latency predictor folder, dispatching on its recorded kind."""
    import importlib

    from ofa_core.errors import UserError
    from ofa_core.strict import load_json

    from .persist import META_FILE, resolve_bundle

    folder = resolve_bundle(path)
    body = load_json(folder / META_FILE, "predictor metadata")
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind not in SAVED_PREDICTORS:
        raise UserError(f"{folder}: a {kind!r} predictor cannot predict latency (known: "
                        f"{', '.join(sorted(SAVED_PREDICTORS))})")
    module, attr = SAVED_PREDICTORS[kind].split(":")
    return getattr(importlib.import_module(module), attr).load(folder)


def make_latency_predictor(spec: str, profile: "Profile | None" = None) -> Predictor:
    """``spec`` is a registered name (``lut``, ``calibrated``, ...) built on ``profile``, or the path of a saved
    predictor folder (self-contained: it does not use ``profile``)."""
    from ofa_core.errors import UserError

    if spec in LATENCY_PREDICTORS:
        if profile is None:
            raise UserError(f"predictor {spec!r} needs a device profile")
        return LATENCY_PREDICTORS[spec](profile)
    if os.sep in spec or "/" in spec or spec.endswith(".json") or os.path.isdir(spec):
        return load_saved_predictor(spec)
    raise UserError(f"predictor: {spec!r} is neither a known name ({', '.join(sorted(LATENCY_PREDICTORS))}) "
                    f"nor a saved predictor folder")
