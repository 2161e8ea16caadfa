"""Validation of a profile (``ofakit validate PROFILE``): measure random whole subnets on the profile's device
with the profile's backend and method, and compare them with the profile's raw LUT sum and its calibrated
prediction.

Prints the share within ±5% / ±10%, RMSE % and Spearman for both; writes ``validation.csv`` (one row per subnet:
arch JSON, resolution, measured, raw and corrected predictions, op count, params, MACs, noise figures) and a
predicted-vs-measured ``validation.png``. The test subnets come from their own random stream and never include the
profile's calibration subnets.

Whole-network latency on a shared CPU moves with what other tenants do to the shared caches and memory (on this
machine, by up to ~7% between two runs minutes apart while single operators stayed within ~1%). So validation
also re-measures a few of the profile's calibration subnets (*anchors*, never test subnets) interleaved with the
test subnets: the median ratio now / at profiling time is the device's *state factor*, printed, and a third row
("state-adjusted") scales the calibration (without any stored factor) by it. The first two rows are the profile as
stored: "corrected" includes the state factor `ofakit profile recalibrate` stored, if any (named in the output).
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from ofakit.ofa_core.errors import ParameterError, UserError

if TYPE_CHECKING:
    import pandas as pd

    from ofakit.device_profiles import Profile
    from ofakit.profiler.agent.ofakit_agent import JobSettings
    from ofakit.profiler.devices import Runner

ANCHORS = 10  # calibration subnets re-measured beside the test subnets
# Rounds per validated subnet unless ``rounds`` is given: with the profile's 8, the same subnet re-measured minutes
# later moved by > 5% often enough to cap the ±5% share near 85%; 16 rounds gave 95% (BENCHMARKS.md, P1)
VALIDATION_ROUNDS = 16


def fidelity(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Shares within ±5/±10% (percent), RMSE of the relative error (%), mean signed error (%), Spearman, n."""
    from ofakit.predictors.metrics import latency_metrics

    return latency_metrics(measured, predicted).percent()


@dataclass
class ValidationReport:
    profile: str
    archs: list
    measured: np.ndarray
    raw: np.ndarray
    corrected: Optional[np.ndarray]
    summaries: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    state_factor: Optional[float] = None  # device now / at profiling time, from the anchors (None: not measured)
    anchors: list = field(default_factory=list)  # calibration subnets re-measured in the same job
    anchor_ms: Optional[np.ndarray] = None
    rounds: int = 0  # measurement rounds per subnet
    stored_state: dict = field(default_factory=dict)  # the factor stored in the profile, included in `corrected`

    @property
    def n_anchors(self) -> int:
        return len(self.anchors)

    def factor_for(self, profile: Any) -> Optional[float]:
        """The state factor relative to ``profile``'s calibration measurements, over the anchors it shares (so a
        quick and a full profile calibrated on the same subnets can both be scored on one validation run)."""
        from ofakit.predictors.lut import anchor_factor

        return anchor_factor(profile, self.anchors, self.anchor_ms if self.anchor_ms is not None else [])

    @property
    def stored_factor(self) -> float:
        """The state factor stored in the profile and applied to ``corrected`` (1.0: none)."""
        return float(self.stored_state.get("factor", 1.0))

    @property
    def adjusted(self) -> Optional[np.ndarray]:
        """The calibration without the stored factor, scaled by the state factor measured now (None without
        either)."""
        if self.corrected is None or self.state_factor is None:
            return None
        return self.corrected * (self.state_factor / self.stored_factor)

    def metrics(self) -> dict[str, dict[str, float]]:
        """:func:`fidelity` of each prediction row ("raw", "corrected", "state-adjusted")."""
        out = {"raw": fidelity(self.measured, self.raw)}
        if self.corrected is not None:
            out["corrected"] = fidelity(self.measured, self.corrected)
        if self.adjusted is not None:
            out["state-adjusted"] = fidelity(self.measured, self.adjusted)
        return out

    def to_frame(self) -> "pd.DataFrame":
        """One row per test subnet (the columns of ``validation.csv``); ``.attrs`` holds the profile, the state
        factors and :meth:`metrics`. :meth:`metrics_frame` is the summary as a table."""
        import pandas as pd

        df = pd.read_csv(io.StringIO(csv_text(self)))
        df.attrs.update(profile=self.profile, state_factor=self.state_factor, stored_factor=self.stored_factor,
                        rounds=self.rounds, metrics=self.metrics())
        return df

    def metrics_frame(self) -> "pd.DataFrame":
        """:meth:`metrics` as a table, one row per prediction."""
        import pandas as pd

        return pd.DataFrame.from_dict(self.metrics(), orient="index").rename_axis("prediction")


def job_of(profile: "Profile", rounds: Optional[int] = None) -> "JobSettings":
    """The measurement settings the profile was made with (so validation uses the same method); ``rounds``: that
    many rounds per whole subnet instead of the profile's."""
    from ofakit.profiler.agent.ofakit_agent import JobSettings, TimingSettings
    from ofakit.profiler.pipeline import default_job

    raw = profile.meta.method.get("job") if isinstance(profile.meta.method, dict) else None
    if raw:
        names = {f.name for f in fields(JobSettings)} - {"timing"}
        job = JobSettings(TimingSettings(**raw.get("timing", {})), **{k: v for k, v in raw.items() if k in names})
    else:
        job = default_job()
    if rounds is not None:
        job.rounds, job.subnet_rounds = rounds, 0
    return job


def sample_test_archs(profile: Any, n: int, seed: int) -> list:
    """``n`` random subnets over the profile's resolutions, excluding its calibration subnets."""
    from ofakit.ofa_core.space import sample_batch, space_for_width
    from ofakit.predictors.lut import calibration_archs

    cal = set(calibration_archs(profile))
    rng = np.random.default_rng([seed, 2])
    spec = space_for_width(profile.meta.width)
    out: list = []
    seen: set = set()
    while len(out) < n:
        for a in sample_batch(rng, n, spec, profile.meta.resolutions).to_configs():
            if a not in cal and a not in seen and len(out) < n:
                seen.add(a)
                out.append(a)
    return out


def validate_profile(profile: "Profile", n: int = 100, seed: int = 0, rounds: Optional[int] = None,
                     work: Optional[Path] = None, jobs: int = 2, log: Optional[Callable[[str], None]] = None,
                     runner: "Runner | None" = None, anchors: int = ANCHORS) -> ValidationReport:
    """Measure ``n`` held-out subnets on the profile's device and predict them with the profile; with
    ``anchors``, also re-measure that many of its calibration subnets in the same job for the state factor.
    ``rounds``: per subnet (default :data:`VALIDATION_ROUNDS`, or the profile's if more). ``runner``: default
    :func:`ofakit.profiler.devices.resolve`'s for the profile's device (a board's over SSH)."""
    from ofakit.predictors.lut import anchor_archs, stored_state
    from ofakit.predictors.registry import create_predictor
    from ofakit.profiler.builder import cache_root
    from ofakit.profiler.pipeline import measure_subnets

    meta = profile.meta
    if meta.source != "measured" or not meta.backend or meta.threads is None:
        raise UserError(f"profile {profile.name!r} was not measured by ofakit ({meta.source}); validation "
                        f"re-measures subnets on its device with its backend")
    if n < 1:
        raise ParameterError("n", f"must be >= 1, got {n}")
    if anchors < 0:
        raise ParameterError("anchors", f"must be >= 0, got {anchors}")
    archs = sample_test_archs(profile, n, seed)
    refs = anchor_archs(profile, anchors)
    # one journal per (profile version, seed): a re-measured profile of the same name never resumes old results
    stamp = "".join(c for c in str(meta.created or "") if c.isalnum())[:15]
    name = f"validate-seed{seed}-{stamp}.jsonl" if stamp else f"validate-seed{seed}.jsonl"
    journal = (work or cache_root() / "work" / profile.name) / name
    if log:
        log(f"validating {profile.name}: {n} subnets (seed {seed}) on {meta.device} with {meta.backend}, "
            f"{meta.threads} thread(s); journal {journal}")
    t0 = time.perf_counter()
    job = job_of(profile, rounds)
    if rounds is None:  # the truth side: a test subnet's min of round medians settles with more rounds
        job.subnet_rounds = max(job.rounds, job.subnet_rounds, VALIDATION_ROUNDS)
    every, summaries, secs = measure_subnets(archs + refs, meta.device, meta.backend, meta.threads, job, journal,
                                             build_jobs=jobs, log=log, runner=runner)
    secs["total_s"] = time.perf_counter() - t0
    raw = create_predictor("lut", profile).predict(archs)
    corrected = create_predictor("calibrated", profile).predict(archs) if meta.calibration else None
    rep = ValidationReport(profile.name, archs, every[:len(archs)], raw, corrected, summaries, secs,
                           anchors=refs, anchor_ms=every[len(archs):], rounds=max(job.rounds, job.subnet_rounds),
                           stored_state=stored_state(profile) if meta.calibration else {})
    rep.state_factor = rep.factor_for(profile)
    return rep


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Plain-text table: one row per predictor."""
    w = max([28] + [len(k) for k in rows])
    head = f"{'predictor':<{w}} {'n':>4} {'±5%':>7} {'±10%':>7} {'RMSE%':>7} {'bias%':>7} {'Spearman':>9}"
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        lines.append(f"{name:<{w}} {m['n']:>4} {m['within5']:>6.1f}% {m['within10']:>6.1f}% {m['rmse_pct']:>7.2f} "
                     f"{m['mean_err_pct']:>+7.2f} {m['spearman']:>9.4f}")
    return "\n".join(lines)


def state_line(rep: ValidationReport) -> str:
    """Lines on the device-state factors: the one stored in the profile and the one measured now."""
    st = rep.stored_state
    stored = (f"stored state factor {rep.stored_factor:.3f} ({st.get('n', '?')} anchors, {st.get('date', '?')}) "
              f"applied to the corrected row" if st
              else "no stored state factor (corrected row: calibration as fitted)")
    if rep.state_factor is None:
        return (f"{stored}\nstate factor: not measured ({rep.n_anchors} anchor subnet(s); the profile needs a "
                f"stored calibration with its subnets)")
    return (f"{stored}\nstate factor {rep.state_factor:.3f}: {rep.n_anchors} calibration subnets re-measured now vs "
            f"at profiling time (whole-network speed of the device now relative to then; state-adjusted row)")


def csv_text(rep: ValidationReport) -> str:
    from ofakit.ofa_core.ops import subnet_ops
    from ofakit.profiler.items import Item

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", "resolution", "measured_ms", "raw_ms", "corrected_ms", "adjusted_ms", "n_ops", "params_m",
                "macs_m", "rounds", "cv", "spread"])
    for i, a in enumerate(rep.archs):
        ops = subnet_ops(a)
        s = rep.summaries.get(Item.subnet(a).id)
        w.writerow([json.dumps(a.to_ofa_dict(), separators=(",", ":")), a.r, _f(rep.measured[i]), _f(rep.raw[i]),
                    _f(rep.corrected[i]) if rep.corrected is not None else "",
                    _f(rep.adjusted[i]) if rep.adjusted is not None else "", len(ops),
                    f"{sum(o.params for o in ops) / 1e6:.6f}", f"{sum(o.macs for o in ops) / 1e6:.3f}",
                    s.rounds if s else "", _f(s.cv) if s and s.cv is not None else "",
                    _f(s.spread) if s and s.spread is not None else ""])
    return buf.getvalue()


def _f(v: float) -> str:
    return "" if v is None or not np.isfinite(v) else f"{float(v):.6g}"


def plot(rep: ValidationReport, path: Path, title: str = "") -> None:
    """Predicted vs measured scatter, raw and corrected, with the ±10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    m = rep.measured
    series = [("raw LUT sum", rep.raw, "#999999")]
    if rep.corrected is not None:
        series.append(("calibrated", rep.corrected, "#1f5fbf"))
    if rep.adjusted is not None:
        series.append((f"state-adjusted (x{rep.state_factor:.3f})", rep.adjusted, "#d9731a"))
    metrics = rep.metrics()
    for (label, p, color), key in zip(series, ("raw", "corrected", "state-adjusted")):
        mt = metrics[key]
        ax.scatter(m, p, s=14, color=color, alpha=0.8,
                   label=f"{label}: {mt['within10']:.0f}% in ±10%, {mt['within5']:.0f}% in ±5%")
    finite = np.concatenate([v[np.isfinite(v)] for v in [m] + [s[1] for s in series]])
    lo, hi = (float(finite.min()) * 0.9, float(finite.max()) * 1.1) if finite.size else (0.0, 1.0)
    xs = np.linspace(lo, hi, 2)
    ax.plot(xs, xs, "k-", lw=0.8)
    for f in (0.9, 1.1):
        ax.plot(xs, xs * f, "k:", lw=0.7)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)", ylabel="predicted latency (ms)",
           title=title or f"{rep.profile}: {len(m)} held-out subnets")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def record_validation(profile: "Profile", rep: ValidationReport, n: int, seed: int) -> Path:
    """Store ``rep``'s figures in the profile's ``validation`` record and save it; returns the profile's folder."""
    from datetime import datetime

    profile.meta.validation = {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "n": n,
                               "seed": seed, "state_factor": rep.state_factor,
                               "stored_state_factor": rep.stored_factor, **rep.metrics()}
    return profile.save()


def write_outputs(rep: ValidationReport, out: Path, title: str = "") -> tuple[Path, Path]:
    from ofakit.device_profiles import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "validation.csv", out / "validation.png"
    atomic_write_text(csv_path, csv_text(rep))
    plot(rep, png_path, title)
    return csv_path, png_path


