"""Learned latency regressors on measured end-to-end subnet latencies.

A. HELP GPU data (5,000 subnets x 12 configs, no LUT): ridge / gbr / rf on arch features, trained on n random
   subnets of a config, tested on 2,000 others: Spearman and share within +-10%.
B. (with --validation CSV) subnets measured end to end on this CPU by ``ofakit validate PROFILE``: the
   profile's plain LUT sum, its calibrated LUT, regressors with the profile's LUT features (5-fold
   cross-validation over the measured subnets) and the few-shot predictor fitted on 10 of them.

    .venv/bin/python bench/latency_regressors.py [--sizes 100,1000] [--validation runs/.../validation.csv
        --profile cpu-onnxruntime-1t] [--no-append]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import append_section, machine  # noqa: E402
from fewshot_help import load_help, score  # noqa: E402
from ofakit.predictors.regressors import MODELS, LatencyRegressor, load_measured  # noqa: E402

cell = lambda sp, w: f"{sp:.3f} / {100 * w:.1f}%"  # noqa: E731


def help_table(sizes: list[int], n_test: int = 2000) -> list[str]:
    b, lat, configs = load_help()
    order = np.random.default_rng(0).permutation(len(b))
    test = order[:n_test]
    cols = [(m, n) for n in sizes for m in MODELS]
    lines = ["| config | " + " | ".join(f"{m} n={n}" for m, n in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    allres = np.zeros((len(configs), len(cols), 2))
    for t, c in enumerate(configs):
        for k, (m, n) in enumerate(cols):
            train = order[n_test:n_test + n]
            reg = LatencyRegressor(model=m).fit(b[train], lat[train, t])
            allres[t, k] = score(reg.predict(b[test]), lat[test, t])
        lines.append(f"| {c} | " + " | ".join(cell(*allres[t, k]) for k in range(len(cols))) + " |")
        print(f"  {c} done", file=sys.stderr, flush=True)
    lines.append("| **mean** | " + " | ".join(f"**{cell(*allres[:, k].mean(0))}**" for k in range(len(cols)))
                 + " |")
    return lines


def cpu_table(csv_path: Path, profile_name: str, folds: int = 5) -> list[str]:
    from ofakit.device_profiles import load_profile
    from ofakit.predictors.fewshot import FewShotPredictor
    from ofakit.predictors.lut import CalibratedLUTPredictor, LUTPredictor

    prof = load_profile(profile_name)
    b, ms = load_measured(csv_path, prof.meta.width)
    rows = [("plain LUT sum", score(LUTPredictor(prof).predict(b), ms))]
    if prof.meta.calibration:
        rows.append(("calibrated LUT (profile's own calibration subnets)",
                     score(CalibratedLUTPredictor(prof).predict(b), ms)))
    order = np.random.default_rng(0).permutation(len(b))
    for m in MODELS:
        pred = np.zeros(len(b))
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            pred[test] = LatencyRegressor(model=m, profile=prof).fit(b[train], ms[train]).predict(b[test])
        rows.append((f"{m} + LUT features ({folds}-fold CV, {len(b) * (folds - 1) // folds} train)",
                     score(pred, ms)))
    fs = []
    for s in range(5):
        idx = np.random.default_rng(s).choice(len(b), 10, replace=False)
        rest = np.setdiff1d(np.arange(len(b)), idx)
        model = FewShotPredictor(references={prof.name: LUTPredictor(prof)}).fit(b[idx], ms[idx])
        fs.append(score(model.predict(b[rest]), ms[rest]))
    rows.append(("few-shot from 10 measured subnets + this LUT (5 seeds)", tuple(np.mean(fs, axis=0))))
    r = ms.min(), ms.max()
    return ([f"{len(b)} subnets measured by `ofakit validate {profile_name}` ({csv_path.name}), "
             f"{r[0]:.2f}–{r[1]:.2f} ms", "", "| predictor | Spearman / within ±10% |", "|---|---|"]
            + [f"| {name} | {cell(*v)} |" for name, v in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--validation", type=Path)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--skip-help", action="store_true")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    from ofakit.device_profiles import DEFAULT_PROFILE

    t0 = time.time()
    parts = []
    if not args.skip_help:
        parts += ["### A. HELP GPU latencies, regressors on arch features (Spearman / within ±10%, 2,000 test "
                  "subnets)", ""] + help_table([int(v) for v in args.sizes.split(",")]) + [""]
    if args.validation is not None:
        parts += ["### B. This CPU, measured subnets vs LUT-based predictors", ""] + cpu_table(
            args.validation, args.profile or DEFAULT_PROFILE) + [""]
    parts.append(f"total {time.time() - t0:.0f} s")
    print("\n".join(parts))
    if not args.no_append:
        cmd = f"bench/latency_regressors.py --sizes {args.sizes}" + (
            f" --validation {args.validation}" if args.validation else "")
        append_section("Latency regressors (predictors)", f"`{cmd}`; {machine()}.\n\n" + "\n".join(parts))


if __name__ == "__main__":
    main()
