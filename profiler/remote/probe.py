"""Board probe: what a board has (Python, numpy, runtimes, CPU) and its thermal state, as JSON on stdout.

This file runs ON THE BOARD with nothing but the standard library of Python >= 3.7: the host pipes its source
into the board's interpreter (``python3 -I - full MODULE...``, the host naming the runtime modules of the
backends boards run), so nothing is uploaded and it works even where numpy or
the runtime is missing (that is what it reports). Modes: ``full`` (everything, for ``ofakit devices check``)
and ``state`` (cheap: temperatures, throttle flags, clock; recorded before every measurement batch).

Where a source is absent (no ``vcgencmd`` off a Raspberry Pi, no thermal zones in a container, no cpufreq),
the field is ``null``; nothing here fails for a missing file or tool.
"""
import glob
import json
import os
import platform
import signal
import subprocess
import sys

THROTTLE_BITS = {0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit",
                 16: "under_voltage_occurred", 17: "freq_capped_occurred", 18: "throttled_occurred",
                 19: "soft_temp_limit_occurred"}


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def temperatures():
    """{zone type: degrees C} from /sys/class/thermal (empty where there are none)."""
    out = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw, kind = _read(zone + "/temp"), _read(zone + "/type") or os.path.basename(zone)
        try:
            out[kind if kind not in out else os.path.basename(zone)] = round(int(raw) / 1000.0, 1)
        except (TypeError, ValueError):
            continue
    return out


def parse_throttled(text):
    """``throttled=0x50005`` (``vcgencmd get_throttled``) -> {"raw": "0x50005", flag: bool, ...}."""
    value = text.strip().split("=", 1)[-1]
    bits = int(value, 16)
    out = {"raw": value}
    for bit, name in THROTTLE_BITS.items():
        out[name] = bool(bits >> bit & 1)
    return out


def throttled():
    """Raspberry Pi firmware throttle flags, or None where ``vcgencmd`` is absent or fails."""
    try:
        res = subprocess.run(["vcgencmd", "get_throttled"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=5, universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0 or "throttled=" not in res.stdout:
        return None
    try:
        return parse_throttled(res.stdout)
    except ValueError:
        return None


def _khz(path):
    raw = _read(path)
    return int(raw) // 1000 if raw and raw.isdigit() else None


def state():
    """Cheap thermal snapshot: temperatures, throttle flags and the current CPU clock (MHz)."""
    return {"temperatures_c": temperatures(), "throttled": throttled(),
            "cpu0_mhz": _khz("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")}


# Run by a child interpreter per package (``python -I -c CODE NAME``): prints {"version": ...} or {"error": ...}.
_IMPORT_CODE = """
import json, sys
name = sys.argv[1]
try:
    module = __import__(name)
except Exception as exc:  # any import failure is what we report (e.g. numpy ABI mismatch)
    print(json.dumps({"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0]}))
    sys.exit(0)
try:
    from importlib import metadata  # Python >= 3.8
    version = metadata.version(name.replace("_", "-"))
except Exception:  # metadata missing or Python 3.7: fall back to the module attribute
    version = getattr(module, "__version__", "unknown")
print(json.dumps({"version": version}))
"""
IMPORT_TIMEOUT_S = 600  # a runtime's import takes seconds on a slow board, minutes under emulation


def package(name):
    """{"version": ...} if ``name`` imports, else {"error": ...}. Each import runs in its own interpreter, so a
    runtime whose import crashes Python (a segfault) is reported as that runtime's problem."""
    try:
        res = subprocess.run([sys.executable, "-I", "-c", _IMPORT_CODE, name], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=IMPORT_TIMEOUT_S, universal_newlines=True)
    except subprocess.TimeoutExpired:
        return {"error": "import did not finish in %d s" % IMPORT_TIMEOUT_S}
    except OSError as exc:
        return {"error": "cannot start %s: %s" % (sys.executable, exc)}
    if res.returncode < 0:
        try:
            sig = signal.Signals(-res.returncode).name
        except ValueError:
            sig = "signal %d" % -res.returncode
        return {"error": "import crashed Python (%s)" % sig, "crashed": sig}
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        err = res.stderr.strip().splitlines()[-1:] or ["exit status %d, no output" % res.returncode]
        return {"error": err[0]}


def cpu():
    """CPU model, core counts, governor and clock limits."""
    info = _read("/proc/cpuinfo") or ""
    model = None
    for field in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == field and ":" in line:
                model = line.split(":", 1)[1].strip()
                break
        if model:
            break
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    return {"model": model, "board": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
            "machine": platform.machine(), "cores": os.cpu_count(), "usable_cores": usable,
            "governor": _read(base + "scaling_governor"), "max_mhz": _khz(base + "cpuinfo_max_freq"),
            "min_mhz": _khz(base + "cpuinfo_min_freq")}


def _which(tool):
    import shutil
    return shutil.which(tool) is not None


def full(modules):
    """Everything ``ofakit devices check`` reports; ``modules``: the runtime modules to try importing."""
    import sysconfig
    stdlib = sysconfig.get_paths().get("stdlib") or ""
    mem = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "externally_managed": os.path.exists(os.path.join(stdlib, "EXTERNALLY-MANAGED"))},
        "os": {"system": platform.system(), "release": platform.release(),
               "distro": (dict(l.split("=", 1) for l in (_read("/etc/os-release") or "").splitlines() if "=" in l)
                          .get("PRETTY_NAME", "").strip('"') or None)},
        "cpu": cpu(), "memory_mb": mem,
        "tools": {t: _which(t) for t in ("taskset", "vcgencmd")},
        "packages": {n: package(n) for n in ["numpy"] + list(modules)},
        "state": state(),
    }


def main(argv):
    mode = argv[0] if argv else "full"
    if mode not in ("full", "state"):
        sys.stderr.write("usage: probe.py [full [MODULE...]|state]\n")
        return 2
    sys.stdout.write(json.dumps(full(argv[1:]) if mode == "full" else state()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
