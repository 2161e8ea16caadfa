"""Accuracy-predictor throughput: ofakit's vectorized path vs OFA's per-arch Python encoding loop, same run.

Prints predictions/s for OFA's pretrained 128-400-400-400-1 predictor evaluated (a) the way OFA's tutorial code
does it (a Python loop building one one-hot tensor per arch, then one forward pass per population), (b) through
``load_accuracy_predictor("ofa:...")`` on a whole population at once and per 100-subnet population, and (c) our
MLP at smaller hidden sizes (same code path; speed does not depend on the weights). Also the encoding alone and
the arithmetic bound (multiply-adds per prediction). Appends a dated section to BENCHMARKS.md.

    .venv/bin/python bench/accuracy_speed.py [--n 20000] [--repeats 3] [--no-append]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, append_section, machine  # noqa: E402
from ofa_core.space import encode_ofa, sample_batch  # noqa: E402
from predictors.accuracy import AccuracyMLP, build_mlp, load_accuracy_predictor  # noqa: E402

OFA_PTH = ROOT.parent / "shared" / "data" / "ofa_acc_predictor" / "acc_predictor.pth"
POP = 100  # OFA's evolutionary search scores one population of 100 per call


class OFAStyleLoop:
    """OFA's tutorial predictor re-implemented: per-arch Python one-hot encoding, torch forward per call."""

    KS, EX = {3: 0, 5: 1, 7: 2}, {3: 0, 4: 1, 6: 2}

    def __init__(self, path: Path):
        self.model = torch.nn.Sequential(torch.nn.Linear(128, 400), torch.nn.ReLU(), torch.nn.Linear(400, 400),
                                         torch.nn.ReLU(), torch.nn.Linear(400, 400), torch.nn.ReLU(),
                                         torch.nn.Linear(400, 1))
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def encode(self, arch: dict) -> torch.Tensor:
        ks_onehot, ex_onehot = [0.0] * 60, [0.0] * 60
        for stage in range(5):
            for i in range(arch["d"][stage]):
                j = stage * 4 + i
                ks_onehot[j * 3 + self.KS[arch["ks"][j]]] = 1.0
                ex_onehot[j * 3 + self.EX[arch["e"][j]]] = 1.0
        r_onehot = [0.0] * 8
        r_onehot[(arch["r"][0] - 112) // 16] = 1.0
        return torch.tensor([ks_onehot + ex_onehot + r_onehot])

    def predict(self, archs: list[dict]) -> np.ndarray:
        feats = torch.cat([self.encode(a) for a in archs], 0)
        with torch.no_grad():
            return self.model(feats).double().view(-1).numpy()


def rate(fn, n: int, repeats: int) -> float:
    """Predictions per second: best of ``repeats`` (the machine is shared; the minimum time is the signal)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    batch = sample_batch(np.random.default_rng(0), args.n, resolutions=range(160, 225, 4))
    dicts = [c.to_ofa_dict() for c in batch.to_configs()]
    pops = [batch[i:i + POP] for i in range(0, args.n, POP)]
    pop_dicts = [dicts[i:i + POP] for i in range(0, args.n, POP)]
    ofa_loop = OFAStyleLoop(OFA_PTH)
    ours = load_accuracy_predictor(f"ofa:{OFA_PTH}")

    diff = float(np.max(np.abs(ofa_loop.predict(dicts[:2000]) - ours.predict(batch[:2000]))))
    rows = [
        ("OFA-style loop, per population of 100", rate(lambda: [ofa_loop.predict(p) for p in pop_dicts], args.n,
                                                       args.repeats)),
        ("OFA-style loop, one call", rate(lambda: ofa_loop.predict(dicts), args.n, args.repeats)),
        ("ofakit ofa:, per population of 100", rate(lambda: [ours.predict(p) for p in pops], args.n, args.repeats)),
        ("ofakit ofa:, one call", rate(lambda: ours.predict(batch), args.n, args.repeats)),
        ("ofakit encode_ofa only", rate(lambda: encode_ofa(batch), args.n, args.repeats)),
    ]
    base = rows[0][1]
    for hidden in ((256, 256), (128, 128), (64, 64)):
        mlp = AccuracyMLP(hidden=hidden, encoding="ofa")
        torch.manual_seed(0)
        mlp._set_weights(build_mlp(128, hidden).state_dict())
        mlp.y_mean_, mlp.y_std_ = 0.0, 1.0
        macs = 128 * hidden[0] + sum(a * b for a, b in zip(hidden, hidden[1:])) + hidden[-1]
        rows.append((f"ofakit MLP {'-'.join(map(str, hidden))} ({macs / 1e3:.0f}K MACs), one call",
                     rate(lambda: mlp.predict(batch), args.n, args.repeats)))

    lines = [f"| method | predictions/s | vs OFA-style |", "|---|---:|---:|"]
    lines += [f"| {name} | {r:,.0f} | {r / base:.1f}x |" for name, r in rows]
    ofa_macs = 128 * 400 + 2 * 400 * 400 + 400
    notes = [
        f"max |ofakit - OFA-style| over 2,000 subnets: {diff:.2e} (top-1 fraction)",
        f"OFA's net costs {ofa_macs / 1e3:.0f}K multiply-adds per prediction; at the {gemm_gflops():.0f} GFLOP/s a "
        f"float32 GEMM reaches here now, that bounds it at {gemm_gflops() * 1e9 / (2 * ofa_macs):,.0f}/s",
    ]
    print("\n".join(lines + [""] + notes))
    if not args.no_append:
        append(lines, notes, args)


def gemm_gflops() -> float:
    if not hasattr(gemm_gflops, "value"):
        a = np.random.default_rng(0).random((20000, 400), dtype=np.float32)
        w = np.random.default_rng(1).random((400, 400), dtype=np.float32)
        gemm_gflops.value = rate(lambda: a @ w, 1, 3) * 2 * 20000 * 400 * 400 / 1e9
    return gemm_gflops.value


def append(lines: list[str], notes: list[str], args: argparse.Namespace) -> None:
    append_section("Accuracy predictor speed (predictors)", (
        f"`bench/accuracy_speed.py --n {args.n} --repeats {args.repeats}`; {machine()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads. Best of {args.repeats} per row, all rows in one run.\n\n"
        + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)))


if __name__ == "__main__":
    main()
