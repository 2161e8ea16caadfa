"""The host-side Builder: turns items into model files for a backend, cached by item id and build tag.

A model file is built once per (item, backend format, builder version) and reused by every later run. Files
built straight from the ops (:mod:`ofakit.ofa_core.direct`) are written in-process; torch exports run in a small
process pool (each worker single-threaded torch). A failed build is a :class:`BuildResult` with
an error message, never an exception, so the run goes on and the failure lands in the journal as BUILD_ERROR.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .backends import Backend, get_backend
from .items import Item

POOL_THRESHOLD = 8  # fewer missing files than this are built in-process (a worker start costs ~2 s)


def cache_root() -> Path:
    """``$OFAKIT_CACHE_DIR``, else ``~/.cache/ofakit``."""
    env = os.environ.get("OFAKIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ofakit"


@dataclass
class BuildResult:
    item: Item
    path: str
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


class Builder:
    """Builds items for ``backend`` into ``cache_dir/models/<build tag>/``."""

    def __init__(self, backend: Backend, cache_dir: str | os.PathLike | None = None, jobs: int = 2):
        self.backend = backend
        self.folder = Path(cache_dir or cache_root()) / "models" / backend.build_tag()
        self.jobs = max(1, int(jobs))

    def path_for(self, item: Item) -> Path:
        return self.folder / item.filename(self.backend.suffix)

    def build(self, items: Sequence[Item], progress: Callable[[int, int], None] | None = None
              ) -> dict[str, BuildResult]:
        """Model files for ``items`` (built when not cached). Keys are item ids."""
        self.folder.mkdir(parents=True, exist_ok=True)
        out = {it.id: BuildResult(it, str(self.path_for(it))) for it in items}
        missing = [r for r in out.values() if not os.path.exists(r.path)]
        if not missing:
            return out
        tasks = [{"backend": self.backend.name, "kind": r.item.kind, "spec": r.item.spec, "path": r.path}
                 for r in missing]
        by_path = {r.path: r for r in missing}
        done = 0
        pool = len(missing) >= POOL_THRESHOLD and not self.backend.direct  # direct builds take milliseconds
        for reply in _run_tasks(tasks, self.jobs if pool else 1):
            r = by_path[reply["path"]]
            r.error, r.seconds = reply["error"], reply["seconds"]
            done += 1
            if progress:
                progress(done, len(missing))
        return out


def _run_tasks(tasks: list[dict], jobs: int) -> Iterator[dict]:
    """Build ``tasks`` in ``jobs`` worker processes (``python -m ofakit.profiler.builder``), yielding replies as they
    come. Workers are plain subprocesses, so callers need no ``if __name__ == "__main__"`` guard; a worker that
    dies turns its unfinished tasks into failed builds."""
    if jobs == 1:
        for t in tasks:
            yield _build_task(t)
        return
    procs, pending, bufs = {}, {}, {}
    for k in range(jobs):
        shard = tasks[k::jobs]
        if not shard:
            continue
        p = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        fd = p.stdout.fileno()
        procs[fd], pending[fd], bufs[fd] = p, deque(t["path"] for t in shard), b""
        threading.Thread(target=_feed, args=(p, shard), daemon=True).start()
    try:
        while pending:
            ready, _, _ = select.select(list(pending), [], [])
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = procs[fd].wait()
                    for path in pending.pop(fd):
                        yield {"path": path, "error": f"model builder process died (exit code {code})",
                               "seconds": 0.0}
                    continue
                *lines, bufs[fd] = (bufs[fd] + chunk).split(b"\n")
                for line in lines:
                    pending[fd].popleft()
                    yield json.loads(line)
                if not pending[fd]:
                    del pending[fd]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


def _feed(p: subprocess.Popen, shard: list[dict]) -> None:
    try:
        assert p.stdin is not None
        p.stdin.write("".join(json.dumps(t) + "\n" for t in shard).encode())
        p.stdin.close()
    except OSError:
        pass


def _build_task(task: dict) -> dict:
    t0 = time.perf_counter()
    error = ""
    try:
        get_backend(task["backend"]).build(Item(task["kind"], task["spec"]), task["path"])
    except Exception as exc:  # noqa: BLE001 - a failed build is data (BUILD_ERROR), the run goes on
        error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
    return {"path": task["path"], "error": error, "seconds": time.perf_counter() - t0}


def _serve() -> None:
    """Worker: one JSON task per stdin line, one JSON reply per stdout line."""
    import torch

    torch.set_num_threads(1)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # exporters print; keep the reply stream clean
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(_build_task(json.loads(line))) + "\n")


if __name__ == "__main__":
    _serve()
