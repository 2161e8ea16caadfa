"""Cost of elasticity: supernet forward with a subnet active vs the extracted subnet vs a static net.

For N seeded random subnets (width 1.0, resolutions 128..224), times three things per subnet, batch 1, torch at
one thread, eval mode, no autograd:
  static     build_subnet(arch) with the weights copied in (the reference),
  extracted  supernet.get_active_subnet(),
  supernet   the OFAMobileNetV3 itself with the subnet active.
Items are timed in R rounds, each in a fresh shuffled order (all three kinds interleaved); an item's figure is
the minimum over rounds of its per-round median (this CPU switches between a fast and a slow state that lasts
seconds, see ../shared/notes/measuring-here.md). Each call is timed twice: wall clock (latency) and the thread's
CPU time (cost without the time the scheduler took the core away, which dominates wall time when the shared
machine is oversubscribed). A second estimate pairs calls: per subnet, P cycles of one call of each kind back to
back, and the median over cycles of each call's CPU time over the static call's in the same cycle (neighbouring
calls share the machine's state, so this ratio is far less noisy; the order rotates per cycle). Goals: extracted <= 1.02x static,
supernet <= 1.3x static.

    .venv/bin/python bench/elastic_overhead.py [--subnets 10] [--rounds 5] [--reps 10] [--no-append]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import append_section, machine  # noqa: E402
from ofakit.ofa_core.ops import subnet_macs  # noqa: E402
from ofakit.ofa_core.static import build_subnet  # noqa: E402
from ofakit.ofa_core.supernet import OFAMobileNetV3  # noqa: E402

KINDS = ("static", "extracted", "supernet")


def median_ms(fn, x: torch.Tensor, reps: int) -> np.ndarray:
    """(wall, thread CPU) medians in ms over ``reps`` calls after one warm-up call."""
    fn(x)  # warm-up (and, for the supernet, its per-subnet weight slices)
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(x)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return np.array([statistics.median(wall), statistics.median(cpu)]) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnets", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=30, help="back-to-back cycles per subnet for the paired ratio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-append", action="store_true", help="print only, do not append to BENCHMARKS.md")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    sup = OFAMobileNetV3().eval()
    archs, nets, inputs = [], {}, []
    for i in range(args.subnets):
        arch = sup.sample_active_subnet(rng)
        extracted = sup.get_active_subnet().eval()
        static = build_subnet(arch, n_classes=sup.n_classes).eval()
        static.load_state_dict(extracted.state_dict())
        archs.append(arch)
        inputs.append(torch.randn(1, 3, arch.r, arch.r))
        nets[i, "static"], nets[i, "extracted"] = static, extracted

    def run(i: int, kind: str) -> np.ndarray:
        if kind == "supernet":
            sup.set_active_subnet(archs[i])
            return median_ms(sup, inputs[i], args.reps)
        return median_ms(nets[i, kind], inputs[i], args.reps)

    items = [(i, k) for i in range(args.subnets) for k in KINDS]
    best = {item: np.full(2, np.inf) for item in items}
    t_start = time.perf_counter()
    with torch.no_grad():
        for rnd in range(args.rounds):
            for j in rng.permutation(len(items)):
                item = items[j]
                best[item] = np.minimum(best[item], run(*item))
            print(f"round {rnd + 1}/{args.rounds} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)

        paired = {}  # (i, kind) -> median over cycles of cpu(kind) / cpu(static) in the same cycle
        for i in range(args.subnets):
            sup.set_active_subnet(archs[i])
            fns = {"static": nets[i, "static"], "extracted": nets[i, "extracted"], "supernet": sup}
            cyc = {k: [] for k in KINDS}
            for c in range(args.pairs):
                for k in KINDS[c % 3:] + KINDS[:c % 3]:  # rotate the order: no kind always goes first
                    c0 = time.thread_time()
                    fns[k](inputs[i])
                    cyc[k].append(time.thread_time() - c0)
            for k in KINDS[1:]:
                paired[i, k] = float(np.median(np.array(cyc[k]) / np.array(cyc["static"])))

    rows, ext_r, sup_r = [], [], []  # ratios as (wall, cpu, paired cpu)
    for i, arch in enumerate(archs):
        s, e, n = (best[i, k] for k in KINDS)
        ext_r.append([*(e / s), paired[i, "extracted"]])
        sup_r.append([*(n / s), paired[i, "supernet"]])
        ratio = lambda r: " / ".join(f"{v:.3f}" for v in r)  # noqa: E731
        rows.append(f"| {i} | {arch.r} | {''.join(map(str, arch.d))} | {subnet_macs(arch) / 1e6:.0f} | "
                    f"{s[0]:.1f} / {s[1]:.1f} | {e[0]:.1f} / {e[1]:.1f} | {n[0]:.1f} / {n[1]:.1f} | "
                    f"{ratio(ext_r[-1])} | {ratio(sup_r[-1])} |")
    ext_r, sup_r = np.array(ext_r), np.array(sup_r)
    gmean = lambda v: np.exp(np.log(v).mean(axis=0))  # noqa: E731
    table = "\n".join([
        "| # | r | depths | MMACs | static ms | extracted ms | supernet ms | extracted/static | supernet/static |",
        "|---|---|---|---|---|---|---|---|---|", *rows])
    summary = "\n".join(
        f"- {name}/static, {clock}: geometric mean {gmean(r)[j]:.3f}, range {r[:, j].min():.3f}..{r[:, j].max():.3f}"
        f" (goal <= {goal})"
        for name, r, goal in (("extracted", ext_r, 1.02), ("supernet", sup_r, 1.3))
        for j, clock in enumerate(("wall", "CPU", "paired CPU")))
    body = (f"- machine: {machine()}\n- torch {torch.__version__}, 1 thread, batch 1, eval, no_grad, fp32\n"
            f"- method: {args.subnets} subnets (seed {args.seed}, width 1.0, r 128..224), {args.rounds} rounds x "
            f"{args.reps} reps, interleaved in shuffled order, min over rounds of per-round medians; "
            f"static = build_subnet(arch) with copied weights; time cells are wall / thread-CPU ms, ratio cells "
            f"wall / CPU / paired CPU ({args.pairs} back-to-back cycles)\n\n"
            f"{table}\n\n{summary}\n")
    print(body)
    if not args.no_append:
        append_section("Elastic overhead (bench/elastic_overhead.py)", body)


if __name__ == "__main__":
    main()
