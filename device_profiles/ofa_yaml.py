"""Interop with OFA's latency tables: a folder of ``<R>_lookup_table.yaml`` files, one per resolution, each a
mapping ``key -> {count, mean, std}`` in milliseconds.

Import keeps every entry of every file (OFA re-measured the resolution-independent head ops per file, so they are
stored per resolution); export writes the same files back, entry for entry, with the same numbers.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ofakit.ofa_core import __version__
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.fileio import staged_folder
from ofakit.ofa_core.ops import OpSpec, resolution_ops
from ofakit.ofa_core.space import space_for_width
from ofakit.ofa_core.strict import load_yaml, validated

from . import OpStats, Profile, ProfileMeta, atomic_write_text
from .schema import OfaEntrySchema

_FILE_RE = re.compile(r"(\d+)_lookup_table\.ya?ml")


def import_ofa(folder: str | Path, name: str, width: float) -> Profile:
    """Read OFA's YAML tables from ``folder`` into a profile named ``name`` for the width-``width`` space.

    Every key must parse and belong to the space at that width and resolution (a wrong ``--width`` is caught).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of OFA lookup tables")
    files = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _FILE_RE.fullmatch(p.name)))
    if not files:
        raise UserError(f"{folder}: no <R>_lookup_table.yaml files")
    spec = space_for_width(width)
    entries: list[OpStats] = []
    for r, path in files:
        data = load_yaml(path, "OFA lookup table")
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of operator keys")
        expected = {op.key for op in resolution_ops(spec, r)}
        for key, stats in data.items():
            try:
                OpSpec.from_key(str(key))
            except UserError as exc:
                raise UserError(f"{path}: {exc}") from None
            if key not in expected:
                raise UserError(f"{path}: operator {key} is not in the width-{spec.width_mult} space at r={r} "
                                f"(wrong --width?)")
            s = validated(OfaEntrySchema, stats, f"{path}: entry {key}", UserError)
            entries.append(OpStats(key=key, ms=s["mean"], resolution=r, mean_ms=s["mean"], std_ms=s["std"],
                                   n=s["count"]))
        missing = expected - set(data)
        if missing:
            raise UserError(f"{path}: {len(missing)} of the {len(expected)} operators at r={r} are missing "
                            f"(e.g. {min(missing)})")
    meta = ProfileMeta(name=name, device=name, backend="ofa-lut", width=spec.width_mult,
                       resolutions=[r for r, _ in files], source=f"ofa-import:{folder.name}",
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"), ofakit_version=__version__,
                       method={"statistic": "mean", "note": "imported from OFA lookup tables"})
    return Profile(meta, entries)


def export_ofa(profile: Profile, folder: str | Path) -> list[Path]:
    """Write the profile as OFA YAML tables (one file per resolution of the profile) into ``folder``, all of them or
    none (staged beside it)."""
    folder = Path(folder)
    spec = space_for_width(profile.meta.width)
    tables = {}
    for r in profile.meta.resolutions:
        table = {}
        for op in sorted(resolution_ops(spec, r), key=lambda o: o.key):
            s = profile.lookup(op.key, r)
            # "mean" is the value ofakit predicts with (for a measured op the minimum of round medians), so a round
            # trip through OFA's format predicts the same
            table[op.key] = {"count": int(s.n or 0), "mean": float(s.ms), "std": float(s.std_ms or 0.0)}
            validated(OfaEntrySchema, table[op.key], f"{folder}: entry {op.key} at r={r}", UserError)
        tables[f"{r}_lookup_table.yaml"] = yaml.safe_dump(table, sort_keys=True, default_flow_style=False)
    with staged_folder(folder) as tmp:
        for name, text in tables.items():
            atomic_write_text(tmp / name, text)
    return [folder / name for name in tables]
