"""The accuracy-dataset record format: one JSON object per line, OFA's arch dict plus ``width`` and ``acc``
(top-1 as a fraction). Written by ``ofakit accuracy-dataset``, read by the accuracy predictor."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import UserError
from .fileio import atomic_write_text, staged_folder
from .space import ArchConfig
from .strict import FileFormatError, csv_rows, parse_json, read_text


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


MODEL_SUFFIXES = (".onnx", ".tflite", ".pt", ".pth", ".pb", ".h5")
ARCH_KEYS = ("ks", "e", "d", "r", "width")


def read_arch_records(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """(label, OFA arch dict) for every subnet in an arch file: one JSON dict, a JSON list of them, JSON lines,
    or a CSV whose rows hold an ``arch`` column or ``ks, e, d, r`` columns (what ofakit writes)."""
    path = Path(path)
    accepted = ("arch files are OFA's arch dict as JSON (one, a JSON list or JSON lines) or a CSV with an arch "
                "column (a search front, validation.csv); `ofakit sample` writes some")
    if path.suffix.lower() in MODEL_SUFFIXES:
        raise UserError(f"{path}: a model file; {accepted}")
    text = read_text(path, "arch file")
    try:
        if path.suffix.lower() == ".csv":
            rows = [(f"{path}:{no}", parse_csv_arch_row(row)) for no, row in csv_rows(text, path)]
        else:
            try:
                doc = parse_json(text, path)
                rows = ([(str(path), doc)] if not isinstance(doc, list)
                        else [(f"{path}[{i}]", d) for i, d in enumerate(doc)])
            except FileFormatError:  # JSON lines
                rows = [(f"{path}:{no}", parse_json(line, f"{path}:{no}"))
                        for no, line in enumerate(text.splitlines(), start=1) if line.strip()]
    except UserError as exc:
        raise UserError(f"{exc}; {accepted}") from None
    out = []
    for label, rec in rows:
        if not isinstance(rec, dict) or not {"ks", "e", "d", "r"} <= set(rec):
            raise UserError(f"{label}: no arch (ks, e, d, r) here; {accepted}")
        out.append((label, {k: rec[k] for k in ARCH_KEYS if k in rec}))
    if not out:
        raise UserError(f"{path}: no arch in the file; {accepted}")
    return out


def arch_line(arch: dict[str, Any]) -> str:
    """One arch dict as one line of JSON (the form ``ofakit sample`` writes)."""
    return json.dumps(arch, separators=(", ", ": "))


def write_arch_file(archs: list[dict[str, Any]], out: str | os.PathLike) -> str:
    """Write arch dicts as FILE.json (one arch, or a JSON list), FILE.jsonl (JSON lines) or a folder of
    ``arch-000.json`` ... (written whole); returns what was written, in words."""
    out = Path(out)
    lines = [arch_line(a) for a in archs]
    if out.suffix == ".jsonl":
        atomic_write_text(out, "\n".join(lines) + "\n")
        return f"wrote {len(archs)} archs to {out}"
    if out.suffix == ".json":
        atomic_write_text(out, (lines[0] if len(archs) == 1 else "[\n" + ",\n".join(lines) + "\n]") + "\n")
        return f"wrote {len(archs)} arch{'s' if len(archs) > 1 else ''} to {out}"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; give a folder, FILE.json or FILE.jsonl")
    names = [f"arch-{i:03d}.json" for i in range(len(archs))]
    with staged_folder(out) as tmp:
        for name, line in zip(names, lines):
            atomic_write_text(tmp / name, line + "\n")
    return f"wrote {names[0]}..{names[-1]} to {out}/" if len(names) > 1 else f"wrote {out / names[0]}"
