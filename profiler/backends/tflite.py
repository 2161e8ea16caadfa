"""TFLite with its XNNPACK CPU delegate: files built straight from the ops with the TFLite schema
(:mod:`ofakit.ofa_core.direct`, the graph litert-torch writes), timed by the agent's worker (which accepts ai_edge_litert or
tflite_runtime)."""
from __future__ import annotations

import importlib.util

from . import Backend, register_backend


@register_backend("tflite")
class TFLiteCPU(Backend):
    format = "tflite"
    suffix = ".tflite"
    runtime_modules = ("ai_edge_litert", "tflite_runtime")
    pip_name = "tflite-runtime"  # the board wheel (numpy<2 builds); ai-edge-litert on a desktop
    on_boards = True

    def unavailable(self) -> str | None:
        if not any(importlib.util.find_spec(m) for m in self.runtime_modules):
            return "needs ai-edge-litert or tflite-runtime (pip install 'ofakit[tflite]')"
        if not importlib.util.find_spec("ai_edge_litert"):
            return "building .tflite files needs ai-edge-litert (pip install 'ofakit[tflite]')"
        return None
