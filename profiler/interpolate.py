"""Quick profiles: measure a few resolutions, predict the ops of the others.

Ops are matched by *slot*: the i-th op of :func:`ofakit.ofa_core.ops.resolution_ops` is the same layer (kind, stage,
position, kernel, expand) at every resolution, only its feature-map size differs. An op not measured itself is
interpolated piecewise-linearly in its input feature-map area between the same slot's measured sizes (linear
extrapolation past the ends). Later-stage feature maps repeat across resolutions, so many "other-resolution" ops
are in fact measured exactly.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from ofakit.ofa_core.ops import resolution_ops
from ofakit.ofa_core.space import SpaceSpec


def pick_resolutions(resolutions: Sequence[int], k: int) -> list[int]:
    """``k`` resolutions spread evenly over ``resolutions`` (both ends included; the middle one for k=1)."""
    res = sorted(set(int(r) for r in resolutions))
    if k >= len(res):
        return res
    if k <= 1:
        return [res[len(res) // 2]]
    idx = np.unique(np.round(np.linspace(0, len(res) - 1, k)).astype(int))
    return [res[i] for i in idx]


def interpolate(spec: SpaceSpec, measured: Mapping[str, float], measured_res: Iterable[int],
                target_res: Iterable[int]) -> dict[str, float]:
    """Predicted ms for every op of ``target_res`` that ``measured`` (key -> ms) lacks."""
    slots: list[list[tuple[float, float]]] = []
    for r in sorted(set(measured_res)):
        for i, op in enumerate(resolution_ops(spec, r)):
            if len(slots) <= i:
                slots.append([])
            if op.key in measured:
                slots[i].append((float(op.in_shape[0] * op.in_shape[1]), measured[op.key]))
    out: dict[str, float] = {}
    for r in target_res:
        for i, op in enumerate(resolution_ops(spec, r)):
            if op.key in measured or op.key in out or i >= len(slots) or not slots[i]:
                continue
            out[op.key] = _interp(float(op.in_shape[0] * op.in_shape[1]), slots[i])
    return out


def _interp(x: float, points: list[tuple[float, float]]) -> float:
    xs = np.array(sorted({p[0] for p in points}))
    ys = np.array([np.mean([v for a, v in points if a == xv]) for xv in xs])
    if xs.size == 1:
        return float(ys[0] * x / xs[0])
    if x < xs[0]:
        j = 0
    elif x > xs[-1]:
        j = xs.size - 2
    else:
        return float(np.interp(x, xs, ys))
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return float(max(ys[j] + slope * (x - xs[j]), 0.0))
