"""P1 (and P2's quick-mode loss): how well profiles predict whole-network latency on this CPU.

Measures N held-out random subnets end to end (ofakit validate's code: same backend and method as the profiles)
and scores, on those same measurements, the full profile and the quick profile, raw LUT sum and calibrated:
share within ±5% / ±10%, RMSE %, mean error, Spearman; plus the raw error per resolution band, the correlation
of the raw residual with parameter count, and how the two op tables agree on the ops both measured.

    python bench/lut_fidelity.py [--full cpu-onnxruntime-1t] [--quick runs/bench/profile_cost/quick]
                                 [--n 100] [--seed 1] [--record] [--no-append]

Without --quick, a quick profile is measured first (about 2 minutes) into runs/bench/lut_fidelity/quick.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, append_section, machine  # noqa: E402


FEATURE_SETS = (("lut_ms",), ("lut_ms", "n_ops"), ("lut_ms", "params_m"), ("lut_ms", "params_m", "n_ops"),
                ("lut_ms", "params_m", "n_ops", "input_area"), ("lut_ms", "macs_g", "params_m", "n_ops"))


def feature_set_scores(profile, archs, measured) -> dict:
    """Fidelity of calibrations with other feature sets, refitted on the profile's stored calibration data."""
    from ofakit.validation import fidelity
    from ofakit.predictors.lut import CalibratedLUTPredictor, calibration_archs

    cal = profile.meta.calibration or {}
    fit_archs, fit_ms = calibration_archs(profile), cal.get("fit_measured_ms")
    if not fit_archs or not fit_ms:
        return {}
    out = {}
    for fs in FEATURE_SETS:
        if len(fit_archs) <= len(fs) + 1:
            continue
        pred = CalibratedLUTPredictor(profile, fs).fit(fit_archs, fit_ms)
        out[" + ".join(fs)] = fidelity(measured, pred.predict(archs))
    return out


def simulated_quick(full, k: int):
    """The full profile cut down to ``k`` measured resolutions, the rest interpolated (isolates the interpolation
    error of --quick from measurement noise), with its calibration refitted on the stored calibration data."""
    from ofakit.device_profiles import OpStats, Profile
    from ofakit.ofa_core.ops import enumerate_ops
    from ofakit.ofa_core.space import space_for_width
    from ofakit.predictors.lut import CalibratedLUTPredictor, calibration_archs
    from ofakit.profiler.interpolate import interpolate, pick_resolutions

    spec = space_for_width(full.meta.width)
    res = pick_resolutions(full.meta.resolutions, k)
    kept = {key: full.lookup(key).ms for key in enumerate_ops(spec, res)}
    guessed = interpolate(spec, kept, res, full.meta.resolutions)
    prof = Profile(replace(full.meta, name=f"{full.name}-sim-quick{k}", calibration={}),
                   [OpStats(key=key, ms=v) for key, v in {**kept, **guessed}.items()])
    cal = full.meta.calibration or {}
    if cal.get("fit_measured_ms"):
        fit = CalibratedLUTPredictor(prof, cal["features"]).fit(calibration_archs(full), cal["fit_measured_ms"])
        prof.meta.calibration = fit.to_calibration()
    return prof, res


def main() -> None:
    from ofakit.device_profiles import DEFAULT_PROFILE, load_profile, store
    from ofakit.ofa_core.ops import subnet_ops
    from ofakit.validation import fidelity, format_table, validate_profile, write_outputs
    from ofakit.workflows import fit_calibration
    from ofakit.workflows import log_to_stderr as log_line
    from ofakit.predictors.lut import CalibratedLUTPredictor, LUTPredictor
    from ofakit.profiler.pipeline import ProfileRequest, profile_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", default=DEFAULT_PROFILE, help="full profile (name or folder)")
    p.add_argument("--quick", default=None, help="quick profile folder (default: measure one now)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "lut_fidelity")
    p.add_argument("--record", action="store_true", help="store the full profile's figures in its profile.json")
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()

    full = load_profile(a.full)
    if a.quick:
        quick = load_profile(a.quick)
    else:
        req = ProfileRequest(quick=True, name="cpu-onnxruntime-1t-quick")
        run = profile_device(req, work_dir=a.out / "work-quick", log=log_line)
        fit_calibration(run)
        quick = load_profile(run.profile.save(a.out / "quick"))
    load_before = machine()
    rep = validate_profile(full, a.n, a.seed, work=a.out / "work", log=log_line)
    write_outputs(rep, a.out, f"{full.name}: {a.n} held-out subnets")
    archs, m = rep.archs, rep.measured
    preds = {f"full `{full.name}` raw": rep.raw}
    if rep.corrected is not None:
        preds[f"full `{full.name}` calibrated"] = rep.corrected
    if rep.adjusted is not None:
        preds[f"full `{full.name}` calibrated, state-adjusted"] = rep.adjusted
    preds[f"quick `{quick.name}` raw"] = LUTPredictor(quick).predict(archs)
    quick_factor = rep.factor_for(quick)
    if quick.meta.calibration:
        preds[f"quick `{quick.name}` calibrated"] = CalibratedLUTPredictor(quick).predict(archs)
        if quick_factor is not None:
            preds[f"quick `{quick.name}` calibrated, state-adjusted"] = preds[f"quick `{quick.name}` calibrated"] \
                * quick_factor
    scores = {k: fidelity(m, v) for k, v in preds.items()}
    print(format_table(scores))

    r = np.array([x.r for x in archs])
    params = np.array([sum(op.params for op in subnet_ops(x)) for x in archs])
    resid = rep.raw / m - 1
    ok = np.isfinite(resid)
    corr = float(np.corrcoef(resid[ok], params[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    bands = [(128, 156), (160, 188), (192, 224)]
    band_lines = []
    for lo, hi in bands:
        sel = ok & (r >= lo) & (r <= hi)
        if sel.any():
            band_lines.append(f"r {lo}-{hi}: {sel.sum()} subnets, raw error mean {resid[sel].mean() * 100:+.1f}% "
                              f"(range {resid[sel].min() * 100:+.1f}..{resid[sel].max() * 100:+.1f}%)")
    common = [s.key for s in quick if s.rounds and s.key in full and full.lookup(s.key).rounds]
    ratio = np.array([quick.lookup(k).ms / full.lookup(k).ms for k in common])

    lines = [f"{len(archs)} held-out subnets (seed {a.seed}, resolutions 128-224) measured end to end with "
             f"onnxruntime, 1 thread, {rep.rounds} interleaved rounds, min of round medians; "
             f"measured {np.nanmin(m):.2f}-{np.nanmax(m):.2f} ms. Full profile measured {full.meta.created}; "
             f"quick profile {quick.meta.created} (resolutions {quick.meta.method.get('measured_resolutions')}). "
             f"Machine: {load_before} (before) / {machine()} (after).", "",
             "| predictor | n | ±5% | ±10% | RMSE % | mean err % | Spearman |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, s in scores.items():
        lines.append(f"| {k} | {s['n']} | {s['within5']:.1f}% | {s['within10']:.1f}% | {s['rmse_pct']:.2f} | "
                     f"{s['mean_err_pct']:+.2f} | {s['spearman']:.4f} |")
    factors = ", ".join(f"{name} {f:.3f}" for name, f in (("full", rep.state_factor), ("quick", quick_factor))
                        if f is not None)
    lines += ["", f"State factor (whole-network speed now / at profiling time, from {rep.n_anchors} calibration "
              f"subnets re-measured in the validation job; the state-adjusted rows scale by it): {factors or 'none'}.",
              "Raw LUT sum by resolution band: " + "; ".join(band_lines) + ".",
              f"Correlation of the raw residual with parameter count: r = {corr:.2f}."]
    if ratio.size:
        lines.append(f"Op tables, {ratio.size} ops measured in both: quick/full ms ratio median "
                     f"{np.median(ratio):.3f}, {np.mean(np.abs(ratio - 1) > 0.10) * 100:.1f}% differ by >10%.")
    sim_lines = []
    for k in (2, 3, 4, 5):
        sim, res = simulated_quick(full, k)
        sr = fidelity(m, LUTPredictor(sim).predict(archs))
        sc = fidelity(m, CalibratedLUTPredictor(sim).predict(archs)) if sim.meta.calibration else None
        sim_lines.append(f"| {k}: {res} | {sr['within10']:.1f}% | {sr['rmse_pct']:.2f} | "
                         + (f"{sc['within5']:.1f}% | {sc['within10']:.1f}% | {sc['rmse_pct']:.2f} |" if sc else
                            "- | - | - |"))
    fs_scores = feature_set_scores(full, archs, m)
    if fs_scores:
        lines += ["", f"Calibration model choice: refitted on the full profile's {full.meta.calibration['n_fit']} "
                  "stored calibration subnets, scored on the same held-out subnets:", "",
                  "| features (+ intercept) | ±5% | ±10% | RMSE % | Spearman |", "|---|---:|---:|---:|---:|"]
        for fs, sc in fs_scores.items():
            lines.append(f"| {fs} | {sc['within5']:.1f}% | {sc['within10']:.1f}% | {sc['rmse_pct']:.2f} | "
                         f"{sc['spearman']:.4f} |")
    lines += ["", "Quick mode's interpolation alone: the full profile cut to k measured resolutions, the other ops "
              "interpolated, calibration refitted on the stored calibration data, scored on the same subnets:", "",
              "| k: resolutions measured | raw ±10% | raw RMSE % | calibrated ±5% | calibrated ±10% | "
              "calibrated RMSE % |", "|---|---:|---:|---:|---:|---:|"] + sim_lines
    keys = list(scores)
    q10 = [scores[k]["within10"] for k in keys if k.startswith("quick") and k.endswith("calibrated")]
    f10 = [scores[k]["within10"] for k in keys if k.startswith("full") and k.endswith("calibrated")]
    if q10 and f10:
        lines.append(f"Quick vs full (calibrated), ±10% share: {q10[0] - f10[0]:+.1f} points (goal: lose <= 1).")
    text = "\n".join(lines)
    print(text)
    if a.record:
        from datetime import datetime

        full.meta.validation = {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "n": a.n,
                                "seed": a.seed, "state_factor": rep.state_factor, **rep.metrics()}
        folder = full.path
        if store.is_shipped(folder):  # a maintainer's step on the checkout: ofakit itself never writes there
            staged = full.save(Path(tempfile.mkdtemp(prefix="ofakit-record-")) / full.name)
            shutil.copy2(staged / "profile.json", folder / "profile.json")
        else:
            full.save()
        print(f"recorded in {folder}")
    if not a.no_append:
        append_section("LUT fidelity on this CPU (bench/lut_fidelity.py, P1)", text)


if __name__ == "__main__":
    main()
