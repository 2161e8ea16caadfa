"""Emulated ARM boards for the tests (see boards/board.sh): ``make board-ARCH`` for both boards at once, so the two
root file systems build in parallel, started when the session starts (conftest.py) so that the builds overlap the
other tests, and stopped when it ends (pytest_sessionfinish), whatever happened to their tests."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("arm64", "armhf")
START_TIMEOUT_S = 1800  # first start: debootstrap of both roots at once on a loaded 2-core machine
NOT_ROOT = "an emulated board needs root (chroot, mount, binfmt_misc): run the tests as root"


@contextmanager
def timed(arch: str, step: str) -> Iterator[None]:
    """Print the wall time of one step (shown with ``pytest -s``; BENCHMARKS.md quotes these)."""
    t0 = time.perf_counter()
    yield
    print(f"board {arch}: {step} took {time.perf_counter() - t0:.1f} s", file=sys.__stderr__)  # past capsys


class Boards:
    """``make board-ARCH`` for every board at once (the roots build in parallel), waited for board by board."""

    def __init__(self) -> None:
        self._logs = tempfile.TemporaryDirectory(prefix="ofakit-boards-")
        self.logs = Path(self._logs.name)
        self.procs: dict[str, subprocess.Popen] = {}
        self.started: dict[str, Path | str] = {}

    def start_all(self) -> None:
        for arch in ARCHES:
            with open(self.logs / f"{arch}.log", "wb") as log:
                # stop first: a board someone left running is not fresh
                self.procs[arch] = subprocess.Popen(["sh", "-c", f"make -s board-{arch}-stop && make -s board-{arch}"],
                                                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def inventory(self, arch: str) -> Path:
        """The board's inventory file, or a skip naming why the board cannot run here."""
        if arch not in self.started:
            with timed(arch, "waiting for make board-" + arch):
                rc = self.procs[arch].wait(START_TIMEOUT_S)
            out = (self.logs / f"{arch}.log").read_text(errors="replace")
            print(out, file=sys.__stderr__)  # per-step wall times of the build and start
            if rc == 0:
                self.started[arch] = REPO / ".boards" / arch / "devices.yaml"
            else:
                reason = [line for line in out.splitlines() if "cannot run here" in line]
                assert reason, f"make board-{arch} failed (exit {rc}):\n{out[-3000:]}"
                self.started[arch] = reason[-1]
        found = self.started[arch]
        if isinstance(found, str):
            pytest.skip(found)
        return found

    def stop_all(self) -> None:
        for arch, proc in self.procs.items():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)
            subprocess.run(["make", "-s", f"board-{arch}-stop"], cwd=REPO, capture_output=True, timeout=120)
        self._logs.cleanup()


def board_dir(arch: str) -> Path:
    """The running board's file system, as boards/board.sh mounts it."""
    cache = Path(os.environ.get("OFAKIT_BOARD_CACHE", Path.home() / ".cache" / "ofakit" / "boards"))
    return cache / arch / "board"


def board_connection_pids(arch: str) -> list[int]:
    """The board's per-connection sshd processes (children of its listening sshd)."""
    listener = (board_dir(arch) / "run" / "ofakit-sshd.pid").read_text().strip()
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == listener:
            pids.append(int(stat.parent.name))
    return pids


