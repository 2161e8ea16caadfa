"""torch eager on the CPU. The "model file" is the item's JSON description; the worker (``python -m
profiler.backends.torch_cpu --threads N``) rebuilds the module from :mod:`ofakit.ofa_core.static` and times it with
the agent's own timing loop (:func:`ofakit.profiler.agent.ofakit_agent.serve`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from ofakit.device_profiles import atomic_write_text

from ..items import Item
from . import Backend, register_backend


@register_backend("torch")
class TorchCPU(Backend):
    format = "torch"
    suffix = ".json"
    runtime_modules = ("torch",)
    pip_name = "torch"

    def build(self, item: Item, path: str) -> None:
        atomic_write_text(path, json.dumps({"kind": item.kind, "spec": item.spec}))

    def build_tag(self) -> str:
        return "torch-spec-v1"

    def worker_argv(self, threads: int) -> list[str]:
        return [sys.executable, "-m", __name__, "--threads", str(threads)]

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}


def load_torch(path: str, threads: int) -> Callable[[], Any]:
    """Build the item described by ``path`` and return a no-grad forward call."""
    import torch

    torch.set_num_threads(threads)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    module, x = Item(data["kind"], data["spec"]).module()

    def run() -> Any:
        with torch.inference_mode():
            return module(x)
    return run


def main() -> None:
    from ..agent.ofakit_agent import serve

    p = argparse.ArgumentParser(description="torch eager CPU timing worker")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    serve(load_torch, args.threads)


if __name__ == "__main__":
    main()
