"""Where profiles and saved predictors live.

Shipped profiles are read-only package data (this package's ``<name>/`` folders). Everything ofakit writes goes
to the user's data folder: ``$OFAKIT_PROFILE_DIR``, else ``$XDG_DATA_HOME/ofakit/profiles``, else
``~/.local/share/ofakit/profiles``. A name is looked up in the user folder first, so a user profile named like a
shipped one shadows it (said once per process on stderr). :func:`catalog` describes every profile and saved
predictor found (what ``ofakit profiles list`` prints).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

from ofakit.ofa_core.errors import UserError

SHIPPED_DIR = Path(__file__).resolve().parent
MARKERS = ("profile.json", "predictor.json")
"""A folder holding one of these files is a profile or a saved predictor."""


def user_dir() -> Path:
    """The user's profile folder (it may not exist yet)."""
    env = os.environ.get("OFAKIT_PROFILE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "ofakit" / "profiles"


def search_dirs() -> list[Path]:
    """Folders searched for a name, first match wins: the user's, then the shipped ones."""
    return [user_dir(), SHIPPED_DIR]


def check_name(name: str) -> str:
    """``name`` if it is a plain folder name; :class:`UserError` for ``''``, ``.``, ``..``, separators and the like."""
    bad = (not name or name in (".", "..") or name != name.strip() or any(c in name for c in "/\\\0")
           or name.startswith("-") or Path(name).name != name)
    if bad:
        raise UserError(f"--name: {name!r} is not a profile name (a plain name such as 'my-cpu', not a path)")
    return name


def is_shipped(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` lies inside the shipped (read-only) profiles."""
    try:
        Path(folder).resolve().relative_to(SHIPPED_DIR)
    except ValueError:
        return False
    return True


def write_folder(name: str) -> Path:
    """The folder a new or changed profile / predictor called ``name`` is written to (in the user's folder)."""
    return user_dir() / check_name(name)


def entries() -> dict[str, list[Path]]:
    """Every name on the search path with its folders, first the one a lookup returns."""
    out: dict[str, list[Path]] = {}
    for d in search_dirs():
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if any((p / m).is_file() for m in MARKERS):
                    out.setdefault(p.name, []).append(p)
    return out


def find(name: str, marker: str = "profile.json") -> Path | None:
    """The folder of the profile (or, with ``marker="predictor.json"``, saved predictor) ``name``; None if there
    is none or ``name`` is not a plain name. Says once per process when a user folder shadows a shipped one."""
    try:
        check_name(name)
    except UserError:
        return None
    hits = [d / name for d in search_dirs() if (d / name / marker).is_file()]
    if not hits:
        return None
    if len(hits) > 1 and is_shipped(hits[1]):
        _shadow_notice(str(hits[0]), name)
    return hits[0]


@functools.lru_cache(maxsize=None)
def _shadow_notice(folder: str, name: str) -> None:
    print(f"ofakit: note: using your profile {folder}, which shadows the shipped profile {name!r}", file=sys.stderr)


SOURCES = {"measured": "measured", "ofa-import": "imported", "few-shot": "few-shot",
           "latency-regressor": "fitted"}
"""How a profile or saved predictor came to be, by its ``source`` prefix or predictor kind."""


def source_kind(raw: str) -> str:
    """``measured``, ``imported``, ``few-shot``, ``fitted`` from a ``source`` field or predictor kind."""
    return SOURCES.get(raw.split(":")[0], raw or "?")


def validation_text(val: dict[str, Any]) -> str:
    """``n=100 ±10%: 100% RMSE 4.0% (calibrated)`` from a profile's stored validation figures, or ``-``."""
    for row, label in (("corrected", "calibrated"), ("raw", "LUT sum")):
        m = val.get(row)
        if isinstance(m, dict) and "within10" in m:
            return f"n={val.get('n', m.get('n', '?'))} ±10%: {m['within10']:.0f}% RMSE {m['rmse_pct']:.1f}% ({label})"
    return "-"


def resolutions_text(res: list[int]) -> str:
    """``128:224:4`` for an evenly spaced list, else ``160,176,224``."""
    if len(res) > 2 and len({b - a for a, b in zip(res, res[1:])}) == 1:
        return f"{res[0]}:{res[-1]}:{res[1] - res[0]}"
    return ",".join(str(r) for r in res)


def describe(folder: Path) -> dict[str, Any]:
    """One row of `profiles list` for a profile or saved predictor folder (a damaged one says so)."""
    where = "shipped" if is_shipped(folder) else "yours"
    row: dict[str, Any] = {"name": folder.name, "where": where, "path": str(folder)}
    try:
        if (folder / "profile.json").is_file():
            meta = json.loads((folder / "profile.json").read_text(encoding="utf-8"))
            env = meta.get("environment") or {}
            row.update(device=meta.get("device", ""), backend=meta.get("backend", ""),
                       threads=meta.get("threads"), width=meta.get("width"),
                       resolutions=resolutions_text(list(meta.get("resolutions") or [])),
                       source=source_kind(str(meta.get("source", ""))), validation=validation_text(meta.get("validation") or {}),
                       emulated="yes" if env.get("emulated") else "no",
                       calibrated="yes" if meta.get("calibration") else "no")
        else:
            body = json.loads((folder / "predictor.json").read_text(encoding="utf-8"))
            meta = body.get("meta") or {}
            row.update(device="", backend="", threads=None, width=meta.get("width"), resolutions="",
                       source=source_kind(str(body.get("kind", ""))), validation="-", emulated="no", calibrated="-")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        row.update(source=f"damaged ({exc.__class__.__name__})")
    return row


def catalog() -> list[dict[str, Any]]:
    """:func:`describe` of every profile and saved predictor by name, yours shadowing shipped ones."""
    rows, found = [], entries()
    for folders in (found[name] for name in sorted(found)):
        row = describe(folders[0])
        if len(folders) > 1:
            row["where"] += f" (shadows {describe(folders[1])['where']})"
        rows.append(row)
    return rows
