"""OFA's Note10 search reproduced: most accurate subnet under 25 ms on the Samsung Note10, seeds 1-5.

Inputs (read at run time from ../shared, never copied): OFA's Note10 latency table (width 1.2, imported with
device_profiles.ofa_yaml.import_ofa) and OFA's pretrained accuracy predictor (predictors.accuracy, ``ofa:PATH``).
Resolutions 160/176/192/208/224 as in OFA's tutorial. torch and numpy's BLAS at one thread.

Three searches per seed:
  ofakit       ofa_core.search with its defaults (population 100, 100 generations, duplicate removal by canonical
               form, final local search) -- the configuration goal P3 is about;
  ofa-500      the same vectorized code with OFA's settings and nothing added (500 generations, every child
               predicted, no local search) -- the algorithm OFA's tutorial runs;
  ofa-scalar   (``--scalar-seeds``, default seed 1 only) OFA's tutorial loop written out as OFA writes it: Python
               dict samples, one latency prediction per drawn sample, draw-one-check-one until feasible,
               accuracy predicted per generation -- the same-run reference for the speed ratio.
Each ofakit search is timed ``--repeats`` times (results are identical; the minimum wall and thread-CPU time
is reported: this shared CPU switches between a fast and a slow state, see ../shared/notes/measuring-here.md).

Goal P3: every seed >= 81.71% predicted top-1 (OFA's tutorial: 81.71% at 24.73 ms in 22.17 s) and the median
>= 81.9%, at <= 25 ms, each search <= 0.5 s (OFA's own code on this CPU: about 10.9 s per search, 81.78% +- 0.21).

    .venv/bin/python bench/search_ofa_note10.py [--seeds 1,2,3,4,5] [--repeats 5] [--scalar-seeds 1] [--no-append]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import append_section, machine  # noqa: E402

from ofakit.device_profiles.ofa_yaml import import_ofa  # noqa: E402
from ofakit.ofa_core.search import Constraint, EvolutionSearch, SearchConfig  # noqa: E402
from ofakit.ofa_core.space import ArchConfig  # noqa: E402
from ofakit.predictors.accuracy import load_accuracy_predictor  # noqa: E402
from ofakit.predictors.lut import LUTPredictor  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BOUND_MS = 25.0
RES = (160, 176, 192, 208, 224)
OFA_TUTORIAL = (81.71, 24.73, 22.17)
OFA_HERE_S = 10.9
GOAL_MIN, GOAL_MEDIAN, GOAL_S = 81.71, 81.9, 0.5


def timed(fn, repeats: int):
    """(result, min wall seconds, min thread-CPU seconds) over ``repeats`` calls."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.thread_time()
        out = fn()
        cpus.append(time.thread_time() - c)
        walls.append(time.perf_counter() - w)
    return out, min(walls), min(cpus)


def ofa_scalar_search(acc, lut: LUTPredictor, bound: float, seed: int, population: int = 100,
                      generations: int = 500, parent_ratio: float = 0.25, mutation_ratio: float = 0.5,
                      prob: float = 0.1) -> tuple[float, dict, float]:
    """OFA's tutorial EvolutionFinder loop, sample by sample (reference for speed; returns acc, sample, ms)."""
    rnd, nprnd = random.Random(seed), np.random.RandomState(seed)
    ks_c, e_c, d_c = (3, 5, 7), (3, 4, 6), (2, 3, 4)

    def latency(s: dict) -> float:
        return float(lut.predict([ArchConfig(s["ks"], s["e"], s["d"], s["r"][0], 1.2)])[0])

    def accuracy(samples: list) -> np.ndarray:
        return acc.predict([ArchConfig(s["ks"], s["e"], s["d"], s["r"][0], 1.2) for s in samples])

    def random_sample() -> dict:
        while True:
            s = {"ks": [rnd.choice(ks_c) for _ in range(20)], "e": [rnd.choice(e_c) for _ in range(20)],
                 "d": [rnd.choice(d_c) for _ in range(5)], "r": [rnd.choice(RES)]}
            if latency(s) <= bound:
                return s

    def mutate(p: dict) -> dict:
        while True:
            s = {k: list(v) for k, v in p.items()}
            if rnd.random() < prob:
                s["r"][0] = rnd.choice(RES)
            for i in range(20):
                if rnd.random() < prob:
                    s["ks"][i], s["e"][i] = rnd.choice(ks_c), rnd.choice(e_c)
            for i in range(5):
                if rnd.random() < prob:
                    s["d"][i] = rnd.choice(d_c)
            if latency(s) <= bound:
                return s

    def crossover(a: dict, b: dict) -> dict:
        while True:
            s = {k: [rnd.choice([x, y]) for x, y in zip(a[k], b[k])] for k in a}
            if latency(s) <= bound:
                return s

    n_mut, n_par = int(round(mutation_ratio * population)), int(round(parent_ratio * population))
    kids = [random_sample() for _ in range(population)]
    pop = list(zip(accuracy(kids).tolist(), kids))
    best = (-1.0, None)
    for _ in range(generations):
        parents = sorted(pop, key=lambda x: x[0])[::-1][:n_par]
        if parents[0][0] > best[0]:
            best = parents[0]
        kids = [mutate(parents[nprnd.randint(n_par)][1]) for _ in range(n_mut)]
        kids += [crossover(parents[nprnd.randint(n_par)][1], parents[nprnd.randint(n_par)][1])
                 for _ in range(population - n_mut)]
        pop = parents + list(zip(accuracy(kids).tolist(), kids))
    return best[0], best[1], latency(best[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per seed of the ofakit search")
    ap.add_argument("--ofa-repeats", type=int, default=1, help="timed runs per seed of the ofa-500 search")
    ap.add_argument("--scalar-seeds", default="1", help="seeds for the scalar OFA loop ('' to skip)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    scalar_seeds = [int(s) for s in args.scalar_seeds.split(",") if s]

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    where = machine()
    note10 = import_ofa(SHARED / "ofa_note10_lut", "note10", 1.2)
    lut = LUTPredictor(note10)
    acc = load_accuracy_predictor(f"ofa:{SHARED / 'ofa_acc_predictor' / 'acc_predictor.pth'}")
    cons = [Constraint("latency[note10]", lut, BOUND_MS, "ms", note10.table())]
    configs = {"ofakit": SearchConfig(resolutions=RES, width=1.2),
               "ofa-500": SearchConfig.ofa(resolutions=RES, width=1.2)}
    rows: dict[str, list] = {k: [] for k in configs}
    repeats = {"ofakit": args.repeats, "ofa-500": args.ofa_repeats}
    for name, cfg in configs.items():
        search = EvolutionSearch(acc, cons, cfg)
        for seed in seeds:
            res, wall, cpu = timed(lambda: search.run(seed), repeats[name])
            rows[name].append((seed, 100 * res.accuracy, res.values["latency[note10]"], wall, cpu, res.evaluations,
                               res.arch))
            print(f"{name:8s} seed {seed}: {100 * res.accuracy:.2f}% at {res.values['latency[note10]']:.2f} ms, "
                  f"{wall:.3f} s wall, {cpu:.3f} s CPU, {res.evaluations} predictions", flush=True)
    scalar = []
    for seed in scalar_seeds:
        (a, _, ms), wall, cpu = timed(lambda: ofa_scalar_search(acc, lut, BOUND_MS, seed), 1)
        scalar.append((seed, 100 * a, ms, wall, cpu))
        print(f"scalar   seed {seed}: {100 * a:.2f}% at {ms:.2f} ms, {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)

    lines = [f"Machine: {where}. torch {torch.__version__} and numpy BLAS at 1 thread. Note10 LUT (OFA, width 1.2) "
             f"and OFA's pretrained accuracy predictor from ../shared; bound {BOUND_MS:g} ms, resolutions "
             f"{'/'.join(map(str, RES))}. Times: minimum over {args.repeats} runs for ofakit, {args.ofa_repeats} for "
             f"ofa-500, 1 for ofa-scalar (wall clock, and the thread's CPU time); a seed's result does not change "
             f"between runs.", "",
             "| search | seed | top-1 (%) | latency (ms) | wall (s) | CPU (s) | accuracy predictions |",
             "|---|---|---|---|---|---|---|"]
    for name, rs in rows.items():
        for seed, a, ms, wall, cpu, n, _ in rs:
            lines.append(f"| {name} | {seed} | {a:.2f} | {ms:.2f} | {wall:.3f} | {cpu:.3f} | {n} |")
    for seed, a, ms, wall, cpu in scalar:
        lines.append(f"| ofa-scalar | {seed} | {a:.2f} | {ms:.2f} | {wall:.2f} | {cpu:.2f} | {100 * 501} |")
    lines.append("")
    for name, rs in rows.items():
        accs = [r[1] for r in rs]
        lines.append(f"- {name}: top-1 min {min(accs):.2f}%, median {statistics.median(accs):.2f}%, mean "
                     f"{statistics.mean(accs):.2f}% (sd {statistics.pstdev(accs):.2f}); max latency "
                     f"{max(r[2] for r in rs):.2f} ms; wall median {statistics.median(r[3] for r in rs):.3f} s, "
                     f"max {max(r[3] for r in rs):.3f} s; CPU median {statistics.median(r[4] for r in rs):.3f} s.")
    ours = rows["ofakit"]
    med_wall = statistics.median(r[3] for r in ours)
    med_cpu = statistics.median(r[4] for r in ours)
    if scalar:
        sw = statistics.median(r[3] for r in scalar)
        sc = statistics.median(r[4] for r in scalar)
        lines.append(f"- Speed, same run: OFA's loop written sample by sample takes {sw:.2f} s wall / {sc:.2f} s "
                     f"CPU per search = {sw / med_wall:.0f}x / {sc / med_cpu:.0f}x the ofakit search's median. "
                     f"Against OFA's own code measured on this CPU before the project ({OFA_HERE_S} s): "
                     f"{OFA_HERE_S / med_wall:.0f}x (wall), {OFA_HERE_S / med_cpu:.0f}x (CPU). The sample-by-sample "
                     f"loop is slower than OFA's own code (each latency call goes through ArchConfig validation "
                     f"and a one-row batch), so the ratio against {OFA_HERE_S} s is the fair one.")
    accs = [r[1] for r in ours]
    checks = [(min(accs) >= GOAL_MIN, f"every seed >= {GOAL_MIN}% (min {min(accs):.2f}%)"),
              (statistics.median(accs) >= GOAL_MEDIAN, f"median >= {GOAL_MEDIAN}% ({statistics.median(accs):.2f}%)"),
              (max(r[2] for r in ours) <= BOUND_MS, f"latency <= {BOUND_MS:g} ms"),
              (max(r[3] for r in ours) <= GOAL_S, f"each search <= {GOAL_S} s wall (max "
                                                   f"{max(r[3] for r in ours):.3f} s)"),
              (max(r[4] for r in ours) <= GOAL_S, f"each search <= {GOAL_S} s CPU (max "
                                                   f"{max(r[4] for r in ours):.3f} s)")]
    lines.append("- Goal P3: " + "; ".join(f"{'met' if ok else 'NOT met'}: {what}" for ok, what in checks) + ".")
    best = max(ours, key=lambda r: r[1])
    lines.append(f"- Best subnet (seed {best[0]}): `{best[6].to_json()}`")
    lines.append(f"- OFA's tutorial for reference: {OFA_TUTORIAL[0]}% at {OFA_TUTORIAL[1]} ms in {OFA_TUTORIAL[2]} s; "
                 f"OFA's code on this CPU: about {OFA_HERE_S} s per search, 81.78% +- 0.21 over seeds 1-5.")
    body = "\n".join(lines)
    print("\n" + body)
    if not args.no_append:
        append_section("search: OFA's Note10 search, 25 ms (bench/search_ofa_note10.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
