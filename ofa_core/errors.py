"""Error types shared by every ofakit package.

A :class:`UserError` is a mistake the user can fix (bad file, bad flag, missing profile); the CLI prints its
message as one line and exits with code 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from typing import Callable, Sequence


def literal(text: str) -> str:
    """``text`` for a message template of a :class:`UserError` with ``params`` (its braces kept as braces)."""
    return text.replace("{", "{{").replace("}", "}}")


class UserError(ValueError):
    """A user mistake: reported as one line, exit code 2.

    A message that tells the user to set an argument names it as a ``{placeholder}`` listed in ``params``: the
    message reads with the Python argument's name (``accept_new_host_key``), and :meth:`render` lets the command
    line show its option instead (``--accept-new-host-key``), so library messages never name command-line flags.
    """

    def __init__(self, message: str = "", *, params: Sequence[str] = ()):
        self.template, self.params = message, tuple(params)
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The message with each argument named by ``name(argument)``."""
        return self.template.format(**{p: name(p) for p in self.params}) if self.params else self.template


class ArchError(UserError):
    """An invalid architecture config; the message names the bad field."""


class ParameterError(UserError):
    """A bad value of the argument ``param``: reads ``param: detail`` (the CLI shows the matching option,
    ``min_time`` -> ``--min-time``)."""

    def __init__(self, param: str, detail: str):
        super().__init__(f"{{{param}}}: {literal(detail)}", params=(param,))
        self.param, self.detail = param, detail

    def __reduce__(self) -> tuple:  # picklable across worker processes
        return type(self), (self.param, self.detail)
