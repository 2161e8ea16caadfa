"""How well does a device profile rank the 5,000 HELP subnets, compared with their latency measured on 4 GPUs?

HELP (../shared/data/help_ofa_gpu_latency) measured 5,000 width-1.0 OFA-MobileNetV3 subnets end to end on 12
GPU/batch configs (2080 Ti, Titan RTX, Titan Xp, V100 at batch 1, 32, 64). For each config this prints Spearman's
rho and Kendall's tau between the measured latencies and the profile's predictions (raw LUT sum, and the
calibrated prediction when the profile has one), beside reference rankers on the same subnets: MACs, parameter
count, number of ops, and the best of the other 11 *measured* configs (what another real GPU's measurement gives).

    python bench/gpu_help_rank.py PROFILE [--json FILE] [--record]

PROFILE is a profile name or folder (e.g. an H100 profile from bench/gpu_profile.sh). Subnets at resolutions the
profile lacks are left out (their count is printed). A profile not measured on a GPU is labelled as such in the
output: its figures say how a CPU's ranking transfers to GPUs, not how a GPU profile does. ``--record`` appends
the table to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofakit.ofa_core.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELP_DATA = ROOT.parent / "shared" / "data" / "help_ofa_gpu_latency" / "ofa_subnets_gpu_latency.jsonl"
CONFIGS = tuple(f"{g}_{b}" for g in ("2080ti", "titan_rtx", "titan_xp", "v100") for b in (1, 32, 64))
RANKERS = ("profile raw", "profile calibrated", "MACs", "params", "n ops", "best other GPU")  # table columns


def load_help(path: Path = HELP_DATA) -> tuple[list[Any], dict[str, np.ndarray]]:
    """(archs, {config: measured ms}) of the HELP subnets."""
    from ofakit.ofa_core.space import ArchConfig

    archs, lat = [], {c: [] for c in CONFIGS}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the HELP data ({exc.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            archs.append(ArchConfig.from_ofa_dict({k: rec[k] for k in ("ks", "e", "d", "r")}, width=1.0))
            for c in CONFIGS:
                lat[c].append(float(rec["latency_ms"][c]))
        except (ValueError, KeyError, TypeError, UserError) as exc:
            raise UserError(f"{path}:{n}: unreadable HELP record ({exc})") from None
    return archs, {c: np.asarray(v) for c, v in lat.items()}


def rank_scores(measured: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(Spearman rho, Kendall tau-b)."""
    from scipy.stats import kendalltau, spearmanr

    return float(spearmanr(measured, predicted).statistic), float(kendalltau(measured, predicted).statistic)


def rankers(profile: Any, archs: list[Any]) -> dict[str, np.ndarray]:
    """Predictions of the profile (raw, calibrated) and of the reference rankers for ``archs``."""
    from ofakit.predictors.lut import CalibratedLUTPredictor, LUTPredictor

    out = {"profile raw": LUTPredictor(profile).predict(archs)}
    if profile.meta.calibration:
        out["profile calibrated"] = CalibratedLUTPredictor(profile).predict(archs)
    feats = CalibratedLUTPredictor(profile, ("macs_g", "params_m", "n_ops")).feature_matrix(archs)
    out.update({"MACs": feats[:, 0], "params": feats[:, 1], "n ops": feats[:, 2]})
    return out


def evaluate(profile: Any, archs: list[Any], lat: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per config: rho and tau of every ranker, and the best other measured config."""
    keep = np.array([a.r in set(profile.meta.resolutions) for a in archs])
    if not keep.any():
        raise UserError(f"profile {profile.name!r} covers none of the HELP resolutions (128..224 step 4)")
    sel = [a for a, k in zip(archs, keep) if k]
    preds = rankers(profile, sel)
    table: dict[str, dict[str, Any]] = {}
    for c in CONFIGS:
        m = lat[c][keep]
        row = {name: dict(zip(("rho", "tau"), rank_scores(m, p))) for name, p in preds.items()}
        others = {o: rank_scores(m, lat[o][keep]) for o in CONFIGS if o != c}
        best = max(others, key=lambda o: others[o][0])
        row["best other GPU"] = {"rho": others[best][0], "tau": others[best][1], "config": best}
        table[c] = row
    return {"profile": profile.name, "device": profile.meta.device, "backend": profile.meta.backend,
            "mode": profile.meta.mode, "batch": profile.meta.batch, "n": int(keep.sum()), "n_total": len(archs),
            "configs": table}


def is_gpu_profile(profile: Any) -> bool:
    return profile.meta.device == "gpu" and profile.meta.source == "measured"


def format_table(res: dict[str, Any]) -> str:
    first = next(iter(res["configs"].values()))
    names = [n for n in RANKERS if n in first]
    head = f"{'config':<12}" + "".join(f" {n[:18]:>18}" for n in names)
    lines = [f"rank agreement on {res['n']} of {res['n_total']} HELP subnets (rho / tau); profile {res['profile']} "
             f"({res['device']}, {res['backend']}, mode {res['mode']}, batch {res['batch']})", head, "-" * len(head)]
    for c, row in res["configs"].items():
        lines.append(f"{c:<12}" + "".join(f" {row[n]['rho']:>8.3f} /{row[n]['tau']:>7.3f}" for n in names))
    mean = {n: np.mean([row[n]["rho"] for row in res["configs"].values()]) for n in names}
    lines.append(f"{'mean rho':<12}" + "".join(f" {mean[n]:>18.3f}" for n in names))
    return "\n".join(lines)


def record(res: dict[str, Any], label: str) -> None:
    """Append the table to BENCHMARKS.md."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"\n## GPU profile vs HELP GPU latencies: rank agreement ({when})\n\n"
            f"`python bench/gpu_help_rank.py {res['profile']} --record` on {platform.node() or 'this machine'}. "
            f"{label}\n\n```\n{format_table(res)}\n```\n")
    with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("profile", help="profile name or folder")
    p.add_argument("--data", type=Path, default=HELP_DATA, help="HELP JSON lines")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--record", action="store_true", help="append the table to BENCHMARKS.md")
    args = p.parse_args(argv)
    try:
        from ofakit.device_profiles import load_profile

        prof = load_profile(args.profile)
        if prof.meta.width != 1.0:
            raise UserError(f"profile {prof.name!r} is for width {prof.meta.width}; HELP's subnets are width 1.0")
        archs, lat = load_help(args.data)
        res = evaluate(prof, archs, lat)
    except UserError as exc:
        print(f"gpu_help_rank: error: {exc}", file=sys.stderr)
        return 2
    label = ("" if is_gpu_profile(prof) else
             f"NOTE: {prof.name} is not a measured GPU profile (device {prof.meta.device!r}, source "
             f"{prof.meta.source!r}): these figures show how its ranking transfers to the HELP GPUs, not a GPU "
             f"profile's.")
    if label:
        print(label)
    print(format_table(res))
    if args.json:
        from ofakit.device_profiles import atomic_write_text

        atomic_write_text(args.json, json.dumps({**res, "note": label}, indent=1, sort_keys=True) + "\n")
    if args.record:
        record(res, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
