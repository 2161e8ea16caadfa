"""Startup cost of ofakit commands: wall time beyond a bare ``python -c "import torch"`` (the floor).

Runs each command in a fresh process on a fresh HOME, interleaved over ``--rounds`` rounds (so a slow spell of a
shared machine hits all of them alike), and reports the median wall time, the median over the floor, and for
``search`` its own work (the seconds it prints) so that "beyond its own work" can be read off. Goal: every
command within 0.5 s of the floor beyond its own work. Prints a table and appends it to BENCHMARKS.md.

    python bench/startup.py [--rounds 5] [--no-append]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, append_section, machine  # noqa: E402

ARCH = '{"ks": [3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5, 7, 3, 5], "e": [3, 4, 6, 3, 4, 6, 3, 4, 6, 3, 4, 6, ' \
       '3, 4, 6, 3, 4, 6, 3, 4], "d": [2, 3, 4, 2, 3], "r": 192}'
SEARCH = ["search", "--profile", "note10", "--latency", "25", "--accuracy-predictor", "ofa", "--seed", "1"]
COMMANDS: dict[str, list[str]] = {
    "python -c 'import torch' (floor)": ["-c", "import torch"],
    "python -c 'import torch, sklearn.base, scipy.stats' (what search imported before)":
        ["-c", "import torch, sklearn.base, scipy.stats"],
    "ofakit --version": ["-m", "ofakit", "--version"],
    "ofakit predict arch.json": ["-m", "ofakit", "predict", "arch.json"],
    "ofakit profiles list": ["-m", "ofakit", "profiles", "list"],
    "ofakit sample --n 10": ["-m", "ofakit", "sample", "--n", "10"],
    "ofakit search (note10, 25 ms, ofa)": ["-m", "ofakit", *SEARCH],
}
OWN_WORK = re.compile(r"accuracy predictions, ([0-9.]+) s\)")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, the command's own work in seconds as it reports it, else 0)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    m = OWN_WORK.search(done.stdout)
    return wall, float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "arch.json").write_text(ARCH)
        env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
        env.pop("XDG_DATA_HOME", None)
        env.pop("OFAKIT_PROFILE_DIR", None)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in COMMANDS}
        run(COMMANDS["python -c 'import torch' (floor)"], home, env)  # warm the file cache
        for _ in range(a.rounds):
            for name, args in COMMANDS.items():
                times[name].append(run(args, home, env))
    floor = statistics.median(w for w, _ in times["python -c 'import torch' (floor)"])
    rows = ["| command | median wall s | over the floor s | own work s | over the floor beyond own work s |",
            "|---|---|---|---|---|"]
    for name, got in times.items():
        wall = statistics.median(w for w, _ in got)
        own = statistics.median(o for _, o in got)
        rows.append(f"| {name} | {wall:.2f} | {wall - floor:+.2f} | {own:.2f} | {wall - floor - own:+.2f} |")
    table = "\n".join(rows)
    print(table)
    body = (f"Machine: {machine()}. `python bench/startup.py --rounds {a.rounds}`: each command in a fresh process "
            f"on a fresh HOME, interleaved, medians of {a.rounds} rounds; goal: within 0.5 s of the floor beyond "
            f"the command's own work.\n\n{table}\n")
    if not a.no_append:
        append_section("Startup cost of ofakit commands (`bench/startup.py`)", body)


if __name__ == "__main__":
    main()
