"""One registry of latency predictors, used by ``predict``, ``search`` and ``validate``.

A predictor class registers itself with ``@register_predictor(name)``: built from a device profile
(``cls(profile)``, e.g. ``lut``, ``calibrated``) or, with ``saved=True``, loaded from a folder it saved
(``cls.load(folder)``; ``name`` is the folder's recorded kind, e.g. ``few-shot``). :func:`list_predictors` lists
them, :func:`create_predictor` makes one from a name or a saved folder, :func:`default_predictor` is the one
default everywhere: ``calibrated`` where the profile has a calibration, else ``lut``.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import os
import pkgutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from ofakit.ofa_core.errors import UserError

from .base import Predictor

if TYPE_CHECKING:
    from ofakit.device_profiles import Profile

C = TypeVar("C", bound=type)
# modules without latency predictors (accuracy would import torch)
_INFRASTRUCTURE = {"base", "registry", "persist", "metrics", "features", "accuracy", "constraints"}


@dataclass(frozen=True)
class PredictorEntry:
    """A registered latency predictor: its class and how it is made (from a profile, or loaded from a folder)."""

    name: str
    cls: type
    saved: bool = False


_REGISTRY: dict[str, PredictorEntry] = {}


def register_predictor(name: str, saved: bool = False) -> Callable[[C], C]:
    """Class decorator: make ``cls`` available as latency predictor ``name`` (a warning if the name is taken)."""
    def deco(cls: C) -> C:
        old = _REGISTRY.get(name)
        if old is not None and old.cls is not cls:
            warnings.warn(f"latency predictor {name!r} registered twice: {old.cls.__qualname__} is replaced by "
                          f"{cls.__qualname__}", RuntimeWarning, stacklevel=2)
        _REGISTRY[name] = PredictorEntry(name, cls, saved)
        return cls
    return deco


def _load_all() -> None:
    """Import every predictor module of this package (each registers its classes)."""
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{__package__}.{mod.name}")


def _entry(name: str) -> Optional[PredictorEntry]:
    if name not in _REGISTRY:
        importlib.import_module(f"{__package__}.lut")  # the defaults, without the heavier modules
    if name not in _REGISTRY:
        _load_all()
    return _REGISTRY.get(name)


def list_predictors(pattern: str = "*", saved: Optional[bool] = None) -> list[str]:
    """Registered latency predictor names matching the shell-style ``pattern`` (``saved``: only those built from
    a profile (False) or loaded from a folder (True))."""
    _load_all()
    return sorted(n for n, e in _REGISTRY.items()
                  if fnmatch.fnmatchcase(n, pattern) and (saved is None or e.saved == saved))


def default_predictor(profile: "Profile") -> str:
    """The default latency predictor of ``profile``: ``calibrated`` when it has a calibration, else ``lut``."""
    return "calibrated" if profile.meta.calibration else "lut"


def is_predictor_folder(spec: str) -> bool:
    """Whether ``spec`` reads as the path of a saved predictor (not a registered name)."""
    return os.sep in spec or "/" in spec or spec.endswith(".json") or os.path.isdir(spec)


def load_saved_predictor(path: str | os.PathLike) -> Predictor:
    """Load any saved latency predictor folder, dispatching on its recorded kind."""
    from .persist import META_FILE, resolve_bundle

    from ofakit.ofa_core.strict import load_json

    folder = resolve_bundle(path)
    body = load_json(folder / META_FILE, "predictor metadata")
    kind = body.get("kind") if isinstance(body, dict) else None
    entry = _entry(kind) if isinstance(kind, str) else None
    if entry is None or not entry.saved:
        raise UserError(f"{folder}: a {kind!r} predictor cannot predict latency (known: "
                        f"{', '.join(list_predictors(saved=True))})")
    return entry.cls.load(folder)


def create_predictor(spec: Optional[str] = None, profile: "Profile | None" = None) -> Predictor:
    """A latency predictor: ``spec`` a registered name built on ``profile`` (None: :func:`default_predictor`),
    or a saved predictor (self-contained: it does not use ``profile``) given by folder or by its name in the
    user's profile folder."""
    if spec is None:
        if profile is None:
            raise UserError("a latency predictor needs a device profile or a saved predictor folder")
        spec = default_predictor(profile)
    entry = _entry(spec)
    if entry is not None and not entry.saved:
        if profile is None:
            raise UserError(f"predictor {spec!r} needs a device profile")
        return entry.cls(profile)
    if is_predictor_folder(spec):
        return load_saved_predictor(spec)
    from ofakit.device_profiles.store import find

    saved = find(spec, "predictor.json")
    if saved is not None:
        return load_saved_predictor(saved)
    raise UserError(f"predictor: {spec!r} is neither a known name ({', '.join(list_predictors(saved=False))}) "
                    f"nor a saved predictor (a folder, or a name in your profile folder)")


@functools.cache
def _not_fitted_class(base: type) -> type:
    from sklearn.exceptions import NotFittedError

    return type("NotFittedError", (NotFittedError, base), {"__module__": __name__})


def not_fitted(message: str, base: type[UserError] = UserError) -> Exception:
    """An error that is scikit-learn's :class:`~sklearn.exceptions.NotFittedError` (so sklearn tools recognise it)
    and a :class:`~ofakit.ofa_core.errors.UserError` ``base`` (so the CLI prints it as one line); sklearn is imported
    only here."""
    return _not_fitted_class(base)(message)
