"""``ofakit devices check``: connect to a board, run the probe, and say what is missing and how to fix it."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ofakit.profiler.backends import board_backends

from .inventory import Device
from .ssh import Connection, RemoteError

PROBE_FILE = Path(__file__).with_name("probe.py")
MIN_PYTHON = (3, 7)
RUNTIME_MODULES = {n: c.runtime_modules for n, c in board_backends().items()}  # from the backend classes
RUNTIME_PIP = {n: c.pip_name for n, c in board_backends().items()}
HOT_C = 80.0


def run_probe(conn: Connection, mode: str = "full") -> dict[str, Any]:
    """Pipe the stdlib-only probe into the board's Python (``-I``: no user site, no PYTHONPATH) and parse it."""
    python = conn.python()
    modules = sorted({m for ms in RUNTIME_MODULES.values() for m in ms})
    res = conn.run([python, "-I", "-", mode, *modules], stdin=PROBE_FILE.read_text(encoding="utf-8"), check=False)
    if res.rc == 127 or "not found" in res.stderr and not res.stdout:
        raise RemoteError(f"{conn.device.name}: no Python at {python!r} on the board (install python3 or set "
                          "`python:` in the inventory)")
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        err = res.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RemoteError(f"{conn.device.name}: the probe failed under {python!r}: {err[0]}") from None


@dataclass
class CheckReport:
    """What a board has, what is wrong (``problems``: profiling cannot run), and how to fix it."""

    device: Device
    info: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def runtime(self) -> tuple[str, str] | None:
        """(module, version) of the runtime the device's backend would use, or None."""
        pk = self.info.get("packages", {})
        for mod in RUNTIME_MODULES[self.device.backend]:
            if "version" in pk.get(mod, {}):
                return mod, pk[mod]["version"]
        return None


def _pip(info: dict[str, Any], python: str, packages: list[str]) -> str:
    pkgs = " ".join(shlex.quote(p) for p in packages)
    if info.get("python", {}).get("externally_managed"):
        return (f"python3 -m venv ~/ofakit-venv && ~/ofakit-venv/bin/pip install {pkgs}  "
                "(then set `python: ~/ofakit-venv/bin/python` in the inventory)")
    return f"{shlex.quote(python)} -m pip install {pkgs}"


def assess(device: Device, info: dict[str, Any], python: str | None = None) -> CheckReport:
    """Turn probe output into problems, warnings and pip lines (pure: no connection needed)."""
    rep = CheckReport(device, info)
    python = python or device.python
    ver = tuple(int(x) for x in info["python"]["version"].split(".")[:2])
    if ver < MIN_PYTHON:
        rep.problems.append(f"Python {info['python']['version']} is older than 3.7")
        rep.fixes.append("install python3 >= 3.7 and set `python:` in the inventory")
    pk = info["packages"]
    missing: list[str] = []
    if "version" not in pk["numpy"]:
        rep.problems.append(f"numpy is not importable ({pk['numpy']['error']})")
        missing.append("numpy<2" if device.backend == "tflite" else "numpy")
    if rep.runtime() is None:
        mods = RUNTIME_MODULES[device.backend]
        errors = "; ".join(f"{m}: {pk[m]['error']}" for m in mods)
        rep.problems.append(f"backend {device.backend}: no runtime importable ({errors})")
        crashed = [m for m in mods if pk[m].get("crashed")]
        if crashed:  # installed, but its import kills Python: another pip install would not help
            rep.fixes.append(f"{crashed[0]} crashes Python on import on this board ({pk[crashed[0]]['crashed']}): "
                             "install another version of it, or use another backend (`backend:` in the inventory)")
        elif device.backend == "tflite" and any("numpy" in pk[m]["error"].lower() for m in mods):
            missing.append("numpy<2")  # tflite-runtime wheels are built against numpy 1.x
        else:
            missing.append(RUNTIME_PIP[device.backend])
    if missing:
        rep.fixes.append(_pip(info, python, list(dict.fromkeys(missing))))
    cpu = info["cpu"]
    if device.taskset:
        cores = [int(c) for part in device.taskset.split(",") for c in
                 range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)]
        if max(cores) >= (cpu.get("cores") or 0):
            rep.problems.append(f"taskset {device.taskset} names a core the board lacks ({cpu.get('cores')} cores)")
        if not info.get("tools", {}).get("taskset"):
            rep.problems.append("taskset is not installed on the board")
            rep.fixes.append("sudo apt install util-linux   (or remove `taskset:` from the inventory)")
    if device.threads > (cpu.get("usable_cores") or device.threads):
        rep.warnings.append(f"threads {device.threads} > usable cores {cpu.get('usable_cores')}")
    if cpu.get("governor") not in (None, "performance"):
        rep.warnings.append(f"CPU governor is {cpu['governor']!r}; for steady timings: echo performance | sudo tee "
                            "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")
    st = info.get("state", {})
    temps = st.get("temperatures_c") or {}
    if temps and max(temps.values()) >= HOT_C:
        rep.warnings.append(f"board is hot ({max(temps.values()):.1f} C); let it cool or add a heatsink/fan")
    thr = st.get("throttled")
    if thr:
        now = [k for k in ("under_voltage", "freq_capped", "throttled", "soft_temp_limit") if thr.get(k)]
        past = [k for k in ("under_voltage", "freq_capped", "throttled", "soft_temp_limit")
                if thr.get(f"{k}_occurred") and k not in now]
        if now:
            rep.warnings.append(f"throttling NOW ({', '.join(now)}; {thr['raw']}): timings will be slow")
        if past:
            rep.warnings.append(f"throttling happened since boot ({', '.join(past)}; {thr['raw']})")
        if thr.get("under_voltage") or thr.get("under_voltage_occurred"):
            rep.fixes.append("under-voltage: use the board's official power supply")
    return rep


def check_device(device: Device, conn: Connection) -> CheckReport:
    """Probe ``device`` over an open connection and assess it."""
    return assess(device, run_probe(conn, "full"), conn.python())
