"""Wall time of each step of bringing up an emulated board (as root): start, first check, board setup, check.

    python bench/board_steps.py [arm64] [armhf]

Each board is stopped and started fresh (``make board-ARCH``; its root file system is built first if it is not
cached), checked with ``ofakit devices check``, set up with the lines docs/raspberry-pi.md gives for it, checked
again, then stopped. Prints a table of wall times in seconds (plus the load average).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV = "~/ofakit-venv"
SETUP = {  # (as root on the board, as pi on the board)
    "arm64": ([], f"python3 -m venv {VENV} && {VENV}/bin/pip install -q 'numpy<2' tflite-runtime onnxruntime"),
    "armhf": ([["apt-get", "update", "-qq"],
               ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3-numpy"]],
              f"python3 -m venv --system-site-packages {VENV} && "
              f"{VENV}/bin/pip install -q --no-deps tflite-runtime==2.11.0"),
}


def timed(fn) -> float:  # noqa: ANN001 - a callable of no arguments
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(*argv: str, ok: tuple[int, ...] = (0,), **kw: object) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if res.returncode not in ok:
        sys.exit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr[-2000:]}")


def steps(arch: str, folder: Path) -> dict[str, float]:
    env = {**os.environ, "OFAKIT_KNOWN_HOSTS": str(folder / "known_hosts"), "PYTHONPATH": str(REPO)}
    out: dict[str, float] = {}
    run("make", "-s", f"board-{arch}-stop", cwd=REPO)
    out["start (make board)"] = timed(lambda: run("make", "-s", f"board-{arch}", cwd=REPO))
    inv = folder / f"{arch}.yaml"
    raw = yaml.safe_load((REPO / ".boards" / arch / "devices.yaml").read_text())
    inv.write_text(yaml.safe_dump(raw))
    check = [sys.executable, "-m", "ofakit", "devices", "check", arch, "-i", str(inv)]
    out["devices check, fresh"] = timed(lambda: run(*check, "--accept-new-host-key", ok=(1,), env=env))
    board = Path.home() / ".cache" / "ofakit" / "boards" / arch / "board"
    as_root, as_pi = SETUP[arch]
    dev = raw["devices"][arch]
    ssh = ["ssh", "-i", dev["key_file"], "-p", str(dev["port"]), "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={folder / 'known_hosts'}", f"pi@{dev['host']}"]

    def setup() -> None:
        for argv in as_root:
            run("chroot", str(board), *argv, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        run(*ssh, as_pi)
    out["board setup"] = timed(setup)
    raw["devices"][arch]["python"] = f"{VENV}/bin/python"
    inv.write_text(yaml.safe_dump(raw))
    out["devices check, ready"] = timed(lambda: run(*check, env=env))
    run("make", "-s", f"board-{arch}-stop", cwd=REPO)
    return out


def main(arches: list[str]) -> None:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in arches:
            rows[arch] = steps(arch, Path(tmp))
    names = list(next(iter(rows.values())))
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| step | " + " | ".join(arches) + " |")
    print("|---|" + "---|" * len(arches))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{rows[a][name]:.1f}" for a in arches) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["arm64", "armhf"])
