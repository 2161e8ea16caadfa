"""``ofakit`` console entry point.

Each command family lives in one module of :mod:`ofakit.commands` exposing ``register(app)``; adding a command
means adding a module name to :data:`COMMAND_MODULES`. Heavy imports (torch, onnxruntime) happen inside the
commands, so ``ofakit --help`` stays fast. A :class:`~ofakit.ofa_core.errors.UserError` or a usage mistake prints one
line on stderr and exits with code 2.
"""
from __future__ import annotations

import csv
import importlib
import json
import sys
from typing import Sequence

import click
import typer
import yaml

from ofakit.ofa_core.errors import UserError

# typer >= 0.2x vendors click (typer._click): its usage errors derive from typer.TyperException, not click's.
_USAGE_ERRORS = (click.exceptions.ClickException, getattr(typer, "TyperException", click.exceptions.ClickException))
_ABORTS = (click.exceptions.Abort, typer.Abort)

COMMAND_MODULES = ("run", "sample", "export", "profile", "profiles", "validate", "devices", "predict", "search",
                   "train")

app = typer.Typer(
    name="ofakit",
    help="Once-for-All for many devices: profile operators, build device LUTs, predict, search, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _print_version(value: bool) -> None:
    if value:
        from ofakit.ofa_core import __version__

        typer.echo(f"ofakit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print ofakit's version and exit.")) -> None:
    """Once-for-All for many devices: profile operators, build device LUTs, predict, search, export."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"ofakit.commands.{_name}").register(app)


def option_name(param: str) -> str:
    """The option that sets the library argument ``param`` (``min_time`` -> ``--min-time``)."""
    return "--" + param.replace("_", "-")


def _os_error(exc: OSError) -> str:
    """``FILE: reason`` (``FILE -> OTHER: reason`` for a rename), the file as the user or ofakit named it."""
    names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f not in (None, ""))
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return f"{names}: {reason}" if names else reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the command's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = app(args=args, prog_name="ofakit", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except _ABORTS:
        print("ofakit: aborted", file=sys.stderr)
        code = 130
    except _USAGE_ERRORS as exc:
        print(f"ofakit: error: {' '.join(exc.format_message().split())}", file=sys.stderr)  # one line
        code = 2
    except UserError as exc:  # the library names arguments; the command line shows them as its options
        print(f"ofakit: error: {exc.render(option_name)}", file=sys.stderr)
        code = 2
    except OSError as exc:  # a file the user named could not be read or written
        print(f"ofakit: error: {_os_error(exc)}", file=sys.stderr)
        code = 2
    except (UnicodeError, csv.Error, json.JSONDecodeError, yaml.YAMLError) as exc:  # a reader missed it: still one line
        print(f"ofakit: error: cannot parse an input file ({' '.join(str(exc).split())[:300]})", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("ofakit: interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        sys.exit(code)
    return code
