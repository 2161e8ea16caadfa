"""Error types shared by every ofakit package.

A :class:`UserError` is a mistake the user can fix (bad file, bad flag, missing profile); the CLI prints its
message as one line and exits with code 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A user mistake: reported as one line, exit code 2."""


class ArchError(UserError):
    """An invalid architecture config; the message names the bad field."""
