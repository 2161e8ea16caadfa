"""The accuracy-dataset record format: one JSON object per line, OFA's arch dict plus ``width`` and ``acc``
(top-1 as a fraction). Written by ``ofakit accuracy-dataset``, read by the accuracy predictor."""
from __future__ import annotations

import os
from typing import Any

from .errors import UserError
from .space import ArchConfig
from .strict import parse_json, read_text


def read_accuracy_records(path: str | os.PathLike) -> tuple[list[ArchConfig], list[float]]:
    """(archs, accuracies) of every record in ``path``; errors name the file and line."""
    archs: list[ArchConfig] = []
    acc: list[float] = []
    seen: dict[ArchConfig, float] = {}
    for no, line in enumerate(read_text(path, "accuracy data").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        rec = parse_json(line, where)
        if not isinstance(rec, dict) or "acc" not in rec:
            raise UserError(f"{where}: expected a JSON object with an 'acc' field")
        a = rec.pop("acc")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise UserError(f"{where}: acc: expected a fraction in [0, 1], got {a!r}")
        try:
            arch = ArchConfig.from_ofa_dict(rec)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        if seen.setdefault(arch, float(a)) != float(a):
            raise UserError(f"{where}: this subnet is listed before with accuracy {seen[arch]}")
        archs.append(arch)
        acc.append(float(a))
    return archs, acc


def parse_csv_arch_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row that ofakit writes (an ``arch`` column holding OFA's dict as JSON, or ``ks``/``e``/``d`` JSON
    list columns) as one flat record; other columns are kept as strings."""
    rec: dict[str, Any] = {}
    for k, v in row.items():
        if k is None or v in (None, ""):
            continue
        rec[k] = parse_json(v, k) if k in ("arch", "ks", "e", "d", "r", "width") else v
    arch = rec.pop("arch", None)
    if arch is not None:
        if not isinstance(arch, dict):
            raise UserError("arch: expected OFA's arch dict as JSON")
        rec = {**{k: v for k, v in rec.items() if k not in ("ks", "e", "d", "r")}, **arch}
    return rec
