"""What the strict readers cost: loading the shipped profile (1,257 LUT rows) with every check, against the plain
parsers the checks sit on (json.loads + csv.DictReader, no schema). Interleaved rounds, median per round.

    python bench/file_checks.py [--rounds 15] [--append]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import append_section, machine  # noqa: E402

from ofakit.device_profiles import SHIPPED_DIR, load_profile  # noqa: E402
from ofakit.ofa_core.strict import csv_rows, parse_json  # noqa: E402

PROFILE = SHIPPED_DIR / "cpu-onnxruntime-1t"


def plain() -> None:
    json.loads((PROFILE / "profile.json").read_text(encoding="utf-8"))
    list(csv.DictReader(io.StringIO((PROFILE / "lut.csv").read_text(encoding="utf-8"))))


def strict_parse() -> None:
    parse_json((PROFILE / "profile.json").read_text(encoding="utf-8"), "profile.json")
    list(csv_rows((PROFILE / "lut.csv").read_text(encoding="utf-8"), "lut.csv"))


def checked_load() -> None:
    load_profile(PROFILE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = ap.parse_args()
    cases = {"json.loads + csv.DictReader (no checks)": plain, "strict JSON + CSV parse (no schema)": strict_parse,
             "load_profile (strict parse + pydantic schemas)": checked_load}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():
        f()  # warm caches and imports
    for _ in range(args.rounds):
        for name, f in cases.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times[next(iter(cases))])
    rows = ["| reader | median ms | vs plain |", "|---|---|---|"]
    rows += [f"| {k} | {statistics.median(v) * 1e3:.1f} | {statistics.median(v) / base:.2f}x |"
             for k, v in times.items()]
    body = (f"- machine: {machine()}\n- command: `python bench/file_checks.py --rounds {args.rounds}`; shipped "
            f"profile {PROFILE.name} (1,257 LUT rows), interleaved rounds\n\n" + "\n".join(rows))
    print(body)
    if args.append:
        append_section("Strict file readers (bench/file_checks.py)", body)


if __name__ == "__main__":
    main()
