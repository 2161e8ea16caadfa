"""Accuracy-MLP fit quality (goal P6: RMSE <= 0.5 points, Kendall tau >= 0.8 with <= 2,000 samples).

With ``--data JSONL`` (``ofakit accuracy-dataset`` output: arch + measured top-1 fraction per line) the last
``--test`` records are held out and the MLP is trained on the first n of the rest. Without it the labels are
synthetic but honest: OFA's pretrained predictor's outputs on random subnets (a smooth, learnable function of
the arch; it says nothing about how noisy real labels are). Prints RMSE (points), Kendall tau, Spearman on the
test records for each (n, encoding, hidden) and appends the table to BENCHMARKS.md.

    .venv/bin/python bench/accuracy_fit.py [--data acc.jsonl] [--sizes 500,2000] [--hidden 128,128 400,400,400]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, append_section, machine  # noqa: E402
from ofakit.ofa_core.space import sample_batch  # noqa: E402
from ofakit.predictors.accuracy import AccuracyMLP, accuracy_metrics, load_accuracy_jsonl, load_accuracy_predictor  # noqa: E402

OFA_PTH = ROOT.parent / "shared" / "data" / "ofa_acc_predictor" / "acc_predictor.pth"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--sizes", default="500,2000")
    ap.add_argument("--hidden", nargs="+", default=["128,128", "400,400,400"])
    ap.add_argument("--encodings", default="general,ofa")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    if args.data is not None:
        archs, acc = load_accuracy_jsonl(args.data)
        n_test = min(args.test, len(acc) // 2)
        train_pool, test = archs[: len(acc) - n_test], archs[len(acc) - n_test:]
        y_pool, y_test = acc[: len(acc) - n_test], acc[len(acc) - n_test:]
        source = f"{args.data} ({len(acc)} records, last {n_test} held out)"
    else:
        ofa = load_accuracy_predictor(f"ofa:{OFA_PTH}")
        train_pool = sample_batch(np.random.default_rng(0), max(int(s) for s in args.sizes.split(",")),
                                  resolutions=range(160, 225, 4))
        test = sample_batch(np.random.default_rng(1), args.test, resolutions=range(160, 225, 4))
        y_pool, y_test = ofa.predict(train_pool), ofa.predict(test)
        source = "synthetic labels: OFA's pretrained predictor on random subnets (r 160-224)"

    lines = ["| train n | encoding | hidden | epochs | fit s | test RMSE (points) | Kendall tau | Spearman |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for n in (int(s) for s in args.sizes.split(",")):
        for enc in args.encodings.split(","):
            for hidden in args.hidden:
                h = tuple(int(v) for v in hidden.split(","))
                t = time.time()
                model = AccuracyMLP(hidden=h, encoding=enc).fit(train_pool[:n], y_pool[:n])
                m = accuracy_metrics(y_test, model.predict(test))
                lines.append(f"| {n} | {enc} | {hidden} | {model.n_epochs_} | {time.time() - t:.0f} | "
                             f"{m.rmse_points:.3f} | {m.kendall_tau:.4f} | {m.spearman:.4f} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))
    if not args.no_append:
        append_section("Accuracy MLP fit quality (predictors)", (
            f"`bench/accuracy_fit.py --sizes {args.sizes}`; {machine()}. Data: {source}; {len(y_test)} test "
            f"subnets; 10% of each training set held out for early stopping.\n\n" + "\n".join(lines)))


if __name__ == "__main__":
    main()
