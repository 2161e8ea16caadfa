"""P4: how many subnet latency predictions per second the vectorized LUT predictors make.

Times LUTPredictor and CalibratedLUTPredictor on one 100,000-subnet population (best of several repeats, all in
the same run) and, as the baseline, a per-subnet Python loop that sums the profile's value of every op key (the
way OFA's LatencyEstimator works) on a smaller sample. Prints a table and appends it to BENCHMARKS.md.

    python bench/predict_throughput.py [--profile cpu-onnxruntime-1t] [--n 100000] [--repeats 7] [--no-append]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import append_section, machine  # noqa: E402

from ofakit.device_profiles import DEFAULT_PROFILE, load_profile  # noqa: E402
from ofakit.ofa_core.ops import subnet_ops  # noqa: E402
from ofakit.ofa_core.space import sample_batch, space_for_width  # noqa: E402
from ofakit.predictors.lut import CalibratedLUTPredictor, LUTPredictor  # noqa: E402


def best_time(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU (process) time of ``repeats`` calls."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=DEFAULT_PROFILE)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--n-loop", type=int, default=2_000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()

    prof = load_profile(a.profile)
    rng = np.random.default_rng(a.seed)
    batch = sample_batch(rng, a.n, space_for_width(prof.meta.width), prof.meta.resolutions)
    raw, cal = LUTPredictor(prof), CalibratedLUTPredictor(prof)
    rows = []
    t_build = time.perf_counter()
    raw.predict(batch[:1])
    t_raw_build = time.perf_counter() - t_build
    rows.append(("LUTPredictor (vectorized)", a.n, best_time(lambda: raw.predict(batch), a.repeats)))
    if prof.meta.calibration:
        cal.predict(batch[:1])
        rows.append(("CalibratedLUTPredictor (vectorized)", a.n, best_time(lambda: cal.predict(batch), a.repeats)))
    lut = {s.key: s.ms for s in prof}
    configs = batch[: a.n_loop].to_configs()
    rows.append(("per-subnet Python key sum (OFA-style)", a.n_loop,
                 best_time(lambda: [sum(lut[op.key] for op in subnet_ops(c)) for c in configs], 2)))
    base = rows[-1][2][0] / rows[-1][1]
    lines = [f"profile `{prof.name}` ({len(prof)} rows); {machine()}; best of {a.repeats} repeats; "
             f"table build (once per profile) {t_raw_build * 1e3:.0f} ms", "",
             "| predictor | subnets | wall s | predictions/s | per CPU-second | vs per-subnet loop |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, n, (secs, cpu) in rows:
        lines.append(f"| {name} | {n:,} | {secs:.4f} | {n / secs:,.0f} | {n / cpu:,.0f} | "
                     f"{base / (secs / n):.0f}x |")
    text = "\n".join(lines)
    print(text)
    if not a.no_append:
        append_section("Predictor throughput (bench/predict_throughput.py, P4: >= 1,000,000/s)", text)


if __name__ == "__main__":
    main()
