"""Training configuration: one YAML file holds every phase of a progressive-shrinking schedule.

Configs are frozen dataclasses parsed from plain YAML mappings by :func:`parse_config`; every field is type-
checked and range-checked, and a mistake raises :class:`~ofakit.ofa_core.errors.UserError` naming the field
(``phases[2].lr: must be > 0``). Shipped schedules live in ``ofa_core/configs/*.yaml`` (:func:`builtin_config`).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

from ..errors import UserError
from ..space import D_CHOICES, E_CHOICES, KS_CHOICES
from ..strict import load_yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PhaseConfig:
    """One phase of progressive shrinking: which choices are elastic and how long/fast to train them.

    ``batch_size`` is the global batch (split evenly over the ranks of a distributed run); ``lr`` is the peak of
    the phase's cosine schedule (after ``warmup_epochs`` of linear warm-up); ``subnets_per_step`` subnets are
    sampled per step and their gradients summed; ``kd_ratio`` weighs distillation from the full network trained
    by the first phase; ``reorganize_channels`` sorts the middle channels by importance before the phase starts.
    """

    name: str
    epochs: int
    lr: float
    batch_size: int
    resolutions: tuple[int, ...]
    ks: tuple[int, ...] = KS_CHOICES
    e: tuple[int, ...] = E_CHOICES
    d: tuple[int, ...] = D_CHOICES
    subnets_per_step: int = 1
    kd_ratio: float = 0.0
    warmup_epochs: int = 0
    reorganize_channels: bool = False

    def validate(self, where: str) -> None:
        _check(bool(_NAME_RE.fullmatch(self.name)), f"{where}.name",
               f"must be letters, digits, '_', '.', '-' (a folder name), got {self.name!r}")
        _check(self.epochs >= 1, f"{where}.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.lr > 0, f"{where}.lr", f"must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"{where}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(bool(self.resolutions), f"{where}.resolutions", "must list at least one resolution")
        for r in self.resolutions:
            _check(32 <= r <= 1024, f"{where}.resolutions", f"{r} is outside [32, 1024]")
        for name, allowed in (("ks", KS_CHOICES), ("e", E_CHOICES), ("d", D_CHOICES)):
            vals = getattr(self, name)
            _check(bool(vals), f"{where}.{name}", "must list at least one choice")
            bad = [v for v in vals if v not in allowed]
            _check(not bad, f"{where}.{name}", f"{bad[0] if bad else ''} is not one of {list(allowed)}")
            _check(len(set(vals)) == len(vals), f"{where}.{name}", f"repeated choice in {list(vals)}")
        _check(self.subnets_per_step >= 1, f"{where}.subnets_per_step", f"must be >= 1, got {self.subnets_per_step}")
        _check(self.kd_ratio >= 0, f"{where}.kd_ratio", f"must be >= 0, got {self.kd_ratio}")
        _check(0 <= self.warmup_epochs < self.epochs, f"{where}.warmup_epochs",
               f"must be in [0, epochs), got {self.warmup_epochs}")

    @property
    def is_full_network(self) -> bool:
        return self.ks == (max(KS_CHOICES),) and self.e == (max(E_CHOICES),) and self.d == (max(D_CHOICES),)


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how the training set is split.

    ``source`` is ``fashion-mnist`` (Debian's dataset-fashion-mnist) or an image folder (one sub-folder per
    class). ``holdout`` training images are held out for accuracy (never the test split); ``calib_images``
    other training images re-estimate BatchNorm statistics of a subnet; ``train_subset`` and ``eval_images``
    cap the images used (small runs). ``crop_scale`` is the random-resized-crop area range for training;
    ``center_crop`` the fraction of the shorter side kept at evaluation.
    """

    source: str = "fashion-mnist"
    holdout: int = 10000
    split_seed: int = 0
    train_subset: Union[int, None] = None
    eval_images: Union[int, None] = None
    calib_images: int = 2000
    crop_scale: tuple[float, float] = (0.08, 1.0)
    center_crop: float = 0.875
    workers: int = 4

    def validate(self, where: str) -> None:
        _check(bool(self.source.strip()), f"{where}.source", "must name fashion-mnist or an image folder")
        _check(self.holdout >= 1, f"{where}.holdout", f"must be >= 1, got {self.holdout}")
        for name in ("train_subset", "eval_images"):
            v = getattr(self, name)
            _check(v is None or v >= 1, f"{where}.{name}", f"must be >= 1 or null, got {v}")
        _check(self.calib_images >= 1, f"{where}.calib_images", f"must be >= 1, got {self.calib_images}")
        lo, hi = self.crop_scale
        _check(0 < lo <= hi <= 1, f"{where}.crop_scale", f"must satisfy 0 < min <= max <= 1, got {[lo, hi]}")
        _check(0 < self.center_crop <= 1, f"{where}.center_crop", f"must be in (0, 1], got {self.center_crop}")
        _check(self.workers >= 1, f"{where}.workers", f"must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class OptimConfig:
    """SGD with (Nesterov) momentum; weight decay skips BatchNorm and bias parameters (as OFA does)."""

    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1

    def validate(self, where: str) -> None:
        _check(0 <= self.momentum < 1, f"{where}.momentum", f"must be in [0, 1), got {self.momentum}")
        _check(not self.nesterov or self.momentum > 0, f"{where}.nesterov", "needs momentum > 0")
        _check(self.weight_decay >= 0, f"{where}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.label_smoothing < 1, f"{where}.label_smoothing",
               f"must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class EvalConfig:
    """What is evaluated after each phase: the largest and smallest subnets and ``n_random`` random ones."""

    n_random: int = 10
    batch_size: int = 200

    def validate(self, where: str) -> None:
        _check(self.n_random >= 0, f"{where}.n_random", f"must be >= 0, got {self.n_random}")
        _check(self.batch_size >= 1, f"{where}.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole progressive-shrinking run. The first phase trains the full network when any phase distils."""

    phases: tuple[PhaseConfig, ...]
    seed: int = 0
    width: float = 1.0
    dropout: float = 0.1
    save_every_steps: int = 100
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        _check(0 < self.width <= 4, "width", f"must be in (0, 4], got {self.width}")
        _check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.save_every_steps >= 1, "save_every_steps", f"must be >= 1, got {self.save_every_steps}")
        self.data.validate("data")
        self.optim.validate("optim")
        self.eval.validate("eval")
        _check(bool(self.phases), "phases", "must list at least one phase")
        seen: set[str] = set()
        for i, p in enumerate(self.phases):
            p.validate(f"phases[{i}]")
            _check(p.name not in seen, f"phases[{i}].name", f"{p.name!r} is used by an earlier phase")
            seen.add(p.name)
            _check(p.kd_ratio == 0 or (i > 0 and self.phases[0].is_full_network), f"phases[{i}].kd_ratio",
                   "distillation needs phases[0] to train the full network (ks [7], e [6], d [4]) as the teacher")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Every resolution any phase trains at, sorted."""
        return tuple(sorted({r for p in self.phases for r in p.resolutions}))

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def replace_data(self, **changes: Any) -> "TrainConfig":
        cfg = dataclasses.replace(self, data=dataclasses.replace(self.data, **changes))
        cfg.validate()
        return cfg


# --- parsing -----------------------------------------------------------------------------------------

def _check(ok: bool, where: str, msg: str) -> None:
    if not ok:
        raise UserError(f"{where}: {msg}")


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _describe(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples, ints to floats."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where)
    if dataclasses.is_dataclass(tp):
        return _parse(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r}")  # a programming error, not a user one


def _parse(cls: type, data: Any, where: str) -> Any:
    prefix = f"{where}." if where else ""
    if not isinstance(data, Mapping):
        raise UserError(f"{where or 'config'}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise UserError(f"{prefix}{unknown[0]}: unknown field (expected one of {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{prefix}{name}: missing")
    return cls(**kwargs)


def parse_config(data: Any) -> TrainConfig:
    """A validated :class:`TrainConfig` from a plain mapping (YAML/JSON), phases given as a list."""
    if isinstance(data, Mapping) and isinstance(data.get("phases"), list):
        data = dict(data)
        data["phases"] = [dict(p) if isinstance(p, Mapping) else p for p in data["phases"]]
    cfg = _parse(TrainConfig, data, "")
    cfg.validate()
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML config; errors name the file and the field."""
    data = load_yaml(path, "config")
    try:
        return parse_config(data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def builtin_config(name: str) -> Path:
    """Path of a shipped schedule (``ofa_core/configs/NAME.yaml``)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise UserError(f"config {name!r}: no such built-in schedule (have {', '.join(names)})")
    return path


def resolve_config(name_or_path: str) -> Path:
    """A YAML path as given, or the shipped schedule of that name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return builtin_config(name_or_path)
