"""Elastic operators: the distinct layers a subnet is made of, keyed exactly as OFA's latency tables key them.

A subnet is a sequence of :class:`OpSpec` (stem, first block, active MBConv blocks, final expand, pool, feature
mix, classifier). Every op knows its OFA key string, its MACs and its parameter count, so FLOPs, parameters and
LUT latency of a subnet are sums over its ops. :class:`SlotTable` turns any per-op value into a vectorized
evaluator over whole populations (:class:`~ofakit.ofa_core.space.ArchBatch`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import UserError
from .space import MAX_DEPTH, N_BLOCKS, N_STAGES, ArchBatch, ArchConfig, SpaceSpec, as_batch, make_divisible

STEM, BLOCK, FINAL_EXPAND, POOL, FEATURE_MIX, CLASSIFIER = (
    "Conv", "expanded_conv", "Conv_1", "AvgPool2D", "Conv_2", "Logits")
SE_REDUCTION = 4


class MissingOpError(UserError):
    """A subnet needs an operator that a lookup table does not have; the message names its key."""


def conv_out(size: int, stride: int) -> int:
    """Feature-map size after a 'same'-padded conv: OFA's ``int((f - 1) / stride + 1)``."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class OpSpec:
    """One operator at one input shape. ``in_shape``/``out_shape`` are (H, W, C); ``mid`` is the middle
    (expanded) channel count of a block (equal to the input channels when it has no 1x1 expansion)."""

    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    mid: int = 0
    kernel: int = 0
    stride: int = 1
    idskip: bool = False
    se: bool = False
    hswish: bool = False

    @property
    def key(self) -> str:
        """OFA's LUT key string for this operator."""
        shp = lambda s: "x".join(map(str, s))  # noqa: E731
        if self.kind == CLASSIFIER:
            return f"{CLASSIFIER}-input:{shp(self.in_shape)}-output:{self.out_shape[2]}"
        base = f"{self.kind}-input:{shp(self.in_shape)}-output:{shp(self.out_shape)}"
        if self.kind != BLOCK:
            return base
        return (f"{base}-expand:{self.mid}-kernel:{self.kernel}-stride:{self.stride}"
                f"-idskip:{int(self.idskip)}-se:{int(self.se)}-hs:{int(self.hswish)}")

    @classmethod
    def from_key(cls, key: str) -> "OpSpec":
        """Parse an OFA LUT key; raises :class:`UserError` naming the key when it is not one."""
        m = _KEY_RE.fullmatch(key.strip())
        if not m:
            raise UserError(f"not an OFA operator key: {key!r}")
        g = m.groupdict()
        ins = tuple(int(v) for v in g["inp"].split("x"))
        kind = g["kind"]
        if kind == CLASSIFIER:
            if g["out"].count("x"):
                raise UserError(f"not an OFA operator key: {key!r}")
            return cls(kind, ins, (1, 1, int(g["out"])))
        outs = tuple(int(v) for v in g["out"].split("x"))
        if len(outs) != 3 or (kind == BLOCK) != (g["expand"] is not None):
            raise UserError(f"not an OFA operator key: {key!r}")
        if kind != BLOCK:
            return cls(kind, ins, outs)
        return cls(kind, ins, outs, int(g["expand"]), int(g["kernel"]), int(g["stride"]), g["idskip"] == "1",
                   g["se"] == "1", g["hs"] == "1")

    @property
    def has_expand_conv(self) -> bool:
        return self.kind == BLOCK and self.mid != self.in_shape[2]

    @property
    def se_mid(self) -> int:
        """Channels inside the squeeze-excite of a block (OFA: make_divisible(mid // 4, 8))."""
        return make_divisible(self.mid // SE_REDUCTION, 8)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of convolutions and linear layers (what OFA's FLOPs counter counts)."""
        (h, w, c), (oh, ow, oc) = self.in_shape, self.out_shape
        if self.kind == STEM:
            return oh * ow * oc * c * 9
        if self.kind in (FINAL_EXPAND, FEATURE_MIX):
            return oh * ow * oc * c
        if self.kind == CLASSIFIER:
            return c * oc
        if self.kind == POOL:
            return 0
        m = self.mid
        total = oh * ow * m * self.kernel ** 2 + oh * ow * m * oc
        if self.has_expand_conv:
            total += h * w * c * m
        if self.se:
            total += 2 * m * self.se_mid
        return total

    @property
    def params(self) -> int:
        """Trainable parameters (conv/linear weights, biases, BatchNorm affine), as a built module counts them."""
        c, oc = self.in_shape[2], self.out_shape[2]
        if self.kind == STEM:
            return 9 * c * oc + 2 * oc
        if self.kind == FINAL_EXPAND:
            return c * oc + 2 * oc
        if self.kind == FEATURE_MIX:
            return c * oc
        if self.kind == CLASSIFIER:
            return c * oc + oc
        if self.kind == POOL:
            return 0
        m = self.mid
        total = m * self.kernel ** 2 + 2 * m + m * oc + 2 * oc
        if self.has_expand_conv:
            total += c * m + 2 * m
        if self.se:
            total += 2 * m * self.se_mid + self.se_mid + m
        return total


_KEY_RE = re.compile(
    r"(?P<kind>Conv|Conv_1|Conv_2|AvgPool2D|Logits|expanded_conv)-input:(?P<inp>\d+x\d+x\d+)"
    r"-output:(?P<out>\d+x\d+x\d+|\d+)"
    r"(?:-expand:(?P<expand>\d+)-kernel:(?P<kernel>\d+)-stride:(?P<stride>\d+)"
    r"-idskip:(?P<idskip>[01])-se:(?P<se>[01])-hs:(?P<hs>[01]))?")


def block_op(spec: SpaceSpec, stage: int, index: int, size: int, kernel: int, expand: int) -> OpSpec:
    """The MBConv op of block ``index`` of ``stage`` at input feature size ``size``."""
    st = spec.stages[stage]
    cin = spec.block_in_width(stage, index)
    stride = st.stride if index == 0 else 1
    out = conv_out(size, stride)
    return OpSpec(BLOCK, (size, size, cin), (out, out, st.width), spec.middle_width(cin, expand), kernel, stride,
                  stride == 1 and cin == st.width, st.se, st.hswish)


def head_ops(spec: SpaceSpec, r: int) -> tuple[list[OpSpec], list[OpSpec]]:
    """(ops before the elastic stages, ops after them) at resolution ``r``."""
    f = conv_out(r, 2)
    stem = OpSpec(STEM, (r, r, 3), (f, f, spec.stem_width))
    c0, c1 = spec.stem_width, spec.first_block_width
    first = OpSpec(BLOCK, (f, f, c0), (f, f, c1), c0, 3, 1, c0 == c1, False, False)
    for st in spec.stages:
        f = conv_out(f, st.stride)
    cl, cf, cm = spec.stages[-1].width, spec.final_expand_width, spec.last_channel
    tail = [OpSpec(FINAL_EXPAND, (f, f, cl), (f, f, cf)), OpSpec(POOL, (f, f, cf), (1, 1, cf)),
            OpSpec(FEATURE_MIX, (1, 1, cf), (1, 1, cm)), OpSpec(CLASSIFIER, (1, 1, cm), (1, 1, spec.n_classes))]
    return [stem, first], tail


def stage_input_sizes(r: int, spec: SpaceSpec) -> list[int]:
    """Feature-map size entering each elastic stage at resolution ``r``."""
    sizes, f = [], conv_out(r, 2)
    for st in spec.stages:
        sizes.append(f)
        f = conv_out(f, st.stride)
    return sizes


def subnet_ops(arch: ArchConfig) -> list[OpSpec]:
    """The ops of ``arch`` in execution order."""
    spec = arch.spec
    pre, post = head_ops(spec, arch.r)
    ops = list(pre)
    for s, size in enumerate(stage_input_sizes(arch.r, spec)):
        for i in range(arch.d[s]):
            b = s * MAX_DEPTH + i
            ops.append(block_op(spec, s, i, size, arch.ks[b], arch.e[b]))
            size = ops[-1].out_shape[0]
    return ops + post


def resolution_ops(spec: SpaceSpec, r: int) -> list[OpSpec]:
    """Every distinct op the space uses at resolution ``r`` (96 for the default choices)."""
    pre, post = head_ops(spec, r)
    ops = list(pre)
    for s, size in enumerate(stage_input_sizes(r, spec)):
        for i in (0, 1):
            sz = size if i == 0 else conv_out(size, spec.stages[s].stride)
            ops += [block_op(spec, s, i, sz, k, e) for k in spec.ks_choices for e in spec.e_choices]
    return ops + post


def enumerate_ops(spec: SpaceSpec, resolutions: Iterable[int] | None = None) -> dict[str, OpSpec]:
    """All distinct ops over ``resolutions`` (default: the space's), keyed by OFA key, in first-seen order."""
    out: dict[str, OpSpec] = {}
    for r in (spec.resolutions if resolutions is None else resolutions):
        for op in resolution_ops(spec, int(r)):
            out.setdefault(op.key, op)
    return out


def subnet_macs(arch: ArchConfig) -> int:
    return sum(op.macs for op in subnet_ops(arch))


def subnet_params(arch: ArchConfig) -> int:
    return sum(op.params for op in subnet_ops(arch))


class SlotTable:
    """Any per-op value laid out per (resolution, block slot, kernel, expand) for vectorized sums.

    ``value(op, r)`` gives the value of ``op`` in a subnet at resolution ``r``; it may raise :class:`KeyError`
    for an op it lacks: a population that uses one then raises :class:`MissingOpError` naming the key, while
    populations that avoid it evaluate fine.
    """

    def __init__(self, spec: SpaceSpec, resolutions: Sequence[int], value: Callable[[OpSpec, int], float]):
        self.spec = spec
        self.resolutions = tuple(int(r) for r in resolutions)
        nk, ne = len(spec.ks_choices), len(spec.e_choices)
        self._rmap = np.full(max(self.resolutions) + 1, -1, dtype=np.int64)
        self._rmap[list(self.resolutions)] = np.arange(len(self.resolutions))
        self._kmap = np.zeros(max(spec.ks_choices) + 1, dtype=np.int64)
        self._kmap[list(spec.ks_choices)] = np.arange(nk)
        self._emap = np.zeros(max(spec.e_choices) + 1, dtype=np.int64)
        self._emap[list(spec.e_choices)] = np.arange(ne)
        R = len(self.resolutions)
        self.fixed = np.zeros(R)
        self.blocks = np.zeros((R, N_BLOCKS, nk, ne))
        self._missing: dict[tuple, str] = {}

        def get(op: OpSpec, where: tuple) -> float:
            try:
                return float(value(op, self.resolutions[where[0]]))
            except KeyError:
                self._missing[where] = op.key
                return float("nan")

        for ri, r in enumerate(self.resolutions):
            pre, post = head_ops(spec, r)
            self.fixed[ri] = sum(get(op, (ri, "fixed")) for op in pre + post)
            for s, size in enumerate(stage_input_sizes(r, spec)):
                for i in range(MAX_DEPTH):
                    sz = size if i == 0 else conv_out(size, spec.stages[s].stride)
                    for ki, k in enumerate(spec.ks_choices):
                        for ei, e in enumerate(spec.e_choices):
                            b = s * MAX_DEPTH + i
                            self.blocks[ri, b, ki, ei] = get(block_op(spec, s, i, sz, k, e), (ri, b, ki, ei))
        flat = self.blocks.reshape(R, N_BLOCKS, nk * ne)
        self._flat = np.concatenate([flat, np.zeros((R, N_BLOCKS, 1))], axis=2).ravel()

    def _indices(self, batch: ArchBatch) -> np.ndarray:
        r = batch.r
        bad = (r < 0) | (r >= self._rmap.size)
        ri = np.where(bad, -1, self._rmap[np.clip(r, 0, self._rmap.size - 1)])
        if np.any(ri < 0):
            bad_r = sorted(set(r[ri < 0].tolist()))[0]
            res = list(self.resolutions)
            steps = {b - a for a, b in zip(res, res[1:])}
            step = steps.pop() if len(steps) == 1 else 0
            span = f"{res[0]}..{res[-1]}" + (f" in steps of {step}" if step else "")
            why = f": {bad_r} is not a multiple of {step}" if step and bad_r % step else ""
            raise MissingOpError(f"resolution {bad_r} is not in this table (has {span}){why}")
        return ri

    def block_values(self, archs: "ArchBatch | Sequence[ArchConfig]") -> np.ndarray:
        """(N, 20) value of each block slot (0 for skipped blocks)."""
        b = as_batch(archs)
        ri = self._indices(b)
        nke = self.blocks.shape[2] * self.blocks.shape[3]
        code = self._kmap[b.ks] * self.blocks.shape[3] + self._emap[b.e]
        code = np.where(b.active_mask(), code, nke)  # the extra zero column stands for a skipped block
        flat_index = (ri[:, None] * N_BLOCKS + np.arange(N_BLOCKS)) * (nke + 1) + code
        return self._flat.take(flat_index)

    def evaluate(self, archs: "ArchBatch | Sequence[ArchConfig]") -> np.ndarray:
        """(N,) sum of the values of every op of each subnet."""
        b = as_batch(archs)
        out = self.fixed[self._indices(b)] + self.block_values(b).sum(axis=1)
        if self._missing and np.isnan(out).any():
            self._raise_missing(b, np.flatnonzero(np.isnan(out))[0])
        return out

    def stage_sums(self, archs: "ArchBatch | Sequence[ArchConfig]") -> np.ndarray:
        """(N, 5) per-stage sums of block values (features for learned predictors)."""
        return self.block_values(archs).reshape(-1, N_STAGES, MAX_DEPTH).sum(axis=2)

    def _raise_missing(self, b: ArchBatch, i: int) -> None:
        arch = b[i].to_configs()[0]
        for op in subnet_ops(arch):
            if op.key in self._missing.values():
                raise MissingOpError(f"operator missing from the lookup table: {op.key}")
        raise MissingOpError("operator missing from the lookup table")
