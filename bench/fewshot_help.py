"""Few-shot latency prediction on HELP's measured GPU latencies (5,000 OFA subnets x 12 GPU/batch configs).

Protocol (from ../shared/README.md): leave one config out; draw 10 of its subnets at random (seeds 0..4); fit on
those 10 plus the other configs' data; predict the other 4,990 subnets of the left-out config; report Spearman
and the share within +-10%, per config and as means over configs (each the mean over seeds).

Methods, all on the same samples:
- baseline: linear fit (ms) from the other config whose 10 values correlate best with the target's (README).
- few-shot, measured refs: :class:`~ofakit.predictors.fewshot.FewShotPredictor` with the other configs' measured
  latencies as references (the baseline's information).
- few-shot, predicted refs: references are :class:`~ofakit.predictors.regressors.LatencyRegressor` (gbr, arch
  features) models of the other configs, cross-fitted in two halves so no subnet's reference value comes from a
  model that saw its measurement - the setting of a user whose subnets were never measured on known devices.
- few-shot, measured + predicted refs; few-shot without references (arch features only).
- ceiling: a linear model on the other configs' log latencies + arch features fitted on ~4,000 subnets of the
  target itself (5-fold cross-validation): what 10 samples cannot be expected to beat.

``--ceiling`` adds a separate table, the many-sample ceiling: per config, ridge, histogram gradient boosting and
a random forest on the other configs' log latencies + arch features + the per-block one-hot encoding, each fitted
on ~4,000 subnets of the target (5-fold cross-validation, 1,000 test subnets per fold); the best of the three per
config (chosen on the test folds, so if anything optimistic). It also tests whether what the best model misses is
measurement noise rather than an arch effect no model found (HELP holds no repeated measurements):
- nearest-arch residual correlation: the residual of a subnet against that of its nearest neighbour in encoding
  space. An arch effect the model missed is shared by similar subnets (positive); noise is not (about 0).
  The control column repeats it for a ridge model on the arch alone, whose misses on big-batch configs are
  arch effects (the other configs explain them): it shows the test detects them.
- file-order residual correlation: against the next subnet in the file (presumably HELP's measurement order; the
  file order is uncorrelated with the arch). Positive means slow/fast measurement states lasting many subnets.
- time-state bound: neighbours in the file are independent random subnets, so the residuals' mean autocovariance
  at file-order lags 1..3 is variance that depends on when a subnet was measured, not on the subnet: no predictor
  from the arch can exceed a Pearson correlation of sqrt(1 - that / var(log latency)) with the measured log
  latencies, and the other configs do not carry the state either (it remains after the best model used them).

    .venv/bin/python bench/fewshot_help.py [--seeds 5] [--shots 10] [--ceiling | --ceiling-only] [--no-append]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, append_section, machine  # noqa: E402
from ofakit.ofa_core.space import ArchBatch, encode_general  # noqa: E402
from ofakit.predictors.features import arch_features  # noqa: E402
from ofakit.predictors.fewshot import FewShotPredictor, TableReference  # noqa: E402
from ofakit.predictors.regressors import LatencyRegressor  # noqa: E402

HELP = ROOT.parent / "shared" / "data" / "help_ofa_gpu_latency" / "ofa_subnets_gpu_latency.jsonl"


def load_help() -> tuple[ArchBatch, np.ndarray, list[str]]:
    rows = [json.loads(line) for line in HELP.read_text().splitlines()]
    configs = list(rows[0]["latency_ms"])
    b = ArchBatch(np.array([r["ks"] for r in rows]), np.array([r["e"] for r in rows]),
                  np.array([r["d"] for r in rows]), np.array([r["r"] for r in rows]))
    return b, np.array([[r["latency_ms"][c] for c in configs] for r in rows]), configs


def score(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    return float(stats.spearmanr(pred, true).statistic), float(np.mean(np.abs(pred / true - 1) <= 0.1))


def baseline(lat: np.ndarray, t: int, idx: np.ndarray) -> np.ndarray:
    """README's baseline: linear fit from the other config best correlated with the target on the samples."""
    y = lat[idx, t]
    others = [j for j in range(lat.shape[1]) if j != t]
    j = max(others, key=lambda j: abs(np.corrcoef(lat[idx, j], y)[0, 1]))
    return np.polyval(np.polyfit(lat[idx, j], y, 1), lat[:, j])


def predicted_references(b: ArchBatch, lat: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each config's latency predicted by a gbr regressor trained on the other half of the subnets."""
    order = np.random.default_rng(seed).permutation(len(b))
    halves = (order[: len(b) // 2], order[len(b) // 2:])
    out = np.zeros_like(lat)
    for j in range(lat.shape[1]):
        for fit_on, apply_to in (halves, halves[::-1]):
            reg = LatencyRegressor(model="gbr", n_estimators=200, max_depth=3).fit(b[fit_on], lat[fit_on, j])
            out[apply_to, j] = reg.predict(b[apply_to])
    return out


def ceiling(b: ArchBatch, lat: np.ndarray, t: int) -> tuple[float, float]:
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_predict

    x = np.column_stack([np.log(np.delete(lat, t, axis=1)), arch_features(b)])
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    pred = np.exp(cross_val_predict(LinearRegression(), x, np.log(lat[:, t]), cv=5))
    return score(pred, lat[:, t])


CEILING_MODELS = ("ridge", "hgb", "rf")


def _ceiling_model(name: str):
    """A many-sample regressor of log latency; single-threaded (the machine is shared)."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))
    if name == "hgb":
        return HistGradientBoostingRegressor(max_iter=600, learning_rate=0.05, min_samples_leaf=10,
                                             l2_regularization=1.0, n_iter_no_change=30, early_stopping=True,
                                             random_state=0)
    return RandomForestRegressor(n_estimators=100, max_features=0.33, min_samples_leaf=2, n_jobs=1, random_state=0)


def ceiling_table(b: ArchBatch, lat: np.ndarray, configs: list[str]) -> tuple[list[str], list[str]]:
    """The many-sample ceiling and the noise diagnostics of its residuals (see the module docstring)."""
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one core: the machine is shared (HistGradientBoosting would take every core)
    t0 = time.time()
    enc = encode_general(b).astype(np.float64)
    enc[:, -2:] *= 4.0  # a 24-px resolution step weighs about as much as one changed block choice
    arch = np.column_stack([arch_features(b), enc])
    nearest = NearestNeighbors(n_neighbors=2).fit(enc).kneighbors(enc, return_distance=False)[:, 1]
    logs = np.log(lat)
    folds = KFold(5, shuffle=True, random_state=0)
    cell = lambda sp, w: f"{sp:.3f} / {100 * w:.1f}%"  # noqa: E731
    lines = ["| config | " + " | ".join(CEILING_MODELS) + " | best | nearest-arch residual corr (control: arch-only "
             "ridge) | file-order residual corr | time-state share of residual var "
             "| Pearson (log): best model / bound |", "|---" * (len(CEILING_MODELS) + 6) + "|"]
    best_all = []
    for t, c in enumerate(configs):
        x = np.column_stack([np.delete(logs, t, axis=1), arch])
        preds = {m: cross_val_predict(_ceiling_model(m), x, logs[:, t], cv=folds) for m in CEILING_MODELS}
        scores = {m: score(np.exp(p), lat[:, t]) for m, p in preds.items()}
        best = max(CEILING_MODELS, key=lambda m: scores[m])
        best_all.append(scores[best])
        res = logs[:, t] - preds[best]
        near = np.corrcoef(res, res[nearest])[0, 1]
        arch_res = logs[:, t] - cross_val_predict(_ceiling_model("ridge"), arch, logs[:, t], cv=folds)
        control = np.corrcoef(arch_res, arch_res[nearest])[0, 1]
        lag1 = np.corrcoef(res[:-1], res[1:])[0, 1]
        time_var = max(0.0, float(np.mean([np.cov(res[:-k], res[k:])[0, 1] for k in (1, 2, 3)])))
        lines.append(f"| {c} | " + " | ".join(cell(*scores[m]) for m in CEILING_MODELS)
                     + f" | {cell(*scores[best])} ({best}) | {near:+.2f} ({control:+.2f}) | {lag1:+.2f} "
                     f"| {time_var / res.var():.2f} | {np.corrcoef(preds[best], logs[:, t])[0, 1]:.3f} / "
                     f"{np.sqrt(1 - time_var / logs[:, t].var()):.3f} |")
        print(f"  ceiling {c} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    mean = np.mean(best_all, axis=0)
    lines.append("| **mean** | " + " | ".join("" for _ in CEILING_MODELS) + f" | **{cell(*mean)}** | | | | |")
    id_corr = max(abs(np.corrcoef(np.arange(len(b)), col)[0, 1]) for col in arch_features(b).T)
    notes = [f"cells: Spearman / share within ±10% on all {len(b)} subnets, each predicted by a model fitted on the "
             f"other ~{len(b) * 4 // 5} (5-fold cross-validation); features: the other {len(configs) - 1} configs' "
             "log latencies, arch features and the per-block one-hot encoding",
             f"largest |correlation| between the file order and an arch feature: {id_corr:.3f}; "
             f"{time.time() - t0:.0f} s"]
    return lines, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--ceiling", action="store_true", help="also report the many-sample ceiling (separate table)")
    ap.add_argument("--ceiling-only", action="store_true", help="report only the many-sample ceiling")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    if not args.ceiling_only:
        few_shot_table(args)
    if args.ceiling or args.ceiling_only:
        b, lat, configs = load_help()
        lines, notes = ceiling_table(b, lat, configs)
        print("\n".join(["", "many-sample ceiling:"] + lines + [""] + notes))
        if not args.no_append:
            flag = "--ceiling-only" if args.ceiling_only else "--ceiling"
            append_section("Few-shot latency on HELP GPUs: the many-sample ceiling (predictors, issue 5)", (
                f"`bench/fewshot_help.py {flag}`; {machine()}. What any model reaches with ~4,000 "
                "measured subnets of the left-out config instead of 10, and whether what it misses is noise.\n\n"
                + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)))


def few_shot_table(args: argparse.Namespace) -> None:
    """The few-shot table: every method on the same samples (seeds 0..seeds-1), plus the linear ceiling."""
    t0 = time.time()
    b, lat, configs = load_help()
    pred_refs = predicted_references(b, lat)
    ref_quality = [score(pred_refs[:, j], lat[:, j])[0] for j in range(len(configs))]
    t_refs = time.time() - t0

    def few_shot(sources: list[np.ndarray]):
        def run(t: int, idx: np.ndarray) -> np.ndarray:
            refs = {f"{configs[j]}#{k}": TableReference(b, src[:, j], configs[j])
                    for k, src in enumerate(sources) for j in range(len(configs)) if j != t}
            return FewShotPredictor(references=refs, basis=b).fit(b[idx], lat[idx, t]).predict(b)
        return run

    methods = {
        "baseline (best other config, linear)": lambda t, idx: baseline(lat, t, idx),
        "few-shot, measured refs": few_shot([lat]),
        "few-shot, predicted refs": few_shot([pred_refs]),
        "few-shot, measured + predicted refs": few_shot([lat, pred_refs]),
        "few-shot, no refs (arch features)": few_shot([]),
    }
    res = {m: np.zeros((len(configs), args.seeds, 2)) for m in methods}
    for t in range(len(configs)):
        for s in range(args.seeds):
            idx = np.random.default_rng(s).choice(len(b), args.shots, replace=False)
            test = np.setdiff1d(np.arange(len(b)), idx)
            for name, fn in methods.items():
                res[name][t, s] = score(fn(t, idx)[test], lat[test, t])
        print(f"  {configs[t]} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    ceil = np.array([ceiling(b, lat, t) for t in range(len(configs))])

    head = "| config | " + " | ".join(methods) + " | ceiling (4,000 target samples) |"
    lines = [head, "|---" * (len(methods) + 2) + "|"]
    cell = lambda sp, w: f"{sp:.3f} / {100 * w:.1f}%"  # noqa: E731
    for t, c in enumerate(configs):
        lines.append(f"| {c} | " + " | ".join(cell(*res[m][t].mean(0)) for m in methods)
                     + f" | {cell(*ceil[t])} |")
    lines.append("| **mean** | " + " | ".join(f"**{cell(*res[m].mean((0, 1)))}**" for m in methods)
                 + f" | **{cell(*ceil.mean(0))}** |")
    notes = [
        f"cells: Spearman / share within ±10%, mean over {args.seeds} seeds of {args.shots} samples; "
        f"{len(b) - args.shots} test subnets per run",
        "predicted references: Spearman of the cross-fitted gbr regressors vs their own config: "
        + ", ".join(f"{c} {q:.3f}" for c, q in zip(configs, ref_quality)) + f" ({t_refs:.0f} s to fit)",
        f"total {time.time() - t0:.0f} s",
    ]
    print("\n".join(lines + [""] + notes))
    if not args.no_append:
        append_section("Few-shot latency on HELP GPUs (predictors)", (
            f"`bench/fewshot_help.py --seeds {args.seeds} --shots {args.shots}`; {machine()}. Leave one config "
            f"out, {args.shots} random samples of it, seeds 0..{args.seeds - 1}.\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(f"- {n}" for n in notes)))


if __name__ == "__main__":
    main()
