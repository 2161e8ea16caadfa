"""The OFA-MobileNetV3 search space: layer widths, arch configs, populations, sampling and encodings.

Pure Python + numpy (no torch). Facts follow OFA's ``OFAMobileNetV3``: base widths 16 | 24 40 80 112 160 |
960 1280 scaled by the width multiplier and rounded with :func:`make_divisible` to 8; strides 1 | 2 2 2 1 2;
ReLU in the first three stages and h-swish after; squeeze-excite in stages 2, 4, 5; a 3x3 stride-2 stem with
h-swish; a fixed first block (depthwise 3x3, expand 1); a head 1x1 conv -> global pool -> 1x1 conv -> linear.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import ArchError

N_STAGES = 5
MAX_DEPTH = 4
N_BLOCKS = N_STAGES * MAX_DEPTH
KS_CHOICES = (3, 5, 7)
E_CHOICES = (3, 4, 6)
D_CHOICES = (2, 3, 4)
DEFAULT_RESOLUTIONS = tuple(range(128, 225, 4))

_BASE_STEM = 16
_BASE_FIRST = 16
_BASE_STAGES = (24, 40, 80, 112, 160)
_BASE_FINAL_EXPAND = 960
_BASE_LAST = 1280
_STRIDES = (2, 2, 2, 1, 2)
_HSWISH = (False, False, True, True, True)
_SE = (False, True, False, True, True)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going more than 10% below it (MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: output width, stride of its first block, activation and squeeze-excite."""

    width: int
    stride: int
    hswish: bool
    se: bool


@dataclass(frozen=True)
class SpaceSpec:
    """The fixed skeleton of an OFA-MobileNetV3 supernet at one width multiplier."""

    width_mult: float = 1.0
    n_classes: int = 1000
    ks_choices: tuple[int, ...] = KS_CHOICES
    e_choices: tuple[int, ...] = E_CHOICES
    d_choices: tuple[int, ...] = D_CHOICES
    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    stem_width: int = field(init=False)
    first_block_width: int = field(init=False)
    stages: tuple[StageSpec, ...] = field(init=False)
    final_expand_width: int = field(init=False)
    last_channel: int = field(init=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.width_mult, (int, float)) and 0 < self.width_mult <= 4):
            raise ArchError(f"width: must be a number in (0, 4], got {self.width_mult!r}")
        w = float(self.width_mult)
        set_ = object.__setattr__
        set_(self, "width_mult", w)
        set_(self, "stem_width", make_divisible(_BASE_STEM * w))
        set_(self, "first_block_width", make_divisible(_BASE_FIRST * w))
        set_(self, "stages", tuple(
            StageSpec(make_divisible(b * w), s, hs, se)
            for b, s, hs, se in zip(_BASE_STAGES, _STRIDES, _HSWISH, _SE)))
        set_(self, "final_expand_width", make_divisible(_BASE_FINAL_EXPAND * w))
        set_(self, "last_channel", make_divisible(_BASE_LAST * w))

    @property
    def n_blocks(self) -> int:
        return N_BLOCKS

    def block_in_width(self, stage: int, index: int) -> int:
        """Input channel count of block ``index`` (0-based) of ``stage``."""
        if index > 0:
            return self.stages[stage].width
        return self.first_block_width if stage == 0 else self.stages[stage - 1].width

    def middle_width(self, in_width: int, expand: int) -> int:
        """Expanded (middle) channel count of an MBConv block, as OFA's DynamicMBConvLayer computes it."""
        return make_divisible(round(in_width * expand), 8)

    def count_subnets(self, with_resolutions: bool = False) -> int:
        """Exact number of distinct networks: (sum_d (|ks|*|e|)^d)^stages, times #resolutions if asked."""
        per_stage = sum((len(self.ks_choices) * len(self.e_choices)) ** d for d in self.d_choices)
        n = per_stage ** N_STAGES
        return n * len(self.resolutions) if with_resolutions else n


def space_for_width(width: float) -> SpaceSpec:
    """The space of a supernet with width multiplier ``width`` (cached)."""
    if isinstance(width, bool) or not isinstance(width, (int, float, np.integer, np.floating)):
        raise ArchError(f"width: must be a number in (0, 4], got {width!r}")
    key = round(float(width), 6)
    if key not in _SPACES:
        _SPACES[key] = SpaceSpec(width_mult=key)
    return _SPACES[key]


_SPACES: dict[float, SpaceSpec] = {}


def _int_list(name: str, value: Any, length: int, choices: Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArchError(f"{name}: expected a list of {length} integers, got {value!r}")
    items = list(value)
    if len(items) != length:
        raise ArchError(f"{name}: expected {length} values, got {len(items)}")
    out = []
    for i, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (
                isinstance(v, float) and v.is_integer()):
            raise ArchError(f"{name}[{i}]: expected an integer, got {v!r}")
        if int(v) not in choices:
            raise ArchError(f"{name}[{i}]: {v} is not one of {list(choices)}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class ArchConfig:
    """One subnet: kernel ``ks`` and expand ``e`` per block (20), depth ``d`` per stage (5), resolution ``r``.

    Equality and hashing use the canonical form, so settings of blocks skipped by the depth do not matter.
    """

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int
    width: float = 1.0

    def __post_init__(self) -> None:
        spec = space_for_width(self.width)
        set_ = object.__setattr__
        set_(self, "width", spec.width_mult)
        set_(self, "ks", _int_list("ks", self.ks, N_BLOCKS, spec.ks_choices))
        set_(self, "e", _int_list("e", self.e, N_BLOCKS, spec.e_choices))
        set_(self, "d", _int_list("d", self.d, N_STAGES, spec.d_choices))
        r = self.r
        if isinstance(r, (list, tuple)):
            if len(r) != 1:
                raise ArchError(f"r: expected one resolution, got {list(r)!r}")
            r = r[0]
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 32 <= int(r) <= 1024:
            raise ArchError(f"r: expected an integer resolution in [32, 1024], got {r!r}")
        set_(self, "r", int(r))

    @property
    def spec(self) -> SpaceSpec:
        return space_for_width(self.width)

    def active_blocks(self) -> list[int]:
        """Indices (0..19) of the blocks that run, in order."""
        return [s * MAX_DEPTH + i for s in range(N_STAGES) for i in range(self.d[s])]

    def canonical(self) -> "ArchConfig":
        """Same network with skipped blocks set to the smallest kernel and expand (a unique representative)."""
        ks, e = list(self.ks), list(self.e)
        for s in range(N_STAGES):
            for i in range(self.d[s], MAX_DEPTH):
                ks[s * MAX_DEPTH + i] = self.spec.ks_choices[0]
                e[s * MAX_DEPTH + i] = self.spec.e_choices[0]
        return ArchConfig(tuple(ks), tuple(e), self.d, self.r, self.width)

    def _key(self) -> tuple:
        c = self.canonical()
        return (c.ks, c.e, c.d, c.r, c.width)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArchConfig) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    # --- OFA arch dict and JSON ---------------------------------------------------------------
    def to_ofa_dict(self) -> dict[str, Any]:
        """OFA's arch dict ``{"ks", "e", "d", "r"}`` (``r`` as a one-element list, as OFA writes it)."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": [self.r]}

    @classmethod
    def from_ofa_dict(cls, data: Mapping[str, Any], width: float | None = None,
                      default_width: float = 1.0) -> "ArchConfig":
        """Build from OFA's arch dict. Width: ``width`` if given, else the dict's ``width``, else
        ``default_width``."""
        if not isinstance(data, Mapping):
            raise ArchError(f"arch: expected a JSON object with ks, e, d, r; got {type(data).__name__}")
        missing = [k for k in ("ks", "e", "d", "r") if k not in data]
        if missing:
            raise ArchError(f"{missing[0]}: missing from the arch")
        unknown = sorted(set(data) - {"ks", "e", "d", "r", "width", "wid"})
        if unknown:
            raise ArchError(f"{unknown[0]}: unknown field in the arch")
        w = width if width is not None else data.get("width", default_width)
        return cls(data["ks"], data["e"], data["d"], data["r"], w)

    def to_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r, "width": self.width}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, width: float | None = None, default_width: float = 1.0) -> "ArchConfig":
        from .strict import FileFormatError, parse_json

        try:
            data = parse_json(text, "arch")
        except FileFormatError as exc:
            raise ArchError(str(exc)) from None
        return cls.from_ofa_dict(data, width, default_width)


def load_arch(path: str | os.PathLike, width: float | None = None, default_width: float = 1.0) -> ArchConfig:
    """Read an arch JSON file (OFA's dict, optionally with ``width``); errors name the file."""
    from .strict import FileFormatError, read_text

    try:
        text = read_text(path, "arch file")
    except FileFormatError as exc:
        raise ArchError(str(exc)) from None
    try:
        return ArchConfig.from_json(text, width, default_width)
    except ArchError as exc:
        raise ArchError(f"{path}: {exc}") from None


# --- populations as arrays ---------------------------------------------------------------------

@dataclass
class ArchBatch:
    """A population of subnets as integer arrays: ``ks``, ``e`` (N, 20), ``d`` (N, 5), ``r`` (N,)."""

    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray
    width: float = 1.0

    def __len__(self) -> int:
        return int(self.r.shape[0])

    def __getitem__(self, idx: Any) -> "ArchBatch":
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return ArchBatch(self.ks[idx], self.e[idx], self.d[idx], self.r[idx], self.width)

    @classmethod
    def from_configs(cls, archs: Sequence[ArchConfig]) -> "ArchBatch":
        if not archs:
            raise ArchError("archs: empty list")
        widths = {a.width for a in archs}
        if len(widths) != 1:
            raise ArchError(f"width: a batch must share one width multiplier, got {sorted(widths)}")
        return cls(np.array([a.ks for a in archs], dtype=np.int64), np.array([a.e for a in archs], dtype=np.int64),
                   np.array([a.d for a in archs], dtype=np.int64), np.array([a.r for a in archs], dtype=np.int64),
                   widths.pop())

    def to_configs(self) -> list[ArchConfig]:
        return [ArchConfig(tuple(k), tuple(e), tuple(d), int(r), self.width)
                for k, e, d, r in zip(self.ks.tolist(), self.e.tolist(), self.d.tolist(), self.r.tolist())]

    def active_mask(self) -> np.ndarray:
        """(N, 20) bool: which blocks run under each subnet's depth."""
        pos = np.arange(N_BLOCKS) % MAX_DEPTH
        depth = np.repeat(self.d, MAX_DEPTH, axis=1)
        return pos[None, :] < depth

    def canonical(self) -> "ArchBatch":
        m = self.active_mask()
        spec = space_for_width(self.width)
        return ArchBatch(np.where(m, self.ks, spec.ks_choices[0]), np.where(m, self.e, spec.e_choices[0]),
                         self.d.copy(), self.r.copy(), self.width)

    @staticmethod
    def concat(parts: Sequence["ArchBatch"]) -> "ArchBatch":
        return ArchBatch(np.concatenate([p.ks for p in parts]), np.concatenate([p.e for p in parts]),
                         np.concatenate([p.d for p in parts]), np.concatenate([p.r for p in parts]),
                         parts[0].width)


def as_batch(archs: "ArchBatch | ArchConfig | Sequence[ArchConfig]") -> ArchBatch:
    """Accept a batch, one config or a list of configs."""
    if isinstance(archs, ArchBatch):
        return archs
    if isinstance(archs, ArchConfig):
        return ArchBatch.from_configs([archs])
    return ArchBatch.from_configs(list(archs))


def sample_batch(rng: np.random.Generator, n: int, spec: SpaceSpec | None = None,
                 resolutions: Sequence[int] | None = None) -> ArchBatch:
    """``n`` subnets drawn uniformly per choice (OFA's sampler), seeded by ``rng``."""
    spec = spec or space_for_width(1.0)
    res = np.asarray(resolutions if resolutions is not None else spec.resolutions, dtype=np.int64)
    ks = np.asarray(spec.ks_choices)[rng.integers(0, len(spec.ks_choices), (n, N_BLOCKS))]
    e = np.asarray(spec.e_choices)[rng.integers(0, len(spec.e_choices), (n, N_BLOCKS))]
    d = np.asarray(spec.d_choices)[rng.integers(0, len(spec.d_choices), (n, N_STAGES))]
    r = res[rng.integers(0, len(res), n)]
    return ArchBatch(ks, e, d, r, spec.width_mult)


def sample_arch(rng: np.random.Generator, spec: SpaceSpec | None = None,
                resolutions: Sequence[int] | None = None) -> ArchConfig:
    return sample_batch(rng, 1, spec, resolutions).to_configs()[0]


def mutate_batch(rng: np.random.Generator, batch: ArchBatch, prob: float = 0.1,
                 resolutions: Sequence[int] | None = None) -> ArchBatch:
    """OFA's mutation: each block's ks and e, each stage's depth and the resolution re-drawn with ``prob``."""
    spec = space_for_width(batch.width)
    n = len(batch)
    fresh = sample_batch(rng, n, spec, resolutions if resolutions is not None else np.unique(batch.r))
    pick = lambda shape: rng.random(shape) < prob  # noqa: E731
    return ArchBatch(np.where(pick((n, N_BLOCKS)), fresh.ks, batch.ks), np.where(pick((n, N_BLOCKS)), fresh.e, batch.e),
                     np.where(pick((n, N_STAGES)), fresh.d, batch.d), np.where(pick(n), fresh.r, batch.r), batch.width)


def crossover_batch(rng: np.random.Generator, a: ArchBatch, b: ArchBatch) -> ArchBatch:
    """Uniform crossover: every gene taken from ``a`` or ``b`` with probability 1/2."""
    n = len(a)
    c = lambda shape: rng.random(shape) < 0.5  # noqa: E731
    return ArchBatch(np.where(c((n, N_BLOCKS)), a.ks, b.ks), np.where(c((n, N_BLOCKS)), a.e, b.e),
                     np.where(c((n, N_STAGES)), a.d, b.d), np.where(c(n), a.r, b.r), a.width)


def mutate_arch(rng: np.random.Generator, arch: ArchConfig, prob: float = 0.1,
                resolutions: Sequence[int] | None = None) -> ArchConfig:
    res = resolutions if resolutions is not None else arch.spec.resolutions
    return mutate_batch(rng, as_batch(arch), prob, res).to_configs()[0]


def crossover_arch(rng: np.random.Generator, a: ArchConfig, b: ArchConfig) -> ArchConfig:
    return crossover_batch(rng, as_batch(a), as_batch(b)).to_configs()[0]


# --- encodings ---------------------------------------------------------------------------------

_OFA_R_MIN, _OFA_R_STEP, _OFA_R_SLOTS = 112, 16, 8  # OFA's resolution one-hot: slot (r - 112) // 16 of 8
#: The resolutions each encoding covers: OFA's one-hot spans 112..239; ours any resolution an ArchConfig accepts.
ENCODING_RESOLUTIONS = {"ofa": range(_OFA_R_MIN, _OFA_R_MIN + _OFA_R_STEP * _OFA_R_SLOTS), "general": range(32, 1025)}


@functools.lru_cache(maxsize=None)
def _choice_lut(choices: tuple[int, ...]) -> np.ndarray:
    """value -> position in ``choices``; -1 at 0 and past the largest choice, where out-of-range values clip to."""
    lut = np.full(max(choices) + 2, -1, dtype=np.int64)
    lut[list(choices)] = np.arange(len(choices))
    lut.setflags(write=False)
    return lut


def _choice_index(name: str, values: np.ndarray, choices: tuple[int, ...]) -> np.ndarray:
    """Position of every value in ``choices`` (same shape, int64); ArchError naming the first value outside."""
    idx = np.take(_choice_lut(choices), values, mode="clip")
    if idx.size and idx.min() < 0:
        bad = np.asarray(values).reshape(-1)[int(np.argmax(idx.reshape(-1) < 0))]
        raise ArchError(f"{name}: {bad} is not one of {list(choices)}")
    return idx


def choice_indices(b: ArchBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of each block's kernel and expand in ``KS_CHOICES``/``E_CHOICES`` (N, 20) and of each stage's
    depth in ``D_CHOICES`` (N, 5). Values outside the choices raise ArchError, also in blocks the depth skips.
    The encoders place their one-hots with these; the accuracy predictor indexes its first-layer tables."""
    return (_choice_index("ks", b.ks, KS_CHOICES), _choice_index("e", b.e, E_CHOICES),
            _choice_index("d", b.d, D_CHOICES))


def check_encoded_resolutions(r: np.ndarray, encoding: str) -> None:
    """ArchError unless every resolution lies in ``ENCODING_RESOLUTIONS[encoding]``."""
    span = ENCODING_RESOLUTIONS[encoding]
    if r.size and (r.min() < span.start or r.max() >= span.stop):
        who = "OFA's encoding" if encoding == "ofa" else "the general encoding"
        raise ArchError(f"r: {who} covers resolutions {span.start}..{span.stop - 1} only")


def _scatter_one_hots(out: np.ndarray, col: int, idx: np.ndarray, n_choices: int,
                      on: np.ndarray | None = None) -> int:
    """One-hot ``idx`` (N, B) into the zeroed C-contiguous ``out`` (N, D) from column ``col``: sets
    ``out[n, col + j*n_choices + idx[n, j]]`` to 1, or to ``on[n, j]`` (False leaves the group all zero);
    returns the next free column."""
    flat = (np.arange(idx.shape[0]) * out.shape[1])[:, None] + (col + np.arange(idx.shape[1]) * n_choices) + idx
    out.reshape(-1)[flat] = 1.0 if on is None else on
    return col + idx.shape[1] * n_choices


def _block_one_hots(b: ArchBatch, out: np.ndarray) -> tuple[int, np.ndarray]:
    """The ks one-hots then the e one-hots (20 blocks x 3 each, skipped blocks all zero) into the zeroed ``out``;
    returns the next free column and the depth positions."""
    ks, e, d = choice_indices(b)
    active = b.active_mask()
    col = _scatter_one_hots(out, 0, ks, len(KS_CHOICES), active)
    return _scatter_one_hots(out, col, e, len(E_CHOICES), active), d


def encode_ofa(archs: "ArchBatch | Sequence[ArchConfig]") -> np.ndarray:
    """OFA's 128-dim encoding: ks one-hot (20x3), e one-hot (20x3), skipped blocks zero, r one-hot at (r-112)//16."""
    b = as_batch(archs)
    check_encoded_resolutions(b.r, "ofa")
    out = np.zeros((len(b), 128), dtype=np.float32)
    col, _ = _block_one_hots(b, out)
    _scatter_one_hots(out, col, ((b.r - _OFA_R_MIN) // _OFA_R_STEP)[:, None], _OFA_R_SLOTS)
    return out


def encode_general(archs: "ArchBatch | Sequence[ArchConfig]") -> np.ndarray:
    """Our own encoding (137 floats): ks and e one-hot per block (skipped blocks zero), depth one-hot per stage,
    and the resolution scaled to [0, 1] over 128..224 plus its square (effects grow with pixel count)."""
    b = as_batch(archs)
    check_encoded_resolutions(b.r, "general")
    out = np.zeros((len(b), 137), dtype=np.float32)
    col, d = _block_one_hots(b, out)
    _scatter_one_hots(out, col, d, len(D_CHOICES))
    r = (b.r.astype(np.float32) - 128.0) / 96.0
    out[:, -2] = r
    out[:, -1] = r * r
    return out
