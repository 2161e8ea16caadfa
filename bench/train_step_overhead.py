"""Training-step overhead of the elastic supernet: one SGD step (forward, loss, backward, optimizer step) of the
supernet with a subnet active vs. the same step of the static network of that subnet (``get_active_subnet()``:
same structure, same weights), on the same batch. Goal: <= 1.3x.

Timing follows ../shared/notes/measuring-here.md: every (arch, kind) item is timed in several rounds,
interleaved in shuffled order; median of the steps within a round, minimum over rounds. One torch thread.

    .venv/bin/python bench/train_step_overhead.py [--batch 16] [--resolutions 64 128] [--rounds 3] [--no-append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ofa_core.space import ArchConfig, sample_arch, space_for_width  # noqa: E402
from ofa_core.supernet import OFAMobileNetV3  # noqa: E402


def timed_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                steps: int, before=None) -> float:
    """Median seconds of ``steps`` training steps (after one warm-up step)."""
    times = []
    for i in range(steps + 1):
        if before is not None:
            before()
        t = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


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
            static = sup.get_active_subnet()
            x = torch.randn(args.batch, 3, r, r)
            y = torch.randint(0, 1000, (args.batch,))
            items.append({"name": name, "r": r, "arch": arch, "static": static, "x": x, "y": y,
                          "times": {"supernet": [], "static": []}})
    sgd = dict(lr=1e-4, momentum=0.9, weight_decay=3e-5)
    opt_sup = torch.optim.SGD(sup.parameters(), **sgd)
    order = [(i, kind) for i in range(len(items)) for kind in ("supernet", "static")]
    for rnd in range(args.rounds):
        rng.shuffle(order)
        for i, kind in order:
            it = items[i]
            if kind == "supernet":
                t = timed_steps(sup, opt_sup, it["x"], it["y"], args.steps,
                                before=lambda a=it["arch"]: sup.set_active_subnet(a))
            else:
                opt = it.setdefault("opt", torch.optim.SGD(it["static"].parameters(), **sgd))
                t = timed_steps(it["static"], opt, it["x"], it["y"], args.steps)
            it["times"][kind].append(t)
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    rows = ["| arch | r | static step (ms) | supernet step (ms) | ratio |", "|---|---|---|---|---|"]
    ratios = []
    for it in items:
        s, d = min(it["times"]["static"]), min(it["times"]["supernet"])
        ratios.append(d / s)
        rows.append(f"| {it['name']} | {it['r']} | {1000 * s:.0f} | {1000 * d:.0f} | {d / s:.2f}x |")
    summary = (f"Median ratio {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x over {len(ratios)} subnets "
               f"(goal <= 1.3x).")
    text = "\n".join([
        "", f"## Training-step overhead of the supernet (bench/train_step_overhead.py, {dt.date.today()})", "",
        f"Machine: this 2-core development CPU (shared, noisy), torch {torch.__version__}, 1 thread. One SGD step "
        f"(forward, cross entropy, backward, momentum step) at batch {args.batch}, 1000 classes, width 1.0: "
        f"OFAMobileNetV3 with the subnet active vs. the static network of the same subnet and weights "
        f"(get_active_subnet()), same batch. {args.rounds} interleaved rounds in shuffled order, median of "
        f"{args.steps} steps per round, minimum over rounds.", "", *rows, "", summary, ""])
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
