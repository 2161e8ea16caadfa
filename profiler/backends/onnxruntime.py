"""onnxruntime on the CPU: ONNX files built straight from the ops (:mod:`ofakit.ofa_core.direct`, the graph torch's
exporter writes), timed by the agent's worker."""
from __future__ import annotations

import importlib.util

from . import Backend, register_backend


@register_backend("onnxruntime")
class OnnxRuntimeCPU(Backend):
    format = "onnx"
    suffix = ".onnx"
    runtime_modules = ("onnxruntime",)
    pip_name = "onnxruntime"
    on_boards = True

    def unavailable(self) -> str | None:
        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"
