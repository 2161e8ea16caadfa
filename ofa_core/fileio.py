"""Crash-safe file writes used across ofakit: nothing is ever left half-written."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from .errors import UserError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it (unless ``sync`` is False: a cache file that can
    be made again), then rename it over ``path`` (creating the parent folder). The file gets the usual mode, or
    keeps the mode of the file it replaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    try:
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8 (newlines written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def staged_folder(dest: str | os.PathLike, last: str | None = None) -> Iterator[Path]:
    """Write a multi-file output whole or not at all: yields an empty temp folder beside ``dest``; when the block
    succeeds its files go into place, else it is removed and ``dest`` is left as it was.

    A missing (or empty) ``dest`` is replaced by the temp folder in one rename. Into an existing folder (which may
    hold the user's other files) the staged files are renamed one by one, ``last`` (the file that makes the
    folder loadable, e.g. ``predictor.json``) after all the others."""
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name[:64]}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if not dest.exists():
            os.replace(tmp, dest)
            return
        for p in sorted(tmp.iterdir(), key=lambda p: p.name == last):
            os.replace(p, dest / p.name)
        tmp.rmdir()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_out(path: str | os.PathLike | None, kind: Literal["file", "folder"], option: str = "--out") -> None:
    """Refuse an output path that could not be written, before any long work starts: empty, too long a name, under
    a file, a folder where a file is wanted (or the reverse), or in a folder this user cannot write. Errors name
    the path as the user gave it. ``None`` (the option left out) passes."""
    if path is None:
        return
    p = Path(path)
    if str(path) in ("", ".") or p.name in ("", ".", ".."):
        raise UserError(f"{option} {str(path)!r}: name a {kind} to write")
    limit = os.pathconf(".", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if any(len(part.encode()) > limit for part in p.parts):
        raise UserError(f"{option} {path}: a name in it is longer than {limit} bytes")
    if p.is_dir() and kind == "file":
        raise UserError(f"{option} {path}: is a folder, not a file")
    if p.exists() and not p.is_dir() and kind == "folder":
        raise UserError(f"{option} {path}: is a file, not a folder")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write in {parent} (permission denied)")
