"""Where profiles and saved predictors live.

Shipped profiles are read-only package data (this package's ``<name>/`` folders). Everything ofakit writes goes
to the user's data folder: ``$OFAKIT_PROFILE_DIR``, else ``$XDG_DATA_HOME/ofakit/profiles``, else
``~/.local/share/ofakit/profiles``. A name is looked up in the user folder first, so a user profile named like a
shipped one shadows it (said once per process on stderr).
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

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
