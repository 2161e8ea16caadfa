"""Devices and their runners: one resolver from a device name to the runner that measures on it.

A device name is this machine's CPU (``cpu``), its CUDA GPU (``gpu``, with a GPU backend) or a board of the
device inventory (reached over SSH; a fleet is several boards). :func:`resolve` turns a name into a
:class:`Target` (device, backend, threads and a :class:`Runner`); every profiling, validation and recalibration
path measures through it, so a new kind of device is one more branch of :func:`resolve` plus its runner file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, Sequence, runtime_checkable

from ofakit.ofa_core.errors import UserError, literal

from .agent import ofakit_agent as agent
from .backends import get_backend
from .runner import LOCAL_DEVICES, LocalRunner

if TYPE_CHECKING:
    from .remote.inventory import Device
    from .remote.ssh import SSHOptions

EventHook = Callable[[str, dict], None]


@runtime_checkable
class Runner(Protocol):
    """Times built model files on a device and journals every result (TVM's Runner)."""

    threads: int

    def measure(self, models: Mapping[str, str], journal: str | os.PathLike, job: agent.JobSettings,
                progress: agent.Progress | None = None) -> dict[str, agent.Summary]:
        """Time ``models`` ({item id: model path}) in interleaved rounds, journaling to ``journal``."""
        ...

    def environment(self) -> dict[str, Any]:
        """What the profile records about the device (CPU model, runtime versions, ...)."""
        ...


@dataclass(frozen=True)
class RemoteSettings:
    """How boards are reached: the inventory file (None: the default one) and the SSH connection policy."""

    inventory: Optional[Path] = None
    accept_new_host_key: bool = False
    connect_timeout: float = 10.0
    retries: int = 3
    reconnects: int = 3  # reconnections after a dropped link during a measurement

    def ssh_options(self) -> "SSHOptions":
        from .remote.ssh import ssh_options

        return ssh_options(connect_timeout=self.connect_timeout, retries=self.retries,
                           accept_new_host_key=self.accept_new_host_key)


@dataclass(frozen=True)
class Target:
    """A resolved device: what measures (``runner``) and with which backend and thread count."""

    device: str
    backend: str
    threads: int
    runner: Runner


def is_local(device: Optional[str]) -> bool:
    """Whether ``device`` names this machine (its CPU or GPU) rather than a board."""
    return device in LOCAL_DEVICES


def board(name: str, remote: RemoteSettings = RemoteSettings()) -> "Device":
    """The inventory's board ``name`` (the error says what device names exist)."""
    from .remote.inventory import InventoryError, load_inventory

    try:
        inv = load_inventory(remote.inventory)
    except InventoryError as exc:
        if remote.inventory is None:
            here = " and ".join(map(repr, LOCAL_DEVICES))
            prefix = f"unknown device {name!r}: {here} are this machine and boards come from the device inventory"
            raise UserError(f"{literal(prefix)} ({exc.template if exc.params else literal(str(exc))})",
                            params=exc.params) from None
        raise
    return inv.get(name)


def select_boards(names: Sequence[str] = (), tag: Optional[str] = None,
                  remote: RemoteSettings = RemoteSettings()) -> list["Device"]:
    """The boards named in ``names`` plus those with ``tag`` (a fleet), in order, each once."""
    from .remote.inventory import load_inventory

    if len(names) == 1 and tag is None:
        return [board(names[0], remote)]
    return load_inventory(remote.inventory).select(names, tag)


def resolve(device: str, backend: Optional[str] = None, threads: Optional[int] = None,
            remote: RemoteSettings = RemoteSettings(), on_event: Optional[EventHook] = None) -> Target:
    """The runner that measures on ``device``. Defaults: this machine's CPU onnxruntime (GPU torch-cuda), 1
    thread; a board's backend and threads from the inventory. ``on_event``: a board runner's progress hook."""
    if is_local(device):
        bk = get_backend(backend or LOCAL_DEVICES[device])
        if bk.device != device:
            raise UserError(f"backend {bk.name!r} measures on the {bk.device}, not on {device!r} "
                            f"(GPU backends: torch-cuda[-graph][-b64], onnxruntime-cuda)")
        return Target(device, bk.name, threads or 1, LocalRunner(bk, threads or 1))
    return board_target(board(device, remote), backend, threads, remote, on_event)


def board_target(dev: "Device", backend: Optional[str] = None, threads: Optional[int] = None,
                 remote: RemoteSettings = RemoteSettings(), on_event: Optional[EventHook] = None) -> Target:
    """A board's :class:`Target` (an SSH runner; backend and threads default to the inventory's)."""
    from .remote.runner import SSHRunner

    backend, threads = backend or dev.backend, threads or dev.threads
    runner = SSHRunner(dev, get_backend(backend), remote.ssh_options(), remote.reconnects, threads=threads,
                       on_event=on_event)
    return Target(dev.name, backend, threads, runner)
