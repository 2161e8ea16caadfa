"""Features of subnets for learned latency predictors, computed for whole populations at once.

Arch features need only the config (FLOPs and parameters come from per-op :class:`~ofakit.ofa_core.ops.SlotTable` s);
profile features add the device's LUT sum and its per-stage sums. Every column has a name, so fitted models
can record which features they use and a saved model can refuse a feature set it was not trained on.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.ops import OpSpec, SlotTable
from ofakit.ofa_core.space import N_STAGES, ArchBatch, as_batch, space_for_width

from .base import Archs

# Kernel launches of a block run eagerly: expand conv+BN+act (3, absent without expansion), depthwise conv+BN+act
# (3), squeeze-excite pool, two 1x1 convs, two activations, multiply (6), project conv+BN (2), residual add (1).
# The head (stem, final expand, pool, feature mix, classifier and their activations) is a constant.
_HEAD_KERNELS = 10

ARCH_FEATURES = (
    "macs_m", "params_m", "n_blocks", "n_kernels", "resolution", "pixels",
    *[f"depth_{s}" for s in range(N_STAGES)], *[f"macs_m_{s}" for s in range(N_STAGES)],
)
PROFILE_FEATURES = ("lut_ms", *[f"lut_ms_{s}" for s in range(N_STAGES)])


@lru_cache(maxsize=8)
def _op_tables(width: float, resolutions: tuple[int, ...]) -> tuple[SlotTable, SlotTable, SlotTable]:
    spec = space_for_width(width)

    def kernels(op: OpSpec, r: int) -> float:
        if op.kind != "expanded_conv":
            return 0.0
        return 3 * op.has_expand_conv + 3 + 6 * op.se + 2 + op.idskip

    return (SlotTable(spec, resolutions, lambda op, r: op.macs / 1e6),
            SlotTable(spec, resolutions, lambda op, r: op.params / 1e6),
            SlotTable(spec, resolutions, kernels))


def _resolution_range(b: ArchBatch) -> tuple[int, ...]:
    """The default resolutions, widened to cover any resolution in ``b`` (the op tables are built once)."""
    lo, hi = int(b.r.min()), int(b.r.max())
    base = space_for_width(b.width).resolutions
    return tuple(range(min(lo, base[0]), max(hi, base[-1]) + 1))


def arch_features(b: ArchBatch) -> np.ndarray:
    """(N, len(ARCH_FEATURES)) float64: MACs (M), parameters (M), active blocks, an estimate of eager kernel
    launches, resolution, pixels (r^2 / 224^2), depth per stage and MACs (M) per stage."""
    macs, params, kern = _op_tables(b.width, _resolution_range(b))
    n_blocks = b.d.sum(axis=1)
    r = b.r.astype(np.float64)
    return np.column_stack([
        macs.evaluate(b), params.evaluate(b), n_blocks, kern.evaluate(b) + _HEAD_KERNELS, r, (r / 224.0) ** 2,
        b.d, macs.stage_sums(b)]).astype(np.float64)


def profile_features(b: ArchBatch, table: SlotTable) -> np.ndarray:
    """(N, len(PROFILE_FEATURES)): the LUT sum (ms) and the per-stage LUT sums of the device's table."""
    return np.column_stack([table.evaluate(b), table.stage_sums(b)])


def latency_features(b: ArchBatch, table: SlotTable | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Arch features, plus profile features when ``table`` is given; returns (matrix, column names)."""
    x = arch_features(b)
    if table is None:
        return x, ARCH_FEATURES
    return np.column_stack([profile_features(b, table), x]), PROFILE_FEATURES + ARCH_FEATURES


def measured_latencies(archs: Archs, ms: np.ndarray, min_n: int, too_few: str) -> tuple[ArchBatch, np.ndarray]:
    """Check measured subnets for fitting: one positive, finite latency per subnet and at least ``min_n`` subnets
    (else ``too_few``, formatted with ``min_n`` and ``n``). Returns the batch and the latencies (float64)."""
    b = as_batch(archs)
    y = np.asarray(ms, dtype=np.float64).ravel()
    if y.shape[0] != len(b):
        raise UserError(f"ms: {y.shape[0]} latencies for {len(b)} subnets")
    if len(b) < min_n:
        raise UserError(too_few.format(min_n=min_n, n=len(b)))
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise UserError("ms: latencies must be positive finite numbers")
    return b, y
