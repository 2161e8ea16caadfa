#!/usr/bin/env python3
"""ofakit measurement agent: times model files with one runtime, locally or on a board.

ONE self-contained file for Python >= 3.9 (the board tests run it on Debian 11's 3.9) that imports only the
standard library, numpy and the runtime of the chosen backend (``onnxruntime``, or ``ai_edge_litert`` /
``tflite_runtime`` for TFLite). ofakit's local runners use this same file (the timing loop exists once); the SSH
runner uploads it to a board and drives its CLI.

Method: per model, a warm-up (at least ``--warmup-runs`` runs and ``--warmup-time`` seconds), then at least
``--min-runs`` runs and ``--min-time`` seconds; a window reports the samples' median, mean, std, IQR, CV, n and
min. ``--clock thread`` (default) times each run by the CPU time of the calling thread when the runtime runs
single-threaded (``--threads 1``: the model executes on that thread), so time the OS gives other processes does
not count; with more threads, or ``--clock wall``, runs are timed by ``time.perf_counter``. Every item is
measured in ``--rounds`` rounds, each round a pass over all items in a freshly shuffled order (seeded, so a
resumed run follows the same order), so slow/fast CPU states and drift spread over all items; whole networks
(ids starting ``subnet:``) get ``--subnet-rounds`` rounds when that is more, spread over the same passes. The
value of an item is the minimum over rounds of the round medians; items whose best round is noisy (robust CV =
IQR/1.349/median above ``--cv-threshold``) or whose two best rounds disagree by more than ``--spread-threshold``
get more rounds, one at a time, until they are stable or ``--extra-rounds`` more rounds were measured. Timing
runs in a worker subprocess: an item that hangs past ``--timeout`` or crashes the runtime is recorded
(RUN_TIMEOUT / RUNTIME_ERROR), the worker is restarted and the run goes on.

CLI (stable):

  python ofakit_agent.py measure --models DIR --ops FILE --out RESULTS.jsonl --backend onnxruntime \\
        [--threads 1] [--rounds 4] [--extra-rounds 2] [--warmup-runs 3] [--warmup-time 0.01] [--min-runs 10] \\
        [--min-time 0.05] [--clock thread|wall] [--timeout 60] [--cv-threshold 0.1] [--spread-threshold 0.05] \\
        [--seed 0] [--subnet-rounds 0] [--retry-errors] [--quiet]
      FILE holds JSON lines {"id": ITEM_ID, "model": PATH} (PATH relative to DIR unless absolute); a line with
      "packed": PACKED (a model file sent without its weights, see expand_packed) gets PATH written from PACKED
      first, when PATH is missing or older than PACKED.
      RESULTS gets a header line, then one JSON line per (item, round) as it goes (flushed and fsynced).
      Re-running the same command resumes: (item, round) pairs already recorded are skipped (records with an
      error too, unless --retry-errors). Exit 0 when the run completed, 2 on bad arguments or a missing runtime,
      3 when RESULTS was measured with other settings (backend, threads, timing).
  python ofakit_agent.py summary --out RESULTS.jsonl
      One JSON line per item: the aggregate over its rounds (fields of Summary below).
  python ofakit_agent.py env --backend onnxruntime [--threads 1]
      One JSON object: CPU model, cores, governor, temperature, load, Python/numpy/runtime versions.
  python ofakit_agent.py worker --backend onnxruntime [--threads 1]
      Internal: the timing subprocess (JSON request per stdin line, JSON reply per stdout line).

Record lines (JSON, "version": 1): {"type": "header", "backend", "threads", "timing": {...}, "agent"} and
{"type": "result", "id", "round", "error", "msg", "median_ms", "mean_ms", "std_ms", "iqr_ms", "cv", "min_ms",
"n", "load_ms", "clock", "wall_median_ms", "wall_s", "time"} with "error" one of the ErrorCode names (OK when
measured). For a repeated (id, round) the last line wins.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import random
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

AGENT_VERSION = "1"
RECORD_VERSION = 1


class ErrorCode(str, Enum):
    """Outcome of building or measuring one item (stored by name in the result lines)."""

    OK = "OK"
    BUILD_ERROR = "BUILD_ERROR"        # the host could not build the model file
    BAD_MODEL = "BAD_MODEL"            # the runtime could not load the model file
    RUNTIME_ERROR = "RUNTIME_ERROR"    # the model raised while running, or the worker crashed
    RUN_TIMEOUT = "RUN_TIMEOUT"        # the item took longer than the per-item timeout
    NO_RUNTIME = "NO_RUNTIME"          # the backend's runtime is not installed


class AgentError(Exception):
    """A problem with the run as a whole (bad arguments, missing runtime, mismatched result file)."""


@dataclass
class TimingSettings:
    """One measurement window: warm-up, then at least ``min_runs`` runs and ``min_s`` seconds."""

    warmup_runs: int = 3
    warmup_s: float = 0.01
    min_runs: int = 10
    min_s: float = 0.05
    max_runs: int = 1000000
    clock: str = "thread"  # "thread": CPU time of the calling thread when threads == 1 (else wall); "wall"


@dataclass
class JobSettings:
    """A measurement job: interleaved rounds, noise-driven extra rounds, per-item timeout. Whole networks (item
    ids starting with ``subnet:``) get ``max(rounds, subnet_rounds)`` rounds: their latency moves with the
    state of the shared caches and memory more than a single operator's does, so they need more samples."""

    timing: TimingSettings = field(default_factory=TimingSettings)
    rounds: int = 4
    extra_rounds: int = 2
    cv_threshold: float = 0.10
    spread_threshold: float = 0.05
    timeout_s: float = 60.0
    seed: int = 0
    retry_errors: bool = False
    subnet_rounds: int = 0  # rounds for whole networks (ids starting "subnet:") when more than ``rounds``


@dataclass
class MeasureResult:
    """One (item, round) outcome: a measurement window's statistics, or an error code."""

    id: str
    round: int
    error: str = ErrorCode.OK.value
    msg: str = ""
    median_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    std_ms: Optional[float] = None
    iqr_ms: Optional[float] = None
    cv: Optional[float] = None
    min_ms: Optional[float] = None
    n: int = 0
    load_ms: Optional[float] = None
    clock: str = ""
    wall_median_ms: Optional[float] = None
    wall_s: Optional[float] = None
    time: float = 0.0
    version: int = RECORD_VERSION
    type: str = "result"

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.OK.value

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "MeasureResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Summary:
    """An item aggregated over its rounds. ``ms`` = min over rounds of the round medians; ``median_ms`` = median
    of the round medians; mean/std/iqr/cv/n come from the best round; ``min_ms`` is the fastest single run;
    ``spread`` = second-best / best round median - 1."""

    id: str
    error: str
    msg: str = ""
    ms: Optional[float] = None
    median_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    std_ms: Optional[float] = None
    iqr_ms: Optional[float] = None
    cv: Optional[float] = None
    min_ms: Optional[float] = None
    n: int = 0
    rounds: int = 0
    spread: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.OK.value


# --- timing core ----------------------------------------------------------------------------------------------

CLOCKS = ("thread", "wall")


def time_runs(fn: Callable[[], Any], timing: TimingSettings,
              threads: int = 1) -> Tuple[List[float], List[float], str]:
    """Warm up, then time back-to-back calls of ``fn``. Returns (run times by the chosen clock, wall-clock run
    times, clock used), in seconds.

    With one runtime thread the model runs on the calling thread, so that thread's CPU time is its latency
    without the time the OS gave to other processes (robust on a shared machine); with more threads, or
    ``clock="wall"``, wall-clock time is used. A window always lasts at least ``min_s`` of wall-clock time.
    """
    if timing.clock not in CLOCKS:
        raise ValueError("clock must be one of {}, got {!r}".format(CLOCKS, timing.clock))
    wall = time.perf_counter
    use_thread = timing.clock == "thread" and threads == 1
    cpu = time.thread_time if use_thread else wall
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        end, i = wall() + timing.warmup_s, 0
        while i < timing.warmup_runs or wall() < end:
            fn()
            i += 1
        samples, walls = [], []  # type: List[float], List[float]
        start = w = wall()
        c = cpu()
        while len(samples) < timing.min_runs or w - start < timing.min_s:
            fn()
            c2, w2 = cpu(), wall()
            samples.append(c2 - c)
            walls.append(w2 - w)
            c, w = c2, w2
            if len(samples) >= timing.max_runs:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, walls, "thread" if use_thread else "wall"


def window_stats(samples_s: Sequence[float]) -> Dict[str, Any]:
    """Median, mean, std, IQR, CV (std/mean), min (milliseconds) and n of one window's run times."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    q25, med, q75 = np.percentile(a, [25, 50, 75])
    mean = float(a.mean())
    std = float(a.std())
    return {"median_ms": float(med), "mean_ms": mean, "std_ms": std, "iqr_ms": float(q75 - q25),
            "cv": std / mean if mean > 0 else 0.0, "min_ms": float(a.min()), "n": int(a.size)}


# --- runtimes: load a model file into a zero-argument callable ------------------------------------------------

Loader = Callable[[str, int], Callable[[], Any]]
Timer = Callable[[Callable[[], Any], TimingSettings], List[float]]  # (run, settings) -> run times in seconds
RUNTIMES = {}  # type: Dict[str, Loader]


def runtime(name: str) -> Callable[[Loader], Loader]:
    """Register a loader ``(model_path, threads) -> run()`` under a backend name."""
    def deco(fn: Loader) -> Loader:
        RUNTIMES[name] = fn
        return fn
    return deco


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def _random_input(shape: Iterable[Any], dtype: Any, rng: np.random.RandomState) -> np.ndarray:
    """Random data for one input (RandomState: boards may carry an old numpy)."""
    dims = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape]
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(dims).astype(dtype)
    return rng.randint(0, 8, dims).astype(dtype)


@runtime("onnxruntime")
def load_onnxruntime(path: str, threads: int) -> Callable[[], Any]:
    """onnxruntime CPU session, all graph optimisations, ``threads`` intra-op threads, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(0)
    feeds = {i.name: _random_input(i.shape, _NP_TYPES.get(i.type, np.float32), rng) for i in sess.get_inputs()}
    run = sess.run
    return lambda: run(None, feeds)


def _tflite_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter  # the board's runtime (numpy<2 builds)
    return Interpreter


@runtime("tflite")
def load_tflite(path: str, threads: int) -> Callable[[], Any]:
    """TFLite interpreter (ai_edge_litert, else tflite_runtime) with its default XNNPACK CPU delegate."""
    interp = _tflite_interpreter_class()(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    rng = np.random.RandomState(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], _random_input(d["shape"], d["dtype"], rng))
    return interp.invoke


# This file runs alone on boards, so it keeps its own map of the runtimes above; a test checks that it agrees
# with the backend classes (profiler.backends: runtime_modules of every backend with on_boards).
RUNTIME_MODULES = {"onnxruntime": ("onnxruntime",), "tflite": ("ai_edge_litert", "tflite_runtime")}


def runtime_versions(backend: str) -> Dict[str, str]:
    """Versions of the backend's runtime package (empty when it is not installed)."""
    out = {}
    for m in RUNTIME_MODULES.get(backend, ()):
        try:
            mod = __import__(m)
        except ImportError:
            continue
        out[m] = str(getattr(mod, "__version__", "unknown"))
        break
    return out


# --- environment ------------------------------------------------------------------------------------------------

def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _arch_family(text: str) -> Optional[str]:
    """``x86`` / ``arm`` / ``riscv`` for a ``uname -m`` machine name, None for others."""
    m = text.lower()
    if m in ("x86_64", "amd64", "i386", "i486", "i586", "i686"):
        return "x86"
    return "arm" if m.startswith(("arm", "aarch64")) else "riscv" if m.startswith("riscv") else None


def _cpuinfo_family(text: str) -> Optional[str]:
    """The architecture family of the CPU that ``/proc/cpuinfo`` (written by the kernel, not an emulator)
    describes, from the fields each architecture's kernel writes."""
    keys = {line.split(":")[0].strip() for line in text.splitlines() if ":" in line}
    if {"vendor_id", "flags"} <= keys:
        return "x86"
    if keys & {"CPU implementer", "CPU architecture"}:
        return "arm"
    return "riscv" if {"isa", "mmu"} <= keys else None


def emulation() -> Optional[str]:
    """How this process is seen to run under CPU emulation (qemu-user via binfmt_misc), or None.

    qemu-user answers ``/proc/self/exe`` with the emulated program, but not the main thread's own
    ``/proc/self/task/TID/exe``, where the kernel names the real executable (the qemu binary); and the CPU in
    ``/proc/cpuinfo`` is the host's, of another architecture than the emulated ``uname -m``."""
    try:
        exe = os.readlink("/proc/self/task/%d/exe" % os.getpid())
    except OSError:
        exe = ""
    if "qemu" in os.path.basename(exe):
        return "executable is %s" % exe
    machine = _arch_family(platform.machine())
    cpu = _cpuinfo_family(_read("/proc/cpuinfo") or "")
    if machine and cpu and machine != cpu:
        return "uname -m is %s but /proc/cpuinfo describes a CPU of the %s family" % (platform.machine(), cpu)
    return None


def environment(backend: str, threads: int) -> Dict[str, Any]:
    """What a measurement depends on: CPU, cores, governor, temperature, load, software versions, threads."""
    temps = []
    base = "/sys/class/thermal"
    if os.path.isdir(base):
        for zone in sorted(os.listdir(base)):
            t = _read(os.path.join(base, zone, "temp"))
            if t and t.lstrip("-").isdigit():
                temps.append(int(t) / 1000.0)
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    emulated = emulation()
    return {
        "cpu_model": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
        "emulated": emulated is not None, "emulation": emulated,
        "system": platform.system(), "kernel": platform.release(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "max_mhz": (lambda v: int(v) / 1000 if v and v.isdigit() else None)(
            _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")),
        "temperature_c": max(temps) if temps else None, "loadavg": load,
        "python": platform.python_version(), "numpy": np.__version__, "backend": backend,
        "runtime": runtime_versions(backend), "threads": threads, "agent_version": AGENT_VERSION,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- worker: the timing subprocess --------------------------------------------------------------------------------

def serve(load: Loader, threads: int, stdin: Any = None, out_fd: Optional[int] = None,
          timer: Optional[Timer] = None) -> None:
    """Answer timing requests: one JSON line in (``model`` + timing settings), one JSON line out.

    The protocol goes over a private copy of stdout; file descriptor 1 is pointed at stderr so that anything a
    runtime prints cannot corrupt it. ``timer`` replaces :func:`time_runs` (e.g. CUDA-event timing).
    """
    if out_fd is None:
        out_fd = os.dup(1)
        os.dup2(2, 1)
    out = os.fdopen(out_fd, "w", buffering=1)
    out.write(json.dumps({"ready": True}) + "\n")
    for line in stdin or sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        out.write(json.dumps(handle(load, threads, req, timer)) + "\n")


def handle(load: Loader, threads: int, req: Dict[str, Any], timer: Optional[Timer] = None) -> Dict[str, Any]:
    """Load one model and time it; errors come back as an error code, never as an exception."""
    t0 = time.perf_counter()
    try:
        fn = load(req["model"], threads)
    except Exception as exc:  # noqa: BLE001 - any loader failure is data (BAD_MODEL)
        return {"error": ErrorCode.BAD_MODEL.value, "msg": _one_line(exc)}
    load_ms = (time.perf_counter() - t0) * 1e3
    extra = {}  # type: Dict[str, Any]
    try:
        timing = TimingSettings(**req.get("timing", {}))
        if timer is not None:
            samples = timer(fn, timing)
            extra["clock"] = "custom"
        else:
            samples, walls, clock = time_runs(fn, timing, threads)
            extra.update(clock=clock, wall_median_ms=float(np.median(walls)) * 1e3)
    except Exception as exc:  # noqa: BLE001
        return {"error": ErrorCode.RUNTIME_ERROR.value, "msg": _one_line(exc)}
    finally:
        fn = None
    res = window_stats(samples)
    res.update(error=ErrorCode.OK.value, load_ms=load_ms, **extra)
    return res


def _one_line(exc: BaseException) -> str:
    text = "{}: {}".format(type(exc).__name__, exc).strip().replace("\n", " ")
    return text[:500]


_EOF = {"eof": True}  # type: Dict[str, Any]


class Worker:
    """A timing subprocess with per-request timeouts; restarted after a hang or a crash."""

    def __init__(self, argv: Sequence[str], log_path: Optional[str] = None, start_timeout: float = 120.0):
        self.argv = list(argv)
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.proc = None  # type: Optional[subprocess.Popen]
        self._buf = b""

    def start(self) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         start_new_session=True)
        finally:
            if self.log_path:
                log.close()
        self._buf = b""
        hello = self._readline(self.start_timeout)
        if hello is None or not hello.get("ready"):
            why = self._log_tail() or "no answer"
            self.stop()
            raise AgentError("the timing worker did not start ({}): {}".format(" ".join(self.argv[-4:]), why))

    def send(self, req: Dict[str, Any]) -> None:
        """Start the worker if needed and hand it one request (the reply comes from :meth:`receive`)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            pass  # the worker died; receive() sees EOF

    def receive(self, timeout: float) -> Dict[str, Any]:
        """The reply to the last request; a hang or a crash becomes an error reply and stops the worker."""
        assert self.proc is not None
        reply = self._readline(timeout)
        if reply is not None and reply is not _EOF:
            return reply
        if reply is None:  # no answer in time: hung
            self.stop()
            return {"error": ErrorCode.RUN_TIMEOUT.value, "msg": "no result after {:g} s".format(timeout)}
        try:  # the pipe closed: the worker died (or is dying)
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = 0
        tail = self._log_tail()
        self.stop()
        why = "signal {}".format(-code) if code < 0 else "exit code {}".format(code)
        return {"error": ErrorCode.RUNTIME_ERROR.value, "msg": "worker died ({}){}".format(
            why, ": " + tail if tail else "")}

    def _readline(self, timeout: float) -> Optional[Dict[str, Any]]:
        """The next reply; None after ``timeout``; ``_EOF`` when the worker closed its output."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return _EOF
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line.decode())
        except ValueError:
            return {"error": ErrorCode.RUNTIME_ERROR.value, "msg": "garbled worker reply: {!r}".format(line[:200])}

    def _log_tail(self) -> str:
        if not self.log_path:
            return ""
        text = _read(self.log_path) or ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for s in (self.proc.stdin, self.proc.stdout):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.proc = None


# --- the result journal ------------------------------------------------------------------------------------------

def read_results(path: str) -> Tuple[Optional[Dict[str, Any]], List[MeasureResult]]:
    """(header, results) of a result file; a torn last line (a killed writer) is ignored."""
    header, results = None, []  # type: Optional[Dict[str, Any]], List[MeasureResult]
    if not os.path.exists(path):
        return header, results
    with open(path, "rb") as f:
        data = f.read()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode())
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("type") == "header":
            header = header or rec
        elif rec.get("type") == "result" and "id" in rec and "round" in rec:
            results.append(MeasureResult.from_dict(rec))
    return header, results


class Journal:
    """Append-only JSON-lines result file: every line flushed and fsynced before the next item counts as done."""

    def __init__(self, path: str, header: Dict[str, Any]):
        self.path = path
        old_header, self.results = read_results(path)
        if old_header is not None:
            for k in ("backend", "threads", "timing"):
                if old_header.get(k) != header.get(k):
                    raise AgentError("{}: measured with {}={!r}, this run uses {!r}; use another result file".format(
                        path, k, old_header.get(k), header.get(k)))
        _drop_torn_tail(path)
        self._f = open(path, "a")
        if old_header is None:
            self.append_line(json.dumps(header, sort_keys=True))

    def append(self, res: MeasureResult) -> None:
        self.results.append(res)
        self.append_line(res.to_json())

    def append_line(self, line: str) -> None:
        self._f.write(line + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _drop_torn_tail(path: str) -> None:
    """Cut a partial last line (the writer was killed mid-write) so new lines start clean."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def latest(results: Iterable[MeasureResult]) -> Dict[Tuple[str, int], MeasureResult]:
    """The last record of every (id, round)."""
    out = {}  # type: Dict[Tuple[str, int], MeasureResult]
    for r in results:
        out[(r.id, r.round)] = r
    return out


def summarize(results: Iterable[MeasureResult]) -> Dict[str, Summary]:
    """Aggregate records per item (see :class:`Summary`)."""
    per_id = {}  # type: Dict[str, List[MeasureResult]]
    for r in latest(results).values():
        per_id.setdefault(r.id, []).append(r)
    out = {}
    for item_id, recs in per_id.items():
        ok = [r for r in recs if r.ok and r.median_ms is not None]
        if not ok:
            last = max(recs, key=lambda r: r.time)
            out[item_id] = Summary(item_id, last.error, last.msg)
            continue
        best = min(ok, key=lambda r: r.median_ms)
        meds = sorted(r.median_ms for r in ok)
        out[item_id] = Summary(
            item_id, ErrorCode.OK.value, ms=best.median_ms, median_ms=float(np.median(meds)), mean_ms=best.mean_ms,
            std_ms=best.std_ms, iqr_ms=best.iqr_ms, cv=best.cv, min_ms=min(r.min_ms for r in ok), n=best.n,
            rounds=len(ok), spread=meds[1] / meds[0] - 1 if len(meds) > 1 and meds[0] > 0 else None)
    return out


def unstable(s: Summary, job: JobSettings) -> bool:
    """Whether an item needs extra rounds: noisy best round, or two best rounds that disagree."""
    return s.ok and (robust_cv(s) > job.cv_threshold or s.rounds < 2 or
                     (s.spread is not None and s.spread > job.spread_threshold))


def robust_cv(s: Summary) -> float:
    """IQR / 1.349 / median of the best round: the CV of the bulk of the runs (std-based CV is dominated by
    the odd preempted run, which the median already ignores)."""
    if not s.ok or not s.ms:
        return 0.0
    return (s.iqr_ms or 0.0) / 1.349 / s.ms


# --- the measurement job -------------------------------------------------------------------------------------------

Progress = Callable[[int, int, MeasureResult], None]


def measure(items: Sequence[Tuple[str, str]], out_path: str, worker_argv: Sequence[str], job: JobSettings,
            header: Dict[str, Any], progress: Optional[Progress] = None,
            log_path: Optional[str] = None) -> Dict[str, Summary]:
    """Measure ``items`` ((id, model path) pairs) in interleaved shuffled rounds, journaling every result to
    ``out_path``; resumes from what ``out_path`` already holds. Returns the summaries of ``items``."""
    journal = Journal(out_path, header)
    worker = Worker(worker_argv, log_path)
    models = dict(items)
    ids = sorted(models)
    try:
        plan = round_plan(ids, job)
        _run_rounds(plan, models, journal, worker, job, progress)
        first_extra = max(rnd for group in plan for rnd, _ in group) + 1 if plan else 0
        for rnd in range(first_extra, first_extra + job.extra_rounds):
            # one more round for the items still unstable; decided from earlier rounds only, so a resumed run
            # picks the same items
            summ = summarize(r for r in journal.results if r.round < rnd and r.id in models)
            redo = sorted(i for i, s in summ.items() if unstable(s, job))
            if not redo:
                break
            _run_rounds([[(rnd, redo)]], models, journal, worker, job, progress)
    finally:
        worker.stop()
        journal.close()
    summ = summarize(r for r in journal.results if r.id in models)
    return {i: summ[i] for i in ids if i in summ}


SUBNET_PREFIX = "subnet:"

Plan = List[List[Tuple[int, Sequence[str]]]]  # passes, each a list of (round, item ids) measured mixed together


def round_plan(ids: Sequence[str], job: JobSettings) -> Plan:
    """The regular rounds as ``max(rounds, 1)`` passes over the items. Round ``k`` of every item is in pass
    ``k``; the whole networks' further rounds (``subnet_rounds`` > ``rounds``) are spread over the passes
    (round ``k`` in pass ``k % rounds``), so they too meet every state of the machine along the job."""
    passes = max(job.rounds, 1)
    nets = [i for i in ids if i.startswith(SUBNET_PREFIX)]
    plan = [[(k, list(ids))] for k in range(job.rounds)] or [[]]
    for k in range(job.rounds, job.subnet_rounds):
        if nets:
            plan[k % passes].append((k, nets))
    return [p for p in plan if p]


def _run_rounds(plan: Plan, models: Dict[str, str], journal: Journal, worker: Worker, job: JobSettings,
                progress: Optional[Progress]) -> None:
    def done(rec: Optional[MeasureResult]) -> bool:
        if rec is None:
            return False
        return rec.ok or (not job.retry_errors and rec.error != ErrorCode.BUILD_ERROR.value)

    have = latest(journal.results)
    todo = []  # type: List[Tuple[int, str]]
    for group in plan:
        order = [(rnd, i) for rnd, ids in group for i in ids]
        # seeded by the pass's first round: a resumed run follows the same order
        random.Random("{}:{}".format(job.seed, group[0][0])).shuffle(order)
        todo += [(rnd, i) for rnd, i in order if not done(have.get((i, rnd)))]
    timing = asdict(job.timing)
    pending = None  # type: Optional[MeasureResult]
    for k, (rnd, item_id) in enumerate(todo):
        t0 = time.time()
        worker.send({"model": models[item_id], "timing": timing})
        if pending is not None:  # journal the previous result while the worker times this item
            journal.append(pending)
        reply = worker.receive(job.timeout_s)
        pending = MeasureResult.from_dict(dict(reply, id=item_id, round=rnd, wall_s=time.time() - t0, time=t0))
        if progress is not None:
            progress(k + 1, len(todo), pending)
    if pending is not None:
        journal.append(pending)


# --- CLI ------------------------------------------------------------------------------------------------------

def _read_items(ops_file: str, models_dir: str) -> List[Tuple[str, str]]:
    items = []
    with open(ops_file) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                item_id, model = str(rec["id"]), str(rec["model"])
                packed = rec.get("packed")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise AgentError("{}:{}: expected a JSON object with id and model".format(ops_file, n))
            model = model if os.path.isabs(model) else os.path.join(models_dir, model)
            if packed:
                packed = str(packed) if os.path.isabs(str(packed)) else os.path.join(models_dir, str(packed))
                if not os.path.exists(model) or os.path.getmtime(model) < os.path.getmtime(packed):
                    expand_packed(packed, model)
            items.append((item_id, model))
    return items


def expand_packed(packed: str, model: str) -> None:
    """Write the model file ``model`` from its packed form: a gzip of a JSON header line and the file with its
    weights zeroed. Each ``[offset, bytes, low, high]`` range of the header is refilled with uniform(low, high)
    float32 values drawn from the header's seed, so the board gets weights of the file's own distribution
    without the host sending them."""
    try:
        with gzip.open(packed, "rb") as f:
            header = json.loads(f.readline().decode())
            data = bytearray(f.read())
        if header.get("format") != "ofakit-packed-1" or len(data) != header["size"]:
            raise ValueError("not an ofakit packed model")
        rng = np.random.RandomState(header["seed"])
        for offset, nbytes, low, high in header["fill"]:
            data[offset:offset + nbytes] = rng.uniform(low, high, nbytes // 4).astype("<f4").tobytes()
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise AgentError("{}: cannot expand the packed model ({})".format(packed, exc))
    tmp = "{}.{}.part".format(model, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, model)


def make_header(backend: str, threads: int, job: JobSettings) -> Dict[str, Any]:
    return {"type": "header", "version": RECORD_VERSION, "backend": backend, "threads": threads,
            "timing": asdict(job.timing), "agent": AGENT_VERSION}


def worker_argv(backend: str, threads: int, python: Optional[str] = None) -> List[str]:
    """The command that starts this file's timing worker."""
    return [python or sys.executable, os.path.abspath(__file__), "worker", "--backend", backend,
            "--threads", str(threads)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofakit_agent.py", description="ofakit measurement agent")
    sub = p.add_subparsers(dest="cmd")
    m = sub.add_parser("measure", help="measure model files in interleaved rounds, journaling results")
    m.add_argument("--models", required=True)
    m.add_argument("--ops", required=True)
    m.add_argument("--out", required=True)
    d = JobSettings()
    t = d.timing
    for name, default, typ in (("--rounds", d.rounds, int), ("--extra-rounds", d.extra_rounds, int),
                               ("--warmup-runs", t.warmup_runs, int), ("--warmup-time", t.warmup_s, float),
                               ("--min-runs", t.min_runs, int), ("--min-time", t.min_s, float),
                               ("--timeout", d.timeout_s, float), ("--cv-threshold", d.cv_threshold, float),
                               ("--spread-threshold", d.spread_threshold, float), ("--seed", d.seed, int),
                               ("--subnet-rounds", d.subnet_rounds, int)):
        m.add_argument(name, type=typ, default=default)
    m.add_argument("--clock", choices=CLOCKS, default=t.clock)
    m.add_argument("--retry-errors", action="store_true")
    m.add_argument("--quiet", action="store_true")
    s = sub.add_parser("summary", help="aggregate a result file per item")
    s.add_argument("--out", required=True)
    for name in ("measure", "env", "worker"):
        sp = m if name == "measure" else sub.add_parser(name)
        sp.add_argument("--backend", required=True, choices=sorted(RUNTIMES))
        sp.add_argument("--threads", type=int, default=1)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "worker":
        serve(RUNTIMES[args.backend], args.threads)
        return 0
    if args.cmd == "env":
        print(json.dumps(environment(args.backend, args.threads), sort_keys=True))
        return 0
    if args.cmd == "summary":
        _, results = read_results(args.out)
        for s in summarize(results).values():
            print(json.dumps(asdict(s), sort_keys=True))
        return 0
    if args.cmd != "measure":
        _parser().print_help()
        return 2
    job = JobSettings(TimingSettings(args.warmup_runs, args.warmup_time, args.min_runs, args.min_time,
                                     clock=args.clock),
                      args.rounds, args.extra_rounds, args.cv_threshold, args.spread_threshold, args.timeout,
                      args.seed, args.retry_errors, args.subnet_rounds)
    if args.threads < 1 or job.rounds < 1:
        print("ofakit_agent: error: --threads and --rounds must be >= 1", file=sys.stderr)
        return 2
    if not runtime_versions(args.backend):
        print("ofakit_agent: error: the {} runtime is not installed (pip install {})".format(
            args.backend, {"tflite": "ai-edge-litert or tflite-runtime"}.get(args.backend, args.backend)),
            file=sys.stderr)
        return 2

    def progress(k: int, n: int, res: MeasureResult) -> None:
        if not args.quiet:
            val = "{:.4f} ms".format(res.median_ms) if res.ok else res.error
            print("[{}/{}] round {} {} {}".format(k, n, res.round, res.id, val), file=sys.stderr, flush=True)

    try:
        items = _read_items(args.ops, args.models)
        measure(items, args.out, worker_argv(args.backend, args.threads), job,
                make_header(args.backend, args.threads, job), progress, log_path=args.out + ".worker.log")
    except AgentError as exc:
        print("ofakit_agent: error: {}".format(exc), file=sys.stderr)
        return 3 if "measured with" in str(exc) else 2
    except OSError as exc:
        print("ofakit_agent: error: {}: {}".format(getattr(exc, "filename", "") or "", exc.strerror),
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
