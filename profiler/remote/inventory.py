"""Device inventory: the boards ofakit can reach over SSH, kept in one YAML file (Ansible-like).

Where it is read from: ``--inventory FILE``, else ``$OFAKIT_INVENTORY``, else ``~/.config/ofakit/devices.yaml``.

Format (every key but ``devices`` is optional)::

    version: 1
    defaults:                 # applied to every device
      user: pi
      python: python3
      backend: tflite         # tflite | onnxruntime
      threads: 1
    groups:
      pi4s:
        vars: {threads: 4, taskset: "0-3"}
        devices: [pi4-a, pi4-b]
    devices:
      pi4-a:
        host: 192.168.1.20
        key_file: ~/.ssh/id_ed25519   # omit to use ssh-agent / ~/.ssh/id_* keys
        tags: [arm, pi]
      pi4-b: {host: pi4-b.local, port: 2222}

A device's settings are, lowest first: built-in defaults, ``defaults:``, the ``vars`` of each group it belongs
to (two groups that set one field differently are an error), the device's own keys. A device's group names
count as tags, so ``--tag pi4s`` selects both boards above. Passwords are never stored: authentication uses
key files or ssh-agent only. Every mistake is a :class:`~ofakit.ofa_core.errors.UserError` whose one line names the
file, the device and the field.
"""
from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from ofakit.ofa_core.errors import UserError

INVENTORY_ENV = "OFAKIT_INVENTORY"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SECRET_FIELDS = ("password", "passphrase", "ansible_password", "key_passphrase")


class InventoryError(UserError):
    """The inventory file is missing or invalid; the message names the file, device and field."""


def default_inventory_path() -> Path:
    """``$OFAKIT_INVENTORY`` if set, else ``~/.config/ofakit/devices.yaml``."""
    env = os.environ.get(INVENTORY_ENV)
    return Path(env).expanduser() if env else Path.home() / ".config" / "ofakit" / "devices.yaml"


@dataclass(frozen=True)
class Device:
    """One board as the inventory describes it (all defaults applied)."""

    name: str
    host: str
    port: int = 22
    user: str = field(default_factory=getpass.getuser)
    key_file: str | None = None
    python: str = "python3"
    backend: str = "onnxruntime"
    threads: int = 1
    taskset: str | None = None
    workdir: str = ".cache/ofakit"
    tags: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """``user@host:port`` for messages (no secrets)."""
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def key_path(self) -> Path | None:
        return Path(self.key_file).expanduser() if self.key_file else None

    def describe(self) -> dict[str, Any]:
        """Plain settings for profiles and listings: no key paths, nothing secret."""
        return {"name": self.name, "host": self.host, "port": self.port, "user": self.user,
                "python": self.python, "backend": self.backend, "threads": self.threads,
                "taskset": self.taskset, "tags": list(self.tags)}


_FIELDS = {f.name for f in fields(Device)} - {"name"}


def _check_name(where: str, what: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InventoryError(f"{where}: {what} name {name!r} must be letters, digits, '.', '_' or '-'")
    return name


def _parse_taskset(where: str, value: Any) -> str:
    """Cores as taskset's list syntax ("2", "0-3", "0,2-3"); a YAML list of ints is accepted too."""
    if isinstance(value, bool):
        raise InventoryError(f"{where}: field 'taskset': expected cores like '0-3' or [2, 3], got {value!r}")
    if isinstance(value, int):
        value = [value]
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise InventoryError(f"{where}: field 'taskset': expected a list of core numbers, got {value!r}")
        return ",".join(str(v) for v in value)
    if isinstance(value, str) and re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", value.replace(" ", "")):
        text = value.replace(" ", "")
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            if hi and int(hi) < int(lo):
                raise InventoryError(f"{where}: field 'taskset': empty core range {part!r}")
        return text
    raise InventoryError(f"{where}: field 'taskset': expected cores like '0-3' or '0,2', got {value!r}")


def _validate_fields(where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Type-check one mapping of device settings (defaults, group vars or a device)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECRET_FIELDS:
            raise InventoryError(f"{where}: field {key!r}: secrets are not stored in the inventory; use key_file "
                                 "or ssh-agent (ssh-add) instead")
        if key not in _FIELDS:
            raise InventoryError(f"{where}: unknown field {key!r} (known: {', '.join(sorted(_FIELDS))})")
        bad = lambda what: InventoryError(f"{where}: field {key!r}: expected {what}, got {value!r}")  # noqa: E731
        if key in ("host", "user", "python", "workdir", "key_file"):
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise bad("a non-empty string")
            out[key] = value.strip()
        elif key == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise bad("an integer port 1..65535")
            out[key] = value
        elif key == "threads":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
                raise bad("an integer thread count 1..256")
            out[key] = value
        elif key == "backend":
            from ofakit.profiler.backends import board_backends

            if value not in board_backends():
                raise bad(f"one of {', '.join(board_backends())}")
            out[key] = value
        elif key == "taskset":
            out[key] = None if value is None else _parse_taskset(where, value)
        elif key == "tags":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise bad("a list of tags")
            out[key] = tuple(_check_name(f"{where}: field 'tags'", "tag", t) for t in value)
    return out


def _mapping(where: str, value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InventoryError(f"{where}: {what} must be a mapping, got {type(value).__name__}")
    return value


@dataclass
class Inventory:
    """Devices by name, in file order."""

    path: Path
    devices: dict[str, Device]

    def get(self, name: str) -> Device:
        if name not in self.devices:
            known = ", ".join(self.devices) or "none"
            raise InventoryError(f"{self.path}: no device {name!r} (known: {known})")
        return self.devices[name]

    def select(self, names: Iterable[str] = (), tag: str | None = None) -> list[Device]:
        """Devices named in ``names`` (in that order), plus those carrying ``tag``; without both, none."""
        out = [self.get(n) for n in names]
        if tag is not None:
            tagged = [d for d in self.devices.values() if tag in d.tags]
            if not tagged:
                raise InventoryError(f"{self.path}: no device has tag {tag!r}")
            out += [d for d in tagged if d not in out]
        seen: set[str] = set()
        return [d for d in out if not (d.name in seen or seen.add(d.name))]


def parse_inventory(data: Any, path: Path) -> Inventory:
    """Validate parsed YAML ``data`` (read from ``path``, used in messages) into an :class:`Inventory`."""
    f = str(path)
    top = _mapping(f, data, "the inventory")
    unknown = sorted(set(top) - {"version", "defaults", "groups", "devices"})
    if unknown:
        raise InventoryError(f"{f}: unknown top-level key {unknown[0]!r} (known: version, defaults, groups, devices)")
    if top.get("version", 1) != 1:
        raise InventoryError(f"{f}: version {top['version']!r} is not supported (this ofakit reads version 1)")
    defaults = _validate_fields(f"{f}: defaults", _mapping(f"{f}: defaults", top.get("defaults"), "defaults"))
    devices_raw = _mapping(f, top.get("devices"), "'devices'")
    from ofakit.profiler.runner import LOCAL_DEVICES

    for name in devices_raw:
        _check_name(f"{f}: devices", "device", name)
        if name in LOCAL_DEVICES:
            raise InventoryError(f"{f}: device name {name!r} is reserved for this machine; name the board otherwise")

    group_vars: dict[str, list[tuple[str, dict[str, Any]]]] = {n: [] for n in devices_raw}
    for gname, graw in _mapping(f, top.get("groups"), "'groups'").items():
        where = f"{f}: group {gname!r}"
        _check_name(f"{f}: groups", "group", gname)
        g = _mapping(where, graw, "a group")
        extra = sorted(set(g) - {"vars", "devices"})
        if extra:
            raise InventoryError(f"{where}: unknown key {extra[0]!r} (a group has 'vars' and 'devices')")
        gvars = _validate_fields(where, _mapping(where, g.get("vars"), "'vars'"))
        members = g.get("devices") or []
        if not isinstance(members, list):
            raise InventoryError(f"{where}: 'devices' must be a list of device names")
        for m in members:
            if not isinstance(m, str) or m not in devices_raw:
                raise InventoryError(f"{where}: member {m!r} is not a device of this inventory")
            group_vars[m].append((gname, gvars))

    devices: dict[str, Device] = {}
    for name, draw in devices_raw.items():
        where = f"{f}: device {name!r}"
        own = _validate_fields(where, _mapping(where, draw, "a device"))
        merged = dict(defaults)
        from_group: dict[str, str] = {}
        tags = list(defaults.get("tags", ()))
        for gname, gvars in group_vars[name]:
            for k, v in gvars.items():
                if k == "tags":
                    tags += list(v)
                    continue
                if k in from_group and merged[k] != v and k not in own:
                    raise InventoryError(f"{where}: field {k!r} is set differently by groups "
                                         f"{from_group[k]!r} and {gname!r}; set it on the device")
                merged[k], from_group[k] = v, gname
            tags.append(gname)
        merged.update({k: v for k, v in own.items() if k != "tags"})
        tags += list(own.get("tags", ()))
        if "host" not in merged:
            raise InventoryError(f"{where}: field 'host' is required")
        merged["tags"] = tuple(dict.fromkeys(tags))
        devices[name] = Device(name=name, **merged)
    return Inventory(Path(path), devices)


def load_inventory(path: str | os.PathLike | None = None) -> Inventory:
    """Read and validate the inventory at ``path`` (default: :func:`default_inventory_path`)."""
    from ofakit.ofa_core.strict import load_yaml

    p = Path(path).expanduser() if path is not None else default_inventory_path()
    if not p.exists() and not p.is_symlink():
        hint = "" if path is not None else f" (pass {{inventory}} FILE or set ${INVENTORY_ENV})"
        raise InventoryError(f"{p}: no device inventory here{hint}", params=("inventory",) if hint else ())
    return parse_inventory(load_yaml(p, "inventory", InventoryError), p)
