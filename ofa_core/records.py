"""The accuracy-dataset record format: one JSON object per line, OFA's arch dict plus ``width`` and ``acc``
(top-1 as a fraction). Written by ``ofakit accuracy-dataset``, read by the accuracy predictor."""
from __future__ import annotations

import json
import os
from typing import Any

from .errors import UserError
from .space import ArchConfig


def read_accuracy_records(path: str | os.PathLike) -> tuple[list[ArchConfig], list[float]]:
    """(archs, accuracies) of every record in ``path``; errors name the file and line."""
    archs: list[ArchConfig] = []
    acc: list[float] = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read accuracy data ({exc.strerror})") from None
    with f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "acc" not in rec:
                    raise UserError("expected a JSON object with an 'acc' field")
                a = rec.pop("acc")
                if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
                    raise UserError(f"acc: expected a fraction in [0, 1], got {a!r}")
                archs.append(ArchConfig.from_ofa_dict(rec))
                acc.append(float(a))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{no}: not valid JSON ({exc.msg})") from None
            except UserError as exc:
                raise UserError(f"{path}:{no}: {exc}") from None
    return archs, acc


def parse_csv_arch_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row that ofakit writes (an ``arch`` column holding OFA's dict as JSON, or ``ks``/``e``/``d`` JSON
    list columns) as one flat record; other columns are kept as strings."""
    rec: dict[str, Any] = {}
    for k, v in row.items():
        if k is None or v in (None, ""):
            continue
        rec[k] = json.loads(v) if k in ("arch", "ks", "e", "d", "r", "width") else v
    arch = rec.pop("arch", None)
    if arch is not None:
        if not isinstance(arch, dict):
            raise UserError("arch: expected OFA's arch dict as JSON")
        rec = {**{k: v for k, v in rec.items() if k not in ("ks", "e", "d", "r")}, **arch}
    return rec
