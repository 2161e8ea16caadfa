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
    import json
    from pathlib import Path

    from ofa_core.errors import UserError

    from .persist import META_FILE, resolve_bundle

    folder = resolve_bundle(path)
    try:
        kind = json.loads((folder / META_FILE).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{Path(folder) / META_FILE}: corrupt predictor metadata ({exc})") from None
    if kind not in SAVED_PREDICTORS:
        raise UserError(f"{folder}: a {kind!r} predictor cannot predict latency (known: "
                        f"{', '.join(sorted(SAVED_PREDICTORS))})")
    module, attr = SAVED_PREDICTORS[kind].split(":")
    return getattr(importlib.import_module(module), attr).load(folder)


def default_latency_predictor(profile: "Profile") -> str:
    """The predictor a command uses when none is named: ``calibrated`` if the profile has a calibration, else
    ``lut`` (the one place this rule lives)."""
    return "calibrated" if profile.meta.calibration else "lut"


def make_latency_predictor(spec: str, profile: "Profile | None" = None) -> Predictor:
    """``spec`` is a registered name (``lut``, ``calibrated``, ...) built on ``profile``, or a saved predictor
    (self-contained: it does not use ``profile``) given by folder or by its name in the user's profile folder."""
    from ofa_core.errors import UserError

    if spec in LATENCY_PREDICTORS:
        if profile is None:
            raise UserError(f"predictor {spec!r} needs a device profile")
        return LATENCY_PREDICTORS[spec](profile)
    if os.sep in spec or "/" in spec or spec.endswith(".json") or os.path.isdir(spec):
        return load_saved_predictor(spec)
    from device_profiles.store import find

    saved = find(spec, "predictor.json")
    if saved is not None:
        return load_saved_predictor(str(saved))
    raise UserError(f"predictor: {spec!r} is neither a known name ({', '.join(sorted(LATENCY_PREDICTORS))}) "
                    f"nor a saved predictor (a folder, or a name in your profile folder)")
