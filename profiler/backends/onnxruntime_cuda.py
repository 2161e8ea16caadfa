"""onnxruntime's CUDA execution provider: ONNX files (BN folded, fixed batch) run with inputs and outputs bound
on the GPU. Needs the ``onnxruntime-gpu`` package; the ``onnxruntime`` wheel has only the CPU provider, and then
this backend reports itself unavailable with that reason.

Name: ``onnxruntime-cuda`` (batch 1) or ``onnxruntime-cuda-b<N>``. The worker (``python -m
profiler.backends.onnxruntime_cuda``) times runs with the agent's loop on the wall clock: ``run_with_iobinding``
returns only after the CUDA provider has synchronized its stream, so one run's wall time is one inference.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from . import register_backend
from .onnxruntime import OnnxRuntimeCPU
from .torch_cuda import CudaOptions

PROVIDER = "CUDAExecutionProvider"


def ort_cuda_unavailable() -> str | None:
    """Why onnxruntime cannot run on CUDA here (one line), or None when it can."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed (the CUDA build is the onnxruntime-gpu package)"
    providers = ort.get_available_providers()
    if PROVIDER not in providers:
        return (f"onnxruntime {ort.__version__} has no {PROVIDER} (it has {', '.join(providers)}); the CUDA build "
                f"is the onnxruntime-gpu package")
    return None


@register_backend("onnxruntime-cuda")
class OnnxRuntimeCUDA(OnnxRuntimeCPU):
    device = "gpu"
    pip_name = "onnxruntime-gpu"
    on_boards = False

    def __init__(self, batch: int = 1):
        self.batch = int(batch)

    @classmethod
    def from_options(cls, text: str) -> "OnnxRuntimeCUDA":
        opts = CudaOptions.parse(text)
        if opts != CudaOptions(batch=opts.batch):
            from ofakit.ofa_core.errors import UserError

            raise UserError(f"onnxruntime-cuda: only a batch option (b<N>) is supported, got {text!r}")
        return cls(opts.batch)

    def unavailable(self) -> str | None:
        return ort_cuda_unavailable()

    def build_tag(self) -> str:
        return f"{super().build_tag()}-b{self.batch}"

    def worker_argv(self, threads: int) -> list[str]:
        return [sys.executable, "-m", __name__, "--threads", str(threads)]

    def describe(self) -> dict[str, Any]:
        return {"mode": "onnxruntime-cuda", "batch": self.batch, "input": "random float32, NCHW, bound on the GPU",
                "timing": "wall clock around run_with_iobinding (the CUDA provider synchronizes its stream)"}

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "providers": ",".join(ort.get_available_providers())}


def load(path: str, threads: int) -> Callable[[], Any]:
    """A CUDA-provider session for ``path`` with its input and output bound on the GPU."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=[PROVIDER, "CPUExecutionProvider"])
    if sess.get_providers()[0] != PROVIDER:
        raise RuntimeError(f"onnxruntime did not enable {PROVIDER} (got {sess.get_providers()})")
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([int(d) for d in inp.shape]).astype(np.float32)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda", 0)
    return lambda: sess.run_with_iobinding(binding)


def wall_time_runs(fn: Callable[[], Any], timing: Any) -> list[float]:
    """The agent's timing loop on the wall clock, whatever the job says: the host thread waits for the GPU, so
    its CPU time is not the latency."""
    from dataclasses import replace

    from ..agent.ofakit_agent import time_runs

    return time_runs(fn, replace(timing, clock="wall"))[0]


def main(argv: Sequence[str] | None = None) -> int:
    from ..agent.ofakit_agent import serve

    p = argparse.ArgumentParser(description="onnxruntime CUDA timing worker")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    why = ort_cuda_unavailable()
    if why:
        print(f"onnxruntime_cuda worker: {why}", file=sys.stderr)
        return 2
    serve(load, args.threads, timer=wall_time_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
