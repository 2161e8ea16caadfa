"""Training-step overhead of the elastic supernet: one SGD step (forward, loss, backward, optimizer step) of the
supernet with a subnet active vs. the same step of the static network of that subnet (``get_active_subnet()``:
same structure, same weights, depthwise kernels cropped to their inputs as the supernet's forward does), on the
same batch. Goal: <= 1.3x.

Timing follows ../shared/notes/measuring-here.md (rounds in shuffled order) and, because the machine is shared and
time-sliced, compares back-to-back pairs of steps by their thread CPU time. One torch thread.

    .venv/bin/python bench/train_step_overhead.py [--batch 16] [--resolutions 64 128] [--rounds 3] [--no-append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ofakit.ofa_core.space import ArchConfig, sample_arch, space_for_width  # noqa: E402
from ofakit.ofa_core.supernet import OFAMobileNetV3  # noqa: E402
from ofakit.ofa_core.train.evaluate import crop_depthwise_to_input  # noqa: E402


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(wall s, thread CPU s) of one training step."""
    w, c = time.perf_counter(), time.thread_time()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - w, time.thread_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--random", type=int, default=2, help="random subnets besides the largest and smallest")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sup = OFAMobileNetV3(1.0, n_classes=1000)
    spec = space_for_width(1.0)
    rng = np.random.default_rng(0)
    items = []
    for r in args.resolutions:
        archs = {"largest": ArchConfig((7,) * 20, (6,) * 20, (4,) * 5, r),
                 "smallest": ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, r)}
        archs.update({f"random-{i}": sample_arch(rng, spec, [r]) for i in range(args.random)})
        for name, arch in archs.items():
            sup.set_active_subnet(arch)
            static = crop_depthwise_to_input(sup.get_active_subnet())  # the supernet crops the same taps
            x = torch.randn(args.batch, 3, r, r)
            y = torch.randint(0, 1000, (args.batch,))
            items.append({"name": name, "r": r, "arch": arch, "static": static, "x": x, "y": y,
                          "order": len(items)})
    sgd = dict(lr=1e-4, momentum=0.9, weight_decay=3e-5)
    opt_sup = torch.optim.SGD(sup.parameters(), **sgd)
    for it in items:
        it["opt"] = torch.optim.SGD(it["static"].parameters(), **sgd)
        it["pairs"] = []  # (supernet, static) thread-CPU seconds of back-to-back steps
        it["wall"] = {"supernet": [], "static": []}

    def run(it: dict, kind: str) -> tuple[float, float]:
        if kind == "supernet":
            sup.set_active_subnet(it["arch"])
            return step(sup, opt_sup, it["x"], it["y"])
        return step(it["static"], it["opt"], it["x"], it["y"])

    for it in items:  # warm-up
        run(it, "supernet")
        run(it, "static")
    for rnd in range(args.rounds):
        rng.shuffle(items)
        for it in items:
            walls = {"supernet": [], "static": []}
            for k in range(args.steps):
                kinds = ("supernet", "static") if (k + rnd) % 2 == 0 else ("static", "supernet")
                got = {kind: run(it, kind) for kind in kinds}
                it["pairs"].append((got["supernet"][1], got["static"][1]))
                for kind in kinds:
                    walls[kind].append(got[kind][0])
            for kind, v in walls.items():
                it["wall"][kind].append(statistics.median(v))
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    items.sort(key=lambda it: (it["r"], it["order"]))
    rows = ["| arch | r | static step, CPU ms | supernet step, CPU ms | paired CPU ratio | wall ratio |",
            "|---|---|---|---|---|---|"]
    paired, walls = [], []
    for it in items:
        sup_cpu = statistics.median(p[0] for p in it["pairs"])
        st_cpu = statistics.median(p[1] for p in it["pairs"])
        ratio = statistics.median(p[0] / p[1] for p in it["pairs"])
        wall = min(it["wall"]["supernet"]) / min(it["wall"]["static"])
        paired.append(ratio)
        walls.append(wall)
        rows.append(f"| {it['name']} | {it['r']} | {1000 * st_cpu:.0f} | {1000 * sup_cpu:.0f} | {ratio:.2f}x | "
                    f"{wall:.2f}x |")
    gm = lambda v: float(np.exp(np.mean(np.log(v))))  # noqa: E731
    summary = (f"Paired CPU ratio: geometric mean {gm(paired):.2f}x, range {min(paired):.2f}..{max(paired):.2f}x "
               f"over {len(paired)} subnets (goal <= 1.3x); wall ratio (min over rounds): geometric mean "
               f"{gm(walls):.2f}x, range {min(walls):.2f}..{max(walls):.2f}x. Load average at the end: "
               f"{os.getloadavg()[0]:.1f}.")
    text = "\n".join([
        "", f"## Training-step overhead of the supernet (bench/train_step_overhead.py, {dt.date.today()})", "",
        f"Machine: this 2-core development CPU (shared, noisy), torch {torch.__version__}, 1 thread. One SGD step "
        f"(forward, cross entropy, backward, momentum step) at batch {args.batch}, 1000 classes, width 1.0: "
        f"OFAMobileNetV3 with the subnet active vs. the static network of the same subnet and weights "
        f"(get_active_subnet()), same batch. {args.rounds} rounds over the subnets in shuffled order; per round and "
        f"subnet {args.steps} back-to-back pairs (supernet step, static step, alternating which goes first). "
        f"Paired CPU ratio = median over all pairs of the two steps' thread CPU times (robust to this machine's "
        f"time-slicing); wall ratio = min over rounds of per-round medians.", "", *rows, "", summary, ""])
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
