"""Accuracy-predictor throughput, end to end (ArchBatch in, accuracies out), every row in one run.

Rows: OFA's pretrained 128-400-400-400-1 predictor evaluated (a) the way OFA's tutorial code does it (a Python
loop building one one-hot tensor per arch, then one forward pass per population: the baseline), (b) as ofakit
predicted before the first-layer tables ("dense": encode, then one float32 matmul per layer; kept here as
:func:`dense_predict`) and (c) through ``predict`` now (first layer as table look-ups); then our default
128-128 MLP over each encoding, dense vs ``predict`` (speed does not depend on the weights). Each both for one
call on the whole batch and per population of 100 (what evolutionary search calls). Also the encoders alone
and the arithmetic bound of OFA's net. Appends a dated section to BENCHMARKS.md.

    .venv/bin/python bench/accuracy_speed.py [--n 20000] [--repeats 5] [--no-append]
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
from ofakit.ofa_core.space import ArchBatch, encode_general, encode_ofa, sample_batch  # noqa: E402
from ofakit.predictors.accuracy import ENCODING_DIMS, ENCODINGS, AccuracyMLP, build_mlp, load_accuracy_predictor  # noqa: E402

OFA_PTH = ROOT.parent / "shared" / "data" / "ofa_acc_predictor" / "acc_predictor.pth"
POP = 100  # OFA's evolutionary search scores one population of 100 per call
DENSE_CHUNK = 32768  # rows per pass of the dense path, as it was in predictors/accuracy.py


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


def dense_predict(model: AccuracyMLP, b: ArchBatch) -> np.ndarray:
    """ofakit's previous ``predict``: encode the batch, then one float32 matmul (+ bias, ReLU) per layer."""
    out = np.empty(len(b))
    for start in range(0, len(b), DENSE_CHUNK):
        h = ENCODINGS[model.encoding](b[start:start + DENSE_CHUNK] if len(b) > DENSE_CHUNK else b)
        for i, (w, bias) in enumerate(model.layers_):
            h = h @ w
            h += bias
            if i < len(model.layers_) - 1:
                np.maximum(h, 0.0, out=h)
        out[start:start + len(h)] = h[:, 0]
    return out * model.y_std_ + model.y_mean_


def rate(fn, n: int, repeats: int) -> float:
    """Predictions per second: best of ``repeats`` (the machine is shared; the minimum time is the signal)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def default_mlp(encoding: str) -> AccuracyMLP:
    """Our default 128-128 MLP with random weights (speed does not depend on them)."""
    mlp = AccuracyMLP(encoding=encoding)
    torch.manual_seed(0)
    mlp._set_weights(build_mlp(ENCODING_DIMS[encoding], mlp.hidden).state_dict())
    mlp.y_mean_, mlp.y_std_ = 0.75, 0.04
    return mlp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    batch = sample_batch(np.random.default_rng(0), args.n, resolutions=range(160, 225, 4))
    dicts = [c.to_ofa_dict() for c in batch.to_configs()]
    pops = [batch[i:i + POP] for i in range(0, args.n, POP)]
    pop_dicts = [dicts[i:i + POP] for i in range(0, args.n, POP)]
    ofa_loop = OFAStyleLoop(OFA_PTH)
    models = [("OFA's predictor (ofa:)", load_accuracy_predictor(f"ofa:{OFA_PTH}"))]
    models += [(f"MLP 128-128, {enc} encoding", default_mlp(enc)) for enc in ("general", "ofa")]

    ofa = models[0][1]
    diffs = {"predict vs OFA-style loop, OFA's predictor": ofa.predict(batch[:2000]) - ofa_loop.predict(dicts[:2000])}
    for name, model in models:
        diffs[f"predict vs dense, {name}"] = model.predict(batch) - dense_predict(model, batch)

    def both(f, population_f=None) -> tuple[float, float]:
        """(per population of POP, one call) predictions/s of ``f``."""
        population_f = population_f or (lambda: [f(p) for p in pops])
        return rate(population_f, args.n, args.repeats), rate(lambda: f(batch), args.n, args.repeats)

    rows = [("OFA-style loop, OFA's predictor",
             *both(lambda _: ofa_loop.predict(dicts), lambda: [ofa_loop.predict(p) for p in pop_dicts]))]
    ratios = []
    for name, model in models:
        dense, new = both(lambda b: dense_predict(model, b)), both(model.predict)
        rows += [(f"ofakit dense (before), {name}", *dense), (f"ofakit predict (now), {name}", *new)]
        ratios.append(f"predict / dense, {name}: {new[0] / dense[0]:.2f}x per population of {POP}, "
                      f"{new[1] / dense[1]:.2f}x one call")
    rows += [("encode_general only", *both(encode_general)), ("encode_ofa only", *both(encode_ofa))]
    lines = [f"| method | per population of {POP} /s | vs OFA-style | one call of {args.n:,} /s | vs OFA-style |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {p:,.0f} | {p / rows[0][1]:.1f}x | {o:,.0f} | {o / rows[0][2]:.1f}x |"
              for name, p, o in rows]
    ofa_macs = 128 * 400 + 2 * 400 * 400 + 400
    notes = ratios + [f"max |{name}|: {np.max(np.abs(d)):.2e} (top-1 fraction)" for name, d in diffs.items()] + [
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
        f"{torch.get_num_threads()} torch threads. Best of {args.repeats} per cell, all rows in one run; per "
        f"population: {args.n // POP} calls of {POP}.\n\n"
        + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)))


if __name__ == "__main__":
    main()
