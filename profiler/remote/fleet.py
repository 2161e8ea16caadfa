"""Profile boards over SSH: one board or a fleet in parallel, with one progress display and a summary table.

Each board goes through the same pipeline as this CPU (``ofakit profile``'s request, Builder, journal, profile
assembly, calibration) with an :class:`SSHRunner` in place of the local runner, its own journal
(``cache/work/<profile name>/``, so re-running resumes) and its own profile, named
``<board>-<backend>-<threads>t`` from the inventory. Op models are built on the host once per backend before the
boards start (boards that share a backend share the model files); boards then run in parallel threads.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.ops import enumerate_ops
from ofakit.ofa_core.space import space_for_width
from ofakit.profiler.backends import get_backend
from ofakit.profiler.builder import Builder
from ofakit.profiler.devices import RemoteSettings, Runner, board_target
from ofakit.profiler.items import Item
from ofakit.profiler.pipeline import ProfileRequest

from .inventory import Device

log = logging.getLogger("ofakit.remote")


@dataclass
class BoardOutcome:
    """How one board's profiling ended."""

    device: str
    profile: str
    folder: Path | None = None
    measured: int = 0
    interpolated: int = 0
    failed: int = 0
    seconds: float = 0.0
    thermal: dict[str, Any] | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def request_items(req: ProfileRequest) -> list[Item]:
    """The items :func:`profile_device` measures for ``req`` (ops at the measured resolutions + calibration)."""
    ops = enumerate_ops(space_for_width(req.width), req.measured_resolutions())
    return [Item.op(op) for op in ops.values()] + [Item.subnet(a) for a in req.calibration_archs()]


class FleetDisplay:
    """One rich progress display for all boards (a bar each) and the final summary table."""

    def __init__(self, devices: Sequence[Device], console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("{task.fields[device]:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), console=self.console)
        self.tasks = {d.name: self.progress.add_task("waiting", total=None, device=d.name) for d in devices}

    def __enter__(self) -> "FleetDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def status(self, device: str, text: str) -> None:
        self.progress.update(self.tasks[device], description=text[:70])

    def finish(self, device: str) -> None:
        task = self.progress.tasks[self.tasks[device]]
        total = task.total or max(task.completed, 1)
        self.progress.update(self.tasks[device], total=total, completed=total, description="done")

    def event(self, kind: str, data: dict) -> None:
        dev = data["device"]
        if kind == "result":
            self.progress.update(self.tasks[dev], completed=data["done"], total=data["total"])
        elif kind == "state" and data.get("temperatures_c"):
            self.status(dev, f"measuring, {max(data['temperatures_c'].values()):.0f} C")
        elif kind in ("upload", "uploaded", "measure", "reconnect"):
            text = {"upload": "checking/uploading models", "measure": "measuring",
                    "uploaded": f"uploaded {data.get('sent')} of {data.get('files')} files",
                    "reconnect": f"link lost, reconnect {data.get('attempt')} in {data.get('wait_s', 0):.0f}s"}[kind]
            self.status(dev, text)

    def summary(self, outcomes: Sequence[BoardOutcome]) -> None:
        from rich.table import Table

        table = Table(title="boards")
        for col in ("device", "profile", "measured", "failed", "max temp", "throttled", "time", "result"):
            table.add_column(col)
        for o in outcomes:
            th = o.thermal or {}
            temp = f"{th['max_temp_c']:.1f} C" if th.get("max_temp_c") is not None else "n/a"
            thr = {None: "n/a", True: "YES", False: "no"}[th.get("throttled_during_run")]
            result = f"[green]{o.folder}[/green]" if o.ok else f"[red]{o.error}[/red]"
            table.add_row(o.device, o.profile, str(o.measured), str(o.failed), temp, thr, f"{o.seconds:.0f} s", result)
        self.console.print(table)


def profile_boards(boards: Sequence[tuple[Device, ProfileRequest]], remote: RemoteSettings,
                   run_one: Callable[[ProfileRequest, Runner, Callable[[str], None]], Path], *,
                   console: Any = None, raise_single: bool = True) -> list[BoardOutcome]:
    """Profile boards in parallel, each with its own request (device, backend and threads filled in; used to
    build the models once per backend before the boards start). ``run_one(request, runner, log)`` profiles one
    board with the runner :func:`ofakit.profiler.devices.board_target` gives it and returns the saved profile's folder.
    With one board and ``raise_single`` its error is raised (one clear line); otherwise errors land in the
    outcomes and the summary table."""
    from ofakit.device_profiles import load_profile

    if not boards:
        raise UserError("no devices to profile")
    devices = [d for d, _ in boards]
    reqs = {d.name: r for d, r in boards}
    names = [r.profile_name for r in reqs.values()]
    if len(set(names)) != len(names):
        raise UserError(f"two boards would write the same profile ({names}); give them different names")
    display = FleetDisplay(devices, console)
    outcomes = {d.name: BoardOutcome(d.name, reqs[d.name].profile_name) for d in devices}
    errors: dict[str, BaseException] = {}

    def one(dev: Device) -> None:
        req, out = reqs[dev.name], outcomes[dev.name]
        t0 = time.perf_counter()
        try:
            target = board_target(dev, req.backend, req.threads, remote, on_event=display.event)
            out.folder = run_one(req, target.runner, lambda s: display.status(dev.name, s))
            prof = load_profile(out.folder)
            out.thermal = prof.meta.environment.get("thermal")
            out.failed = len(prof.meta.errors)
            out.measured = sum(1 for r in prof if r.rounds != 0)
            out.interpolated = len(prof) - out.measured
            display.finish(dev.name)
        except Exception as exc:  # noqa: BLE001 - one board's failure must not stop the others; reported below
            errors[dev.name] = exc
            out.error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            log.debug("%s failed", dev.name, exc_info=True)
            display.status(dev.name, "failed")
        finally:
            out.seconds = time.perf_counter() - t0

    with display:
        _prebuild(list(reqs.values()), display, [d.name for d in devices])
        threads = [threading.Thread(target=one, args=(d,), name=f"ofakit-{d.name}") for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    result = [outcomes[d.name] for d in devices]
    if len(devices) == 1 and raise_single and errors:
        raise next(iter(errors.values()))
    display.summary(result)
    return result


def _prebuild(reqs: Sequence[ProfileRequest], display: FleetDisplay, names: Sequence[str]) -> None:
    """Build every board's models once per backend (boards sharing a backend share the files)."""
    by_backend: dict[str, dict[str, Item]] = {}
    for r in reqs:
        by_backend.setdefault(r.backend, {}).update({it.id: it for it in request_items(r)})
    for backend, items in by_backend.items():
        builder = Builder(get_backend(backend), None, max(r.build_jobs for r in reqs))

        def shown(k: int, n: int, b: str = backend) -> None:
            for name in names:
                display.status(name, f"building {b} models {k}/{n}")
        builder.build(list(items.values()), shown)
