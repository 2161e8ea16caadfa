"""P2: what a profile of this CPU costs: the full LUT (25 resolutions, 1,257 ops) in <= 10 minutes and the quick
one in <= 2 minutes, model building included; and (issue 18) what building the model files costs and whether the
directly built files time like the exported ones.

Modes:
- quick / full / both: the real pipeline (`ofakit profile cpu` with its default method) from scratch: a fresh
  journal and, unless --keep-cache, a fresh model cache, so building counts. Prints build / measure / total
  seconds. The profiles land in runs/bench/profile_cost/<mode>/ (use them with bench/lut_fidelity.py).
- build-full: only the building of a full profile's model files (1,257 ops + the calibration subnets) on a fresh
  cache, per backend; prints seconds, the files' bytes and the bytes a board is sent (packed files + agent).
- compare: directly built vs exported (torch ONNX exporter / litert-torch) files of a sample of ops and subnets,
  timed in interleaved rounds with the agent's own loaders and timer, per runtime; also the exported file
  against itself (its own run-to-run spread) and the direct file with all-zero and constant weights (whether
  latency depends on the weight values).

    python bench/profile_cost.py [--mode full|quick|both|build-full|compare] [--backend onnxruntime|tflite]
        [--keep-cache] [--rounds 4] [--ship] [--no-append]

--ship also saves the full profile as the shipped default profile (device_profiles/cpu-onnxruntime-1t).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, append_section, machine  # noqa: E402
from ofakit.profiler.backends import get_backend  # noqa: E402


def profile_cost(a: argparse.Namespace) -> None:
    """quick / full / both: the whole pipeline from scratch."""
    from ofakit.device_profiles import DEFAULT_PROFILE, SHIPPED_DIR
    from ofakit.workflows import fit_calibration
    from ofakit.workflows import log_to_stderr as log_line
    from ofakit.profiler.agent.ofakit_agent import read_results
    from ofakit.profiler.builder import Builder
    from ofakit.profiler.pipeline import ProfileRequest, default_job, profile_device

    rows = []
    for mode in (("quick", "full") if a.mode == "both" else (a.mode,)):
        job = default_job()
        job.rounds = a.rounds
        req = ProfileRequest(device="cpu", backend=a.backend, threads=1, quick=mode == "quick", job=job,
                             calibration_subnets=a.calibration_subnets, name=f"cpu-{a.backend}-1t-{mode}")
        tmp = Path(tempfile.mkdtemp(prefix="ofakit-cost-"))
        cache = None if a.keep_cache else tmp / "cache"
        load0 = machine()
        t0 = time.perf_counter()
        run = profile_device(req, work_dir=tmp / "work", cache_dir=cache, log=log_line)
        fit_calibration(run)
        wall = time.perf_counter() - t0
        folder = run.profile.save(a.out / f"{a.backend}-{mode}")
        if a.ship and mode == "full" and a.backend == "onnxruntime":
            run.profile.meta.name = DEFAULT_PROFILE
            staged = run.profile.save(tmp / "ship" / DEFAULT_PROFILE)
            # a maintainer's step on the checkout: ofakit itself never writes into the shipped profiles
            for f in ("profile.json", "lut.csv"):
                shutil.copy2(staged / f, SHIPPED_DIR / DEFAULT_PROFILE / f)
            print(f"shipped as {SHIPPED_DIR / DEFAULT_PROFILE}")
        shutil.copy2(tmp / "work" / "journal.jsonl", folder / "journal.jsonl")
        recs = read_results(str(tmp / "work" / "journal.jsonl"))[1]
        extra = len({r.id for r in recs if r.round >= job.rounds})
        models = Builder(get_backend(a.backend), cache or None).folder
        nbytes = sum(f.stat().st_size for f in models.iterdir()) if models.is_dir() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        s = run.seconds
        rows.append((mode, run.n_measured, run.n_interpolated, len(run.calibration_archs), len(recs), extra,
                     s["build_s"], s["measure_s"], wall, nbytes, load0, machine()))
        print(f"{mode}: {wall:.0f} s -> {folder}")

    lines = [f"{a.backend}, 1 thread, {a.rounds} rounds + up to {default_job().extra_rounds} extra for unstable "
             f"items, {default_job().subnet_rounds} rounds for the calibration subnets, default windows; "
             f"{'models cached' if a.keep_cache else 'building included (fresh model cache)'}.", "",
             "| backend | mode | ops measured | ops interpolated | calibration subnets | records | items re-measured | "
             "build s | measure s | total s | model files MB | goal |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for mode, nm, ni, nc, nr, ex, b, m, w, nb, _, _ in rows:
        goal = {("onnxruntime", "full"): 600, ("onnxruntime", "quick"): 120, ("tflite", "quick"): 90}.get(
            (a.backend, mode))
        verdict = f"<= {goal} s {'met' if w <= goal else 'MISSED'}" if goal else ""
        lines.append(f"| {a.backend} | {mode} | {nm} | {ni} | {nc} | {nr} | {ex} | {b:.1f} | {m:.0f} | {w:.0f} | "
                     f"{nb / 1e6:.0f} | {verdict} |")
    lines += [""] + [f"- {mode}: before: {l0}; after: {l1}" for mode, *_, l0, l1 in rows]
    report(a, "Profiling cost (bench/profile_cost.py)", "\n".join(lines))


def full_items(calibration_subnets: int) -> list:
    """The items of a full profile: every op at every resolution, then the calibration subnets."""
    from ofakit.ofa_core.ops import enumerate_ops
    from ofakit.ofa_core.space import space_for_width
    from ofakit.profiler.items import Item
    from ofakit.profiler.pipeline import ProfileRequest

    req = ProfileRequest(calibration_subnets=calibration_subnets)
    ops = enumerate_ops(space_for_width(1.0), req.measured_resolutions())
    return [Item.op(op) for op in ops.values()] + [Item.subnet(x) for x in req.calibration_archs()]


def build_full(a: argparse.Namespace) -> None:
    """build-full: build a full profile's model files on a fresh cache, per backend."""
    from ofakit.ofa_core.direct import PACKED_SUFFIX
    from ofakit.profiler.agent import AGENT_FILE
    from ofakit.profiler.builder import Builder

    items = full_items(a.calibration_subnets)
    lines = ["Building every model file of a full profile (1,257 ops + calibration subnets) into a fresh cache, "
             "in-process (direct builds).", "",
             "| backend | files | build s | goal | files MB | upload MB (packed files + agent) | goal | "
             "load before -> after |", "|---|---:|---:|---|---:|---:|---|---|"]
    for name in a.backends:
        with tempfile.TemporaryDirectory(prefix="ofakit-build-") as tmp:
            load0 = machine().rsplit(", ", 1)[1]
            t0 = time.perf_counter()
            res = Builder(get_backend(name), tmp).build(items)
            secs = time.perf_counter() - t0
            bad = [r.error for r in res.values() if not r.ok]
            if bad:
                raise SystemExit(f"{name}: {len(bad)} builds failed, e.g. {bad[0]}")
            sizes = [os.path.getsize(r.path) for r in res.values()]
            upload = sum(os.path.getsize(r.path + PACKED_SUFFIX) for r in res.values()) + AGENT_FILE.stat().st_size
        goal = {"onnxruntime": 30, "tflite": 60}.get(name, 0)
        lines.append(f"| {name} | {len(items)} | {secs:.1f} | <= {goal} s {'met' if secs <= goal else 'MISSED'} "
                     f"| {sum(sizes) / 1e6:.0f} | {upload / 1e6:.1f} | <= 50 MB {'met' if upload <= 50e6 else 'MISSED'}"
                     f" | {load0} -> {machine().rsplit(', ', 1)[1]} |")
        print(lines[-1])
    report(a, "Model file building, full profile (bench/profile_cost.py --mode build-full)", "\n".join(lines))


def sample_items(n_ops: int, n_subnets: int, seed: int) -> list:
    """A seeded sample of ``n_ops`` full-profile ops (over all resolutions) and ``n_subnets`` random subnets."""
    from ofakit.ofa_core.space import sample_arch, space_for_width
    from ofakit.profiler.items import Item

    rng = np.random.default_rng(seed)
    ops = full_items(0)
    pick = [ops[i] for i in sorted(rng.choice(len(ops), n_ops, replace=False))]
    return pick + [Item.subnet(sample_arch(rng, space_for_width(1.0))) for _ in range(n_subnets)]


def variant_files(item, backend, folder: Path) -> dict[str, str]:
    """The files compared for one item: direct (seeded weights, as profiled), exported (torch / litert-torch
    from a fresh module), the exported file again (loaded separately: its run-to-run spread), and the direct
    graph with all-zero and with constant weights."""
    from ofakit.ofa_core.direct import BUILDERS, random_weights
    from ofakit.ofa_core.export import EXPORTERS

    base = folder / item.filename("")
    out = {name: f"{base}.{name}{backend.suffix}" for name in ("direct", "exported", "zero", "const")}
    backend.build(item, out["direct"])
    module, example = item.module()
    EXPORTERS[backend.format](module, example, out["exported"])
    w = random_weights(item.ops(), item.seed)
    BUILDERS[backend.format](item.ops(), out["zero"], {k: np.zeros_like(v) for k, v in w.items()})
    BUILDERS[backend.format](item.ops(), out["const"], {k: np.full_like(v, 0.01) for k, v in w.items()})
    out["exported again"] = out["exported"]
    return out


def compare(a: argparse.Namespace) -> None:
    """compare: interleaved rounds timing direct vs exported files (and the controls) per runtime."""
    from ofakit.profiler.agent.ofakit_agent import RUNTIMES, time_runs
    from ofakit.profiler.pipeline import default_job

    timing = default_job().timing
    items = sample_items(a.sample_ops, a.sample_subnets, 0)
    rng = np.random.default_rng(1)
    lines = [f"{len(items) - a.sample_subnets} ops (seeded sample over all resolutions) + {a.sample_subnets} random "
             f"subnets, {a.rounds} interleaved rounds (each round: every item's files in random order, loaded "
             "afresh, one measurement window of the profiler's default settings, thread CPU time), per item "
             "the min over rounds of the window medians (the profiler's estimator). Ratio = variant / exported "
             "file; 'exported again' is the exported file timed as a second file (its own run-to-run spread). "
             "Spread = 10th..90th percentile of the per-item ratios.", "",
             "| runtime | variant | median ratio | p10 | p90 | p90-p10 | max abs dev | load before -> after |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for name in a.backends:
        backend = get_backend(name)
        load = RUNTIMES[name]
        with tempfile.TemporaryDirectory(prefix="ofakit-cmp-") as tmp:
            files = {it.id: variant_files(it, backend, Path(tmp)) for it in items}
            load0 = machine().rsplit(", ", 1)[1]
            best: dict = {}
            for _ in range(a.rounds):
                order = [(i, v) for i in files for v in files[i]]
                rng.shuffle(order)
                for item_id, v in order:
                    fn = load(files[item_id][v], 1)
                    ms = float(np.median(time_runs(fn, timing)[0])) * 1e3
                    best[item_id, v] = min(best.get((item_id, v), np.inf), ms)
                    del fn
            for v in ("direct", "exported again", "zero", "const"):
                r = np.array([best[i, v] / best[i, "exported"] for i in files])
                p10, p50, p90 = np.percentile(r, [10, 50, 90])
                lines.append(f"| {name} | {v} | {p50:.4f} | {p10:.4f} | {p90:.4f} | {p90 - p10:.4f} | "
                             f"{np.abs(r - 1).max():.4f} | {load0} -> {machine().rsplit(', ', 1)[1]} |")
                print(lines[-1])
            ctl = np.array([best[i, "exported again"] / best[i, "exported"] for i in files])
            d = np.array([best[i, "direct"] / best[i, "exported"] for i in files])
            ok_med = abs(np.median(d) - 1) <= 0.01
            ok_spread = np.subtract(*np.percentile(d, [90, 10])) <= np.subtract(*np.percentile(ctl, [90, 10]))
            verdicts.append(f"- {name}: median within 1% of 1.0: {'met' if ok_med else 'MISSED'}; spread no wider "
                            f"than the exported file's own: {'met' if ok_spread else 'MISSED'}")
    report(a, "Directly built vs exported model files: latency (bench/profile_cost.py --mode compare)",
           "\n".join(lines + [""] + verdicts))


def report(a: argparse.Namespace, title: str, text: str) -> None:
    print(text)
    if not a.no_append:
        append_section(title, text)


def main() -> None:
    from ofakit.profiler.pipeline import CALIBRATION_SUBNETS, default_job

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("full", "quick", "both", "build-full", "compare"), default="both")
    p.add_argument("--backend", default="onnxruntime", help="profile modes: the backend profiled")
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "tflite"], help="build-full / compare")
    p.add_argument("--rounds", type=int, default=default_job().rounds)
    p.add_argument("--calibration-subnets", type=int, default=CALIBRATION_SUBNETS)
    p.add_argument("--sample-ops", type=int, default=40, help="compare: ops sampled")
    p.add_argument("--sample-subnets", type=int, default=4, help="compare: subnets sampled")
    p.add_argument("--keep-cache", action="store_true", help="reuse built models (measures measuring only)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "profile_cost")
    p.add_argument("--ship", action="store_true", help="also save the full onnxruntime profile as the shipped "
                   "default (device_profiles/cpu-onnxruntime-1t)")
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()
    {"build-full": build_full, "compare": compare}.get(a.mode, profile_cost)(a)


if __name__ == "__main__":
    main()
