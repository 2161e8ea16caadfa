"""Process-group plumbing: one code path for a single process and for ``torchrun`` (NCCL on GPUs, gloo on CPU).

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_distributed` reads them and starts the
process group, or returns a one-process environment when they are absent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import UserError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: its rank among ``world`` processes and the device it computes on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def shard_map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` with rank i computing items i, i+world, ...; every rank gets all results."""
        mine = {i: fn(items[i]) for i in range(self.rank, len(items), self.world)}
        merged: dict[int, R] = {}
        for part in self.gather(mine):
            merged.update(part)
        return [merged[i] for i in range(len(items))]


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group ``torchrun`` describes (if any) and pick this rank's device.

    ``device`` forces ``cpu`` or ``cuda``; by default CUDA is used when available. Local rank i computes on GPU
    ``i % device_count``; with one GPU per local rank the group uses NCCL, with more ranks than GPUs (e.g. several
    accuracy-dataset workers sharing one GPU, which NCCL refuses) and on CPU it uses gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    n_gpus = torch.cuda.device_count() if use_cuda else 0
    if use_cuda and not n_gpus:
        raise UserError("device cuda: no CUDA device is visible to this process")
    dev = torch.device("cuda", local % n_gpus) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda and local_world <= n_gpus else "gloo", rank=rank,
                                world_size=world)
    return DistEnv(rank, world, local, dev)


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
