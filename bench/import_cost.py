"""Import cost of the public namespace and the command line: wall time of a fresh interpreter running
``import ofakit``, ``ofakit --help`` and importing every public name, interleaved over ``--repeat`` rounds
(median), plus which heavy libraries each one loaded. ``--root`` compares another checkout in the same run.

    python bench/import_cost.py --repeat 7 [--root OTHER_CHECKOUT]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "pandas", "onnxruntime", "paramiko", "matplotlib")
CASES = {
    "import ofakit": "import ofakit",
    "ofakit --help": "from ofakit.cli import main; main(['--help'])",
    "every public name": "import ofakit\nfor n in getattr(ofakit, '__all__', []): getattr(ofakit, n)",
}
REPORT = "\nimport sys; print('loaded:' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"


def run(root: Path, code: str) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code + REPORT.format(heavy=HEAVY)], env=env, cwd=root,
                       capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, p.stderr.strip().splitlines()[-1].removeprefix("loaded:")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--root", type=Path, action="append", default=[], help="Another checkout to compare.")
    a = ap.parse_args()
    roots = [ROOT, *a.root]
    times: dict[tuple[Path, str], list[float]] = {}
    loaded: dict[tuple[Path, str], str] = {}
    for _ in range(a.repeat):  # interleaved: every case of every checkout once per round
        for root in roots:
            for name, code in CASES.items():
                t, mods = run(root, code)
                times.setdefault((root, name), []).append(t)
                loaded[(root, name)] = mods
    print(f"{'checkout':<24} {'case':<20} {'median s':>9}  heavy modules loaded")
    for (root, name), ts in times.items():
        print(f"{root.name:<24} {name:<20} {statistics.median(ts):>9.3f}  {loaded[(root, name)] or '-'}")


if __name__ == "__main__":
    main()
