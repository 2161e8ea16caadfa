"""Strict parsing of the text files a user hands ofakit (JSON, YAML, CSV).

Every reader of a user's file goes through these functions, so the same mistakes are refused the same way, in one
line that names the file (:class:`~ofakit.ofa_core.errors.UserError`): bytes that are not UTF-8, NaN or infinite
numbers, integers too large for any field, the same key given twice with different values, nesting deeper than
:data:`MAX_DEPTH`, a YAML document whose aliases expand past :data:`MAX_VALUES` values, CSV fields over the
csv module's limit. The schemas (pydantic models next to each reader) then check the shape and the ranges.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Iterator

import yaml

from .errors import UserError

if TYPE_CHECKING:
    import pydantic

MAX_DEPTH = 64  # no ofakit file nests deeper than a few levels
MAX_VALUES = 1_000_000  # values after YAML alias expansion (a YAML "billion laughs" stops here)
MAX_INT_DIGITS = 19  # |int| < 10**19: every integer field fits an int64


class FileFormatError(UserError):
    """A file that is not valid text of its format; the message names the file."""


class _Refused(ValueError):
    """Raised inside the parsers' hooks; turned into a :class:`FileFormatError` naming the file."""


def read_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path`` (a ``what`` file); one-line errors name the path."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    return decode(data, path, what)


def decode(data: bytes, path: str | os.PathLike, what: str) -> str:
    """``data`` as UTF-8 text (a leading BOM dropped); refuses other encodings naming ``path``."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None


# --- JSON ---------------------------------------------------------------------------------------------------

def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out and out[k] != v:
            raise _Refused(f"key {k!r} given twice with different values")
        out[k] = v
    return out


def _json_constant(name: str) -> float:
    raise _Refused(f"{name} is not a number ofakit accepts")


def _json_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _Refused(f"number {text[:20]} is out of range")
    return v


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"integer {text[:20]}... is too large")
    return int(text)


def parse_json(text: str, where: str | os.PathLike, what: str = "") -> Any:
    """Parse JSON ``text`` strictly (see the module doc); ``where`` (the file, maybe with a line) goes first in
    every message, then ``corrupt {what}`` when given."""
    where = f"{where}: corrupt {what}" if what else where
    try:
        data = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant,
                          parse_float=_json_float, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except _Refused as exc:
        raise FileFormatError(f"{where}: {exc}") from None
    except RecursionError:
        raise FileFormatError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    check_size(data, where)
    return data


def load_json(path: str | os.PathLike, what: str, error: type[UserError] = FileFormatError) -> Any:
    """:func:`parse_json` of the file at ``path``; errors are ``error`` (the reader's own error class)."""
    return _load(lambda text, where: parse_json(text, where, what), path, what, error)


def _load(parse: Callable[[str, str | os.PathLike], Any], path: str | os.PathLike, what: str,
          error: type[UserError]) -> Any:
    try:
        return parse(read_text(path, what), path)
    except FileFormatError as exc:
        raise error(str(exc)) from None


def check_size(data: Any, where: str | os.PathLike) -> None:
    """Refuse values nested deeper than :data:`MAX_DEPTH`, holding more than :data:`MAX_VALUES` values once YAML
    aliases are expanded, or containing themselves; linear in the distinct values, no recursion."""
    done: dict[int, tuple[int, int] | None] = {}  # id -> (expanded size, height); None while being visited
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        v, finish = stack.pop()
        kids = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else None
        if kids is None:
            continue
        if finish:
            sub = [done[id(k)] or (0, 0) for k in kids if isinstance(k, (dict, list))]
            size = 1 + len(kids) - len(sub) + sum(s for s, _ in sub)
            height = 1 + max((h for _, h in sub), default=0)
            if size > MAX_VALUES:
                raise FileFormatError(f"{where}: more than {MAX_VALUES:,} values (YAML aliases expanding?)")
            if height > MAX_DEPTH:
                raise FileFormatError(f"{where}: nested more than {MAX_DEPTH} levels deep")
            done[id(v)] = (size, height)
        elif id(v) in done:
            if done[id(v)] is None:
                raise FileFormatError(f"{where}: a value contains itself (recursive YAML alias)")
        else:
            done[id(v)] = None
            stack.append((v, True))
            stack.extend((k, False) for k in kids)


# --- YAML ---------------------------------------------------------------------------------------------------

_YamlBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(_YamlBase):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, plus: a key repeated with another value, a non-finite float and an integer of more
    than :data:`MAX_INT_DIGITS` digits are errors; ``3e-05`` (JSON/YAML 1.2 style) is a float, not a string."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        own: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(knode, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value",
                                                        knode.start_mark) from None
            value = self.construct_object(vnode, deep=True)
            if key in own and own[key] != value:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice with different "
                                                        "values", knode.start_mark)
            own[key] = value
        return super().construct_mapping(node, deep=True)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        v = super().construct_yaml_float(node)
        if not math.isfinite(v):
            raise yaml.constructor.ConstructorError(None, None, f"{node.value[:20]!r} is not a finite number",
                                                    node.start_mark)
        return v

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value.lstrip("+-").replace("_", "")) > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(None, None, f"integer {node.value[:20]}... is too large",
                                                    node.start_mark)
        return super().construct_yaml_int(node)


StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)
StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                   list("-+0123456789."))


def parse_yaml(text: str, where: str | os.PathLike, what: str = "") -> Any:
    """Parse one YAML document strictly (see :class:`StrictLoader`); errors name ``where`` (then ``corrupt
    {what}`` when given) and the line."""
    where = f"{where}: corrupt {what}" if what else where
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())[:200]
        raise FileFormatError(f"{where}: not valid YAML{at} ({problem})") from None
    except yaml.YAMLError as exc:
        raise FileFormatError(f"{where}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    except RecursionError:
        raise FileFormatError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    check_size(data, where)
    return data


def load_yaml(path: str | os.PathLike, what: str, error: type[UserError] = FileFormatError) -> Any:
    """:func:`parse_yaml` of the file at ``path``; errors are ``error`` (the reader's own error class)."""
    return _load(parse_yaml, path, what, error)


# --- CSV ----------------------------------------------------------------------------------------------------

def csv_rows(text: str, where: str | os.PathLike) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of every data row of CSV ``text`` with a header; a malformed row (an over-long field,
    a NUL byte, more cells than the header) is an error naming ``where`` and the line."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if None in row or None in row.values():
                raise FileFormatError(f"{where}:{reader.line_num}: not as many cells as the header has columns")
            yield reader.line_num, row
    except csv.Error as exc:
        raise FileFormatError(f"{where}:{reader.line_num}: not valid CSV ({exc})") from None


def csv_header(text: str, where: str | os.PathLike) -> list[str]:
    """The header row of CSV ``text`` (empty when none)."""
    try:
        return next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:
        raise FileFormatError(f"{where}:1: not valid CSV ({exc})") from None


# --- schemas ------------------------------------------------------------------------------------------------

def first_error(exc: "pydantic.ValidationError") -> str:
    """pydantic's first complaint as ``field.path: message, got VALUE`` (one short line)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "value"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None and "missing" in err["type"] else f", got {got!r}"
    return " ".join(f"{loc}: {msg}{shown[:60]}".split())


def validated(schema: "type[pydantic.BaseModel]", data: Any, where: str | os.PathLike,
              error: type[UserError] = FileFormatError) -> dict[str, Any]:
    """``data`` checked against the pydantic ``schema`` (returned as a plain dict, defaults filled in), or a one-line
    ``error`` naming ``where``."""
    import pydantic

    try:
        return schema.model_validate(data).model_dump()
    except pydantic.ValidationError as exc:
        raise error(f"{where}: {first_error(exc)}") from None
