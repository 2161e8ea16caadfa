"""The predictor interface shared by search, validate and the CLI (the registry of latency predictors by name is
:mod:`ofakit.predictors.registry`).

A predictor is any object with ``predict(archs) -> np.ndarray`` taking an :class:`~ofakit.ofa_core.space.ArchBatch`
(or a list of :class:`~ofakit.ofa_core.space.ArchConfig`) and returning one float per subnet: milliseconds for latency
predictors, top-1 accuracy as a fraction for accuracy predictors.
"""
from __future__ import annotations

from typing import Protocol, Sequence, Union, runtime_checkable

import numpy as np

from ofakit.ofa_core.space import ArchBatch, ArchConfig

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
        from ofakit.ofa_core.errors import UserError
        raise UserError(f"{source}: predicted {v:.6g} {unit} for a subnet; the numbers this prediction is made "
                        f"of are damaged or out of range")
    return values
