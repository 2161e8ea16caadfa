"""P2: what a profile of this CPU costs: the full LUT (25 resolutions, 1,257 ops) in <= 10 minutes and the quick
one in <= 2 minutes, model export included.

Each mode runs the real pipeline (`ofakit profile cpu` with its default method) from scratch: a fresh journal and,
unless --keep-cache, a fresh model cache, so export time counts. Prints build / measure / total seconds and
appends them to BENCHMARKS.md. The profiles land in runs/bench/profile_cost/<mode>/ (use them with
bench/lut_fidelity.py).

    python bench/profile_cost.py [--mode full|quick|both] [--keep-cache] [--rounds 4] [--ship] [--no-append]

--ship also saves the full profile as the shipped default profile (device_profiles/cpu-onnxruntime-1t).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, append_section, machine  # noqa: E402


def main() -> None:
    from device_profiles import DEFAULT_PROFILE, SHIPPED_DIR
    from ofakit.workflows import fit_calibration
    from ofakit.workflows import log_to_stderr as log_line
    from profiler.agent.ofakit_agent import read_results
    from profiler.pipeline import CALIBRATION_SUBNETS, ProfileRequest, default_job, profile_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("full", "quick", "both"), default="both")
    p.add_argument("--rounds", type=int, default=default_job().rounds)
    p.add_argument("--calibration-subnets", type=int, default=CALIBRATION_SUBNETS)
    p.add_argument("--keep-cache", action="store_true", help="reuse built models (measures measuring only)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "profile_cost")
    p.add_argument("--ship", action="store_true",
                   help=f"also save the full profile as the shipped default (device_profiles/{DEFAULT_PROFILE})")
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()

    rows = []
    for mode in (("quick", "full") if a.mode == "both" else (a.mode,)):
        job = default_job()
        job.rounds = a.rounds
        req = ProfileRequest(device="cpu", backend="onnxruntime", threads=1, quick=mode == "quick", job=job,
                             calibration_subnets=a.calibration_subnets, name=f"cpu-onnxruntime-1t-{mode}")
        tmp = Path(tempfile.mkdtemp(prefix="ofakit-cost-"))
        cache = None if a.keep_cache else tmp / "cache"
        load0 = machine()
        t0 = time.perf_counter()
        run = profile_device(req, work_dir=tmp / "work", cache_dir=cache, log=log_line)
        fit_calibration(run)
        wall = time.perf_counter() - t0
        folder = run.profile.save(a.out / mode)
        if a.ship and mode == "full":
            run.profile.meta.name = DEFAULT_PROFILE
            staged = run.profile.save(tmp / "ship" / DEFAULT_PROFILE)
            # a maintainer's step on the checkout: ofakit itself never writes into the shipped profiles
            for f in ("profile.json", "lut.csv"):
                shutil.copy2(staged / f, SHIPPED_DIR / DEFAULT_PROFILE / f)
            print(f"shipped as {SHIPPED_DIR / DEFAULT_PROFILE}")
        shutil.copy2(tmp / "work" / "journal.jsonl", folder / "journal.jsonl")
        recs = read_results(str(tmp / "work" / "journal.jsonl"))[1]
        extra = len({r.id for r in recs if r.round >= job.rounds})
        shutil.rmtree(tmp, ignore_errors=True)
        s = run.seconds
        rows.append((mode, run.n_measured, run.n_interpolated, len(run.calibration_archs), len(recs), extra,
                     s["build_s"], s["measure_s"], wall, load0, machine()))
        print(f"{mode}: {wall:.0f} s -> {folder}")

    lines = [f"onnxruntime, 1 thread, {a.rounds} rounds + up to {default_job().extra_rounds} extra for unstable "
             f"items, {default_job().subnet_rounds} rounds for the calibration subnets, default windows; "
             f"{'models cached' if a.keep_cache else 'export included (fresh model cache)'}.", "",
             "| mode | ops measured | ops interpolated | calibration subnets | records | items re-measured | "
             "build s | measure s | total s | goal |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for mode, nm, ni, nc, nr, ex, b, m, w, _, _ in rows:
        goal = 600 if mode == "full" else 120
        lines.append(f"| {mode} | {nm} | {ni} | {nc} | {nr} | {ex} | {b:.0f} | {m:.0f} | {w:.0f} | "
                     f"<= {goal} s {'met' if w <= goal else 'MISSED'} |")
    lines += [""] + [f"- {mode}: before: {l0}; after: {l1}" for mode, *_, l0, l1 in rows]
    text = "\n".join(lines)
    print(text)
    if not a.no_append:
        append_section("Profiling cost (bench/profile_cost.py, P2)", text)


if __name__ == "__main__":
    main()
