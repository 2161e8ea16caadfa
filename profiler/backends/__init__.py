"""Measurement backends: one file per backend, registered by decorator.

A backend says how the host builds an item into a model file (:meth:`Backend.build`) and which command starts
the timing worker that loads and times such files (:meth:`Backend.worker_argv`). Every module in this package
is imported by :func:`get_backend`, so adding a backend means adding one file with a ``@register_backend`` class.
A backend with options takes them as a name suffix (``torch-cuda-graph-b64`` is ``torch-cuda`` with options
``graph-b64``, see :meth:`Backend.from_options`), so the name alone says what was measured.

The backend class is the one source of its runtime's metadata: the modules that provide it
(``runtime_modules``, tried in order), its pip name (``pip_name``) and whether boards can run it
(``on_boards``: the agent file times it with its own stdlib+numpy worker). Inventory checks, ``ofakit devices
check`` hints and the board probe all derive from these (:func:`board_backends`).
"""
from __future__ import annotations

import fnmatch
import importlib
import pkgutil
import sys
import warnings
from typing import Any, Callable, TypeVar

from ofakit.ofa_core.errors import UserError

from ..agent import AGENT_FILE
from ..items import Item

_REGISTRY: dict[str, type["Backend"]] = {}
B = TypeVar("B", bound=type)


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: make ``cls`` available as backend ``name``."""
    def deco(cls: B) -> B:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            warnings.warn(f"backend {name!r} registered twice: {_REGISTRY[name].__qualname__} is replaced by "
                          f"{cls.__qualname__}", RuntimeWarning, stacklevel=2)
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


class Backend:
    """Base class. ``format`` names the model files (and the exporter in :data:`ofakit.ofa_core.export.EXPORTERS`)."""

    name: str = ""
    format: str = ""
    suffix: str = ""
    device: str = "cpu"  # what it measures on: "cpu" (this machine's or a board's) or "gpu"
    runtime_modules: tuple[str, ...] = ()  # modules that provide the runtime, preferred first
    pip_name: str = ""  # what to pip-install for the runtime
    on_boards: bool = False  # the agent file times it on boards (stdlib + numpy + the runtime module)

    @classmethod
    def from_options(cls, text: str) -> "Backend | None":
        """An instance configured by a name suffix (``graph-b64`` of ``torch-cuda-graph-b64``); None when this
        backend takes no options. Raise :class:`UserError` for a bad suffix."""
        return None

    def describe(self) -> dict[str, Any]:
        """Profile metadata this backend fixes (``mode``, ``batch``, ``input``, ...); empty: the defaults."""
        return {}

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (a one-line hint), or None when it can."""
        return None

    batch: int = 1  # the batch size model files are built for

    @property
    def direct(self) -> bool:
        """Whether model files are built straight from the item's ops (:mod:`ofakit.ofa_core.direct`, milliseconds
        each, weights drawn from the item's seed) rather than exported from torch. A direct build also writes
        the file's packed form (``<file>.ofz``, weights left out) beside it: what a board is sent."""
        from ofakit.ofa_core.direct import BUILDERS

        return self.format in BUILDERS

    def build(self, item: Item, path: str) -> None:
        """Write ``item`` as a model file at ``path`` (atomically)."""
        if self.direct:
            from ofakit.ofa_core.direct import BUILDERS, PACKED_SUFFIX

            BUILDERS[self.format](item.ops(), path, seed=item.seed, batch=self.batch, pack_to=path + PACKED_SUFFIX)
            return
        import torch

        from ofakit.ofa_core.export import EXPORTERS

        module, example = item.module()
        EXPORTERS[self.format](module, torch.randn(self.batch, *example.shape[1:]), path)

    def build_tag(self) -> str:
        """Changes whenever files built by this backend would differ (names the model cache folder)."""
        if self.direct:
            from ofakit.ofa_core.direct import BUILD_VERSION

            return f"{self.format}-direct{BUILD_VERSION}"
        import torch

        return f"{self.format}-torch{torch.__version__.split('+')[0]}"

    def worker_argv(self, threads: int) -> list[str]:
        """Command starting a timing worker (default: the agent file's own worker for this backend)."""
        return [sys.executable, str(AGENT_FILE), "worker", "--backend", self.name, "--threads", str(threads)]

    def versions(self) -> dict[str, str]:
        from ..agent.ofakit_agent import runtime_versions

        return runtime_versions(self.name)


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def _with_options(name: str) -> Backend | None:
    """``BASE-OPTIONS`` for the longest registered BASE that takes options (None when none does)."""
    for base in sorted((b for b in _REGISTRY if name.startswith(b + "-")), key=len, reverse=True):
        backend = _REGISTRY[base].from_options(name[len(base) + 1:])
        if backend is not None:
            backend.name = name
            return backend
    return None


def list_backends(pattern: str = "*") -> list[str]:
    """Registered backend names matching the shell-style ``pattern``."""
    _load_all()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name`` (no availability check: e.g. a board's runtime may be missing here)."""
    _load_all()
    if name not in _REGISTRY:
        raise UserError(f"unknown backend {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def board_backends() -> dict[str, type[Backend]]:
    """The backends boards can run, by name."""
    _load_all()
    return {n: c for n, c in sorted(_REGISTRY.items()) if c.on_boards}


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; :class:`UserError` for an unknown or unusable one."""
    _load_all()
    backend = _REGISTRY[name]() if name in _REGISTRY else _with_options(name)
    if backend is None:
        raise UserError(f"unknown backend {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    why = backend.unavailable()
    if why:
        raise UserError(f"backend {name!r} cannot run here: {why}")
    return backend
