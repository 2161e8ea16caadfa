"""Error types shared by every ofakit package.

A :class:`UserError` is a mistake the user can fix (bad file, bad flag, missing profile); the CLI prints its
message as one line and exits with code 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A user mistake: reported as one line, exit code 2."""


class ArchError(UserError):
    """An invalid architecture config; the message names the bad field."""


class ParameterError(UserError):
    """A bad argument of a library call. ``param`` names it as the Python API does; the CLI shows it as the
    matching option (``min_time`` -> ``--min-time``), so library messages never name command-line flags."""

    def __init__(self, param: str, detail: str):
        super().__init__(f"{param}: {detail}")
        self.param, self.detail = param, detail
