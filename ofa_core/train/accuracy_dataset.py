"""The accuracy dataset: N random subnets of a trained supernet and their held-out top-1, as JSON lines.

Each record is ``{"ks", "e", "d", "r", "width", "acc"}`` (``acc`` a fraction), what
``predictors.accuracy.load_accuracy_jsonl`` reads. The N subnets are a fixed, de-duplicated draw from ``seed``;
under ``torchrun`` rank i evaluates subnets i, i + world, ... The file is resumable: subnets already in it are
skipped, every record is appended with one ``write`` and fsynced, and a line torn by a crash is cut off first.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import UserError
from ..records import read_accuracy_records
from ..space import ArchConfig, sample_batch, space_for_width
from ..supernet import OFAMobileNetV3
from .data import Splits
from .dist import DistEnv
from .evaluate import BatchCache, arch_record, subnet_accuracy

_CHUNK = 256


def dataset_archs(n: int, width: float, resolutions: Sequence[int], seed: int = 0) -> list[ArchConfig]:
    """``n`` distinct random subnets (uniform per choice); a longer list extends a shorter one (same seed), so a
    file can grow from ``--n 1000`` to ``--n 2000``."""
    if n < 1:
        raise UserError(f"n: expected a positive number of subnets, got {n}")
    rng = np.random.default_rng([seed, 7])
    out: dict[ArchConfig, None] = {}
    while len(out) < n:
        for a in sample_batch(rng, _CHUNK, space_for_width(width), resolutions).to_configs():
            out.setdefault(a, None)
    return list(out)[:n]


def repair_tail(path: Path) -> None:
    """Cut a last line left without its newline by a crash (it was never a complete record)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_done(path: Path) -> set[ArchConfig]:
    """The subnets already recorded in ``path`` (errors name the line)."""
    return set(read_accuracy_records(path)[0]) if path.exists() else set()


def build_accuracy_dataset(model: OFAMobileNetV3, splits: Splits, out: str | os.PathLike, n: int,
                           resolutions: Sequence[int], env: DistEnv | None = None, seed: int = 0,
                           batch_size: int = 200, center_crop: float = 0.875,
                           on_record: Callable[[int, int], None] | None = None) -> int:
    """Evaluate this rank's share of ``n`` random subnets not yet in ``out`` and append their records;
    returns how many this rank added. ``on_record(done, todo)`` reports progress."""
    env = env or DistEnv()
    out = Path(out)
    archs = dataset_archs(n, model.spec.width_mult, resolutions, seed)
    if env.is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(out)
    env.barrier()
    done = read_done(out)
    todo = [a for i, a in enumerate(archs) if i % env.world == env.rank and a not in done]
    cache = BatchCache()
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for k, arch in enumerate(todo):
            acc = subnet_accuracy(model, arch, splits, batch_size, center_crop, cache)
            os.write(fd, (json.dumps({**arch_record(arch), "acc": acc}) + "\n").encode("utf-8"))
            os.fsync(fd)
            if on_record is not None:
                on_record(k + 1, len(todo))
    finally:
        os.close(fd)
    env.barrier()
    return len(todo)
