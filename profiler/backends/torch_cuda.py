"""torch on an NVIDIA GPU: eager execution or CUDA-graph replay, timed with CUDA events.

Backend ``torch-cuda`` takes its options as a name suffix, so every profile's backend name says what it measured:
``torch-cuda`` is eager, batch 1, fp32; ``torch-cuda-graph-b64`` replays CUDA graphs at batch 64. Options
(:class:`CudaOptions`): ``eager`` | ``graph``, ``b<N>``, ``fp32`` | ``fp16`` | ``bf16``, ``cl`` (channels-last
tensors), ``bench`` (``cudnn.benchmark``: cuDNN times its algorithms per shape; off by default, it costs tens of
ms per new shape and a full profile has thousands of shapes) and ``sync`` (time ops like subnets, see below).

Model files are the item's JSON description (shared with the ``torch`` CPU backend). The timing worker
(``python -m ofakit.profiler.backends.torch_cuda --options graph-b64``) first brings the GPU up to speed (matrix products
until their time stops dropping), then per item rebuilds the module from :mod:`ofakit.ofa_core.static`, folds BatchNorm
into the convs (as deployed) and moves it to the GPU with a random input of the batch size, and:

* eager: calls the module's forward (batch-1 latency is then bound by kernel launches, not FLOPs);
* graph: warms the module up on a side stream, captures one forward as a :class:`torch.cuda.CUDAGraph` and
  replays it (what latency-critical deployments do).

Timing (:func:`time_item`): warm-up windows until a window's median no longer drops by more than
:data:`SETTLE_TOL` below the previous one (clocks, caches, lazy initialisation), then one window of at least
``min_runs`` runs and ``min_s`` seconds. Samples are CUDA-event times (:func:`cuda_timer`):

* a whole subnet: one inference per run, started on an idle stream (event, forward or replay, event, host
  synchronization): the latency of a single inference, launch overhead and the GPU's tail included;
* an operator, eager (:class:`ChainWindow`): back-to-back forwards with events recorded between them and one
  synchronization per window, so a sample is what the op adds inside a stream of ops (the larger of the time to
  launch its kernels and the GPU's time for them), as inside a network, where launches overlap execution;
* an operator, graph: a graph of :data:`GRAPH_OP_REPEAT` back-to-back forwards, replayed as a subnet is, divided
  by that count: the op's GPU time inside a graph plus a share of one graph launch.

Timing ops like subnets instead (option ``sync``) counts one launch latency and one GPU tail per op, which a
network pays once (the H200 probe: CUDA-graph batch-1 LUT sums +14-15% high, eager sums 19-30% off).
"""
from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from ofakit.ofa_core.errors import UserError

from ..agent.ofakit_agent import TimingSettings
from ..items import OP, Item
from . import register_backend
from .torch_cpu import TorchCPU

MODES = ("eager", "graph")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SETTLE_TOL = 0.02          # warm-up ends when a window's median drops by no more than 2% below the previous one
MAX_WARMUP_WINDOWS = 12    # ... or after this many windows
GRAPH_WARMUP_RUNS = 3      # eager runs on a side stream before capture (cuDNN/cuBLAS lazy init)
GRAPH_OP_REPEAT = 8        # forwards per captured graph when an op is timed (graph mode)

# option token -> (field, value); ``b<N>`` sets the batch size
_TOKENS: dict[str, tuple[str, Any]] = {
    **{m: ("mode", m) for m in MODES}, **{d: ("dtype", d) for d in DTYPES},
    "cl": ("channels_last", True), "bench": ("cudnn_benchmark", True), "sync": ("sync_ops", True),
}
_BATCH = re.compile(r"b([1-9][0-9]{0,4})")


@dataclass(frozen=True)
class CudaOptions:
    """How the CUDA backend runs every item."""

    mode: str = "eager"
    batch: int = 1
    dtype: str = "fp32"
    channels_last: bool = False
    cudnn_benchmark: bool = False
    sync_ops: bool = False  # time ops as single inferences (like subnets) instead of back to back

    @classmethod
    def parse(cls, text: str) -> "CudaOptions":
        """Options from a dash-separated suffix such as ``graph-b64-fp16-cl``; :class:`UserError` if bad."""
        kw: dict[str, Any] = {}
        for tok in filter(None, text.split("-")):
            m = _BATCH.fullmatch(tok)
            field_, value = ("batch", int(m.group(1))) if m else _TOKENS.get(tok, (None, None))
            if field_ is None:
                raise UserError(f"torch-cuda: unknown option {tok!r} in {text!r} (options: eager|graph, b<N>, "
                                f"fp32|fp16|bf16, cl, bench, sync; e.g. torch-cuda-graph-b64)")
            if field_ in kw:
                raise UserError(f"torch-cuda: option {field_} given twice in {text!r}")
            kw[field_] = value
        return cls(**kw)

    @property
    def suffix(self) -> str:
        """Canonical option suffix (``eager-b1-fp32``, ``graph-b64-fp16-cl``)."""
        flags = [t for t, (f, v) in _TOKENS.items() if isinstance(v, bool) and getattr(self, f)]
        return "-".join([self.mode, f"b{self.batch}", self.dtype, *flags])


def cuda_unavailable(options: CudaOptions | None = None) -> str | None:
    """Why torch cannot run CUDA here (one line), or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build (no CUDA); run on a machine with an NVIDIA GPU "
                f"and a CUDA build of torch")
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable NVIDIA GPU or driver"
    if options is not None and options.dtype == "bf16" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name()} does not support bf16"
    return None


@register_backend("torch-cuda")
class TorchCUDA(TorchCPU):
    """torch on this machine's CUDA GPU (model files: the ``torch`` backend's JSON descriptions)."""

    device = "gpu"

    def __init__(self, options: CudaOptions | None = None):
        self.options = options or CudaOptions()

    @classmethod
    def from_options(cls, text: str) -> "TorchCUDA":
        return cls(CudaOptions.parse(text))

    def unavailable(self) -> str | None:
        return cuda_unavailable(self.options)

    def worker_argv(self, threads: int) -> list[str]:
        return [sys.executable, "-m", __name__, "--threads", str(threads), "--options", self.options.suffix]

    def describe(self) -> dict[str, Any]:
        o = self.options
        return {"mode": o.mode, "batch": o.batch, "backend_options": asdict(o),
                "input": f"random {DTYPES[o.dtype]}, {'NHWC (channels-last)' if o.channels_last else 'NCHW'}, "
                         f"on the GPU",
                "exporter": "torch modules from ofa_core.static, BatchNorm folded into the convs",
                "timing": _TIMING_TEXT["sync" if o.sync_ops else o.mode] +
                          "subnets: CUDA events around each run from an idle stream, host synchronized after each "
                          f"run; warm-up windows until the median drops by <= {SETTLE_TOL:.0%}"}

    def versions(self) -> dict[str, str]:
        return gpu_versions()


def gpu_versions() -> dict[str, str]:
    """torch/CUDA/cuDNN versions and the GPU's name, capability, SM count and memory."""
    import torch

    out = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(cudnn=str(torch.backends.cudnn.version()), gpu=p.name, capability=f"{p.major}.{p.minor}",
                   sm_count=str(p.multi_processor_count), memory_gib=f"{p.total_memory / 2**30:.1f}",
                   cudnn_allow_tf32=str(torch.backends.cudnn.allow_tf32),
                   matmul_allow_tf32=str(torch.backends.cuda.matmul.allow_tf32))
    return out


# --- timing: loops over a timer or marks, so they run (and are tested) without CUDA too -----------------------

RunTimer = Callable[[Callable[[], Any]], float]  # times one call of a function, in seconds
Window = Callable[[Callable[[], Any], int, float, int], list]  # (run, min_runs, min_s, max_runs) -> run times (s)


def wall_timer(fn: Callable[[], Any]) -> float:
    """Host wall-clock time of one call (CPU work; for GPU work use :class:`EventTimer`)."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def timed_window(fn: Callable[[], Any], timer: RunTimer, min_runs: int, min_s: float,
                 max_runs: int = 1_000_000) -> list[float]:
    """Run times (s) of calls timed one by one: at least ``min_runs`` and ``min_s`` seconds, at most ``max_runs``."""
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max(1, min_runs) or time.perf_counter() - start < min_s:
        samples.append(timer(fn))
        if len(samples) >= max_runs:
            break
    return samples


def synced_window(timer: RunTimer) -> Window:
    """A :data:`Window` timing every run on its own with ``timer``."""
    return lambda fn, min_runs, min_s, max_runs: timed_window(fn, timer, min_runs, min_s, max_runs)


class WallMark:
    """A host-clock stand-in for :class:`torch.cuda.Event` (record / synchronize / elapsed_time in ms)."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "WallMark") -> float:
        return (end.t - self.t) * 1e3


class ChainWindow:
    """Times back-to-back runs: a mark (CUDA event) is recorded before the first run and after every run, with no
    host synchronization in between, and the host waits once at the end. Sample k is the time between marks k and
    k+1: while the GPU is the bottleneck, run k's GPU time; while launches are, the time to launch run k."""

    def __init__(self, new_mark: Callable[[], Any]):
        self.new_mark = new_mark
        self.marks: list[Any] = []  # reused across windows

    def _mark(self, i: int) -> Any:
        while len(self.marks) <= i:
            self.marks.append(self.new_mark())
        return self.marks[i]

    def __call__(self, fn: Callable[[], Any], min_runs: int, min_s: float, max_runs: int = 1_000_000) -> list[float]:
        self._mark(0).record()
        n, start = 0, time.perf_counter()
        while n < max(1, min_runs) or time.perf_counter() - start < min_s:
            fn()
            n += 1
            self._mark(n).record()
            if n >= max_runs:
                break
        self.marks[n].synchronize()
        return [self.marks[i].elapsed_time(self.marks[i + 1]) * 1e-3 for i in range(n)]


def settled(medians: Sequence[float], tol: float = SETTLE_TOL) -> bool:
    """Whether warm-up is over: the last window's median is at most ``tol`` below the one before."""
    return len(medians) >= 2 and medians[-1] >= medians[-2] * (1.0 - tol)


def warm_up(window: Callable[[], float], tol: float = SETTLE_TOL, max_windows: int = MAX_WARMUP_WINDOWS
            ) -> list[float]:
    """Run warm-up windows (each returning its median) until :func:`settled`; returns the medians."""
    medians: list[float] = []
    while len(medians) < max(2, max_windows):
        medians.append(window())
        if settled(medians, tol):
            break
    return medians


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def time_item(fn: Callable[[], Any], timing: TimingSettings, window: Window = synced_window(wall_timer),
              tol: float = SETTLE_TOL, max_windows: int = MAX_WARMUP_WINDOWS) -> list[float]:
    """Warm up until settled (windows of ``warmup_runs`` runs and ``warmup_s`` s), then time one window of
    ``min_runs`` runs and ``min_s`` s. Returns the timed window's run times in seconds (the agent's timer hook)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        warm_up(lambda: _median(window(fn, timing.warmup_runs, timing.warmup_s, timing.max_runs)), tol, max_windows)
        return window(fn, timing.min_runs, timing.min_s, timing.max_runs)
    finally:
        if gc_was_enabled:
            gc.enable()


class EventTimer:
    """Times one call with CUDA events on the current stream; the host waits for the end event, so the next
    call starts on an idle stream (single-inference latency, launch overhead included)."""

    def __init__(self) -> None:
        import torch

        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], Any]) -> float:
        self._start.record()
        fn()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) * 1e-3


_TIMING_TEXT = {
    "eager": "ops: back-to-back forwards, CUDA events between consecutive runs, one host synchronization per window "
             "(an op's cost inside a stream of ops); ",
    "graph": f"ops: a CUDA graph of {GRAPH_OP_REPEAT} back-to-back forwards replayed like a subnet, time divided by "
             f"{GRAPH_OP_REPEAT} (the op's GPU time inside a graph); ",
    "sync": "ops: like subnets; ",
}


def item_timer(options: CudaOptions, per_run: RunTimer, new_mark: Callable[[], Any]
               ) -> Callable[[Any, TimingSettings], list[float]]:
    """The agent's timer hook: per run object, the window its kind and mode call for (module docstring; runs
    timed one by one with ``per_run``, chains marked with ``new_mark()``), samples divided by the run's
    ``repeat``."""
    single, chain = synced_window(per_run), ChainWindow(new_mark)

    def timer(run: Any, timing: TimingSettings) -> list[float]:
        chained = run.kind == OP and options.mode == "eager" and not options.sync_ops
        return [s / run.repeat for s in time_item(run, timing, chain if chained else single)]
    return timer


def cuda_timer(options: CudaOptions) -> Callable[[Any, TimingSettings], list[float]]:
    """:func:`item_timer` with CUDA events."""
    import torch

    return item_timer(options, EventTimer(), lambda: torch.cuda.Event(enable_timing=True))


# --- building and running items ---------------------------------------------------------------------------------

def prepare(item: Item, options: CudaOptions, device: str = "cuda") -> tuple[Any, Any]:
    """(module, input) for ``item`` on ``device``: BN folded, ``options``' dtype, batch and memory format. The
    module is built on ``device`` (weights initialised there, no host-to-device copies)."""
    import torch

    from ofakit.ofa_core.bn import fold_bn

    with torch.device(device):
        module, example = item.module()
        module = fold_bn(module)
    dtype = getattr(torch, DTYPES[options.dtype])
    fmt = torch.channels_last if options.channels_last else torch.contiguous_format
    module = module.to(dtype=dtype, memory_format=fmt).eval()
    x = torch.randn((options.batch, *example.shape[1:]), device=device, dtype=dtype)
    if x.dim() == 4:
        x = x.contiguous(memory_format=fmt)
    return module, x


class EagerRun:
    """One eager forward per call (the worker runs under ``torch.inference_mode``). ``kind``: the item's."""

    repeat = 1

    def __init__(self, module: Any, x: Any, kind: str = ""):
        self.module, self.x, self.kind = module, x, kind

    def __call__(self) -> Any:
        return self.module(self.x)


class GraphRun:
    """One replay of a CUDA graph of ``repeat`` back-to-back ``module(x)`` per call; captured after warm-up runs
    on a side stream. ``pool``: a memory pool shared by graphs that never run at the same time (the worker's items
    run one after the other), so each capture reuses the memory of the graphs before it."""

    def __init__(self, module: Any, x: Any, kind: str = "", repeat: int = 1, warmup_runs: int = GRAPH_WARMUP_RUNS,
                 pool: Any = None):
        import torch

        self.module, self.x, self.kind, self.repeat = module, x, kind, repeat
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_runs):
                module(x)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            for _ in range(repeat):
                self.out = module(x)  # static output buffer; kept alive with the graph
        torch.cuda.synchronize()

    def __call__(self) -> None:
        self.graph.replay()


def load(path: str, threads: int, options: CudaOptions, device: str = "cuda", pool: Any = None
         ) -> Callable[[], Any]:
    """The agent's loader: the item described by the JSON file at ``path``, ready to run on ``device`` (graph
    mode: captured into memory pool ``pool``)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    item = Item(data["kind"], data["spec"])
    module, x = prepare(item, options, device)
    if options.mode == "eager":
        return EagerRun(module, x, item.kind)
    repeat = GRAPH_OP_REPEAT if item.kind == OP and not options.sync_ops else 1
    return GraphRun(module, x, item.kind, repeat, pool=pool)


def bring_to_speed(max_s: float = 3.0, size: int = 4096, per_window: int = 10) -> list[float]:
    """Run matrix products until their time stops dropping (GPU clocks up); returns the window medians (ms)."""
    import torch

    a = torch.randn(size, size, device="cuda")
    timer = EventTimer()
    end = time.perf_counter() + max_s
    medians: list[float] = []
    while time.perf_counter() < end:
        medians.append(_median([timer(lambda: a @ a) for _ in range(per_window)]) * 1e3)
        if len(medians) >= 3 and settled(medians):
            break
    return medians


def main(argv: Sequence[str] | None = None) -> int:
    import functools

    from ..agent.ofakit_agent import serve

    p = argparse.ArgumentParser(description="torch CUDA timing worker")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--options", default="")
    args = p.parse_args(argv)
    try:
        options = CudaOptions.parse(args.options)
    except UserError as exc:
        print(f"torch_cuda worker: {exc}", file=sys.stderr)
        return 2
    why = cuda_unavailable(options)
    if why:
        print(f"torch_cuda worker: {why}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = options.cudnn_benchmark
    medians = bring_to_speed()
    print(f"torch_cuda worker: {torch.cuda.get_device_name()} warm ({len(medians)} windows, 4096^2 fp32 "
          f"matmul {medians[0]:.3f} -> {medians[-1]:.3f} ms); options {options.suffix}", file=sys.stderr)
    pool = torch.cuda.graph_pool_handle() if options.mode == "graph" else None
    with torch.inference_mode():
        serve(functools.partial(load, options=options, pool=pool), args.threads, timer=cuda_timer(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
