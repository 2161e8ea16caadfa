"""Profiling jobs: ops (and calibration subnets) -> Builder -> Runner -> journal -> device profile.

:func:`profile_device` measures every distinct operator of the space at the requested resolutions (with
``quick``, a few resolutions, the rest interpolated) together with a few whole *calibration subnets*, all in one
interleaved job, and turns the journal into a :class:`~ofakit.device_profiles.Profile`. :func:`measure_subnets` measures
whole subnets with the same method (validation). Both resume from their journal: re-running the same request
skips what is already recorded, and the profile is always rebuilt from the journal.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ofakit.device_profiles import OpStats, Profile, ProfileMeta
from ofakit.ofa_core import __version__
from ofakit.ofa_core.errors import ParameterError
from ofakit.ofa_core.ops import enumerate_ops, subnet_macs
from ofakit.ofa_core.space import DEFAULT_RESOLUTIONS, ArchConfig, sample_batch, space_for_width

from .agent import ofakit_agent as agent
from .backends import get_backend
from .builder import Builder, cache_root
from .interpolate import interpolate, pick_resolutions
from .devices import Runner, Target, resolve
from .items import Item

QUICK_RESOLUTIONS = 3  # 128, 176, 224 by default
SUBNET_ROUNDS = 8  # rounds for whole subnets (calibration, validation)
CALIBRATION_SUBNETS = 30
CALIBRATION_POOL_PER_SUBNET = 50  # random candidates per calibration subnet (their MAC quantiles are picked)
JOURNAL = "journal.jsonl"

Log = Callable[[str], None]


def default_job() -> agent.JobSettings:
    """The method this machine needs (see docs): short windows, several interleaved rounds, min of medians; whole
    networks get 8 rounds (with 4, the same subnet measured twice disagreed by > 5% in 13-40% of cases)."""
    return agent.JobSettings(agent.TimingSettings(warmup_runs=2, warmup_s=0.002, min_runs=5, min_s=0.03),
                             rounds=4, extra_rounds=4, cv_threshold=0.10, spread_threshold=0.10, timeout_s=60.0,
                             subnet_rounds=SUBNET_ROUNDS)


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile and how; built once (e.g. from the command line) and passed through unchanged.
    ``backend``/``threads`` None: the device's defaults (:meth:`for_target` fills them in). ``job.timeout_s`` is
    the per-op timeout, on this machine and on boards alike. ``name`` defaults to ``DEVICE-BACKEND-<threads>t``."""

    device: str = "cpu"
    backend: str | None = None
    threads: int | None = None
    width: float = 1.0
    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    quick: bool = False
    quick_resolutions: int = QUICK_RESOLUTIONS
    calibration_subnets: int = CALIBRATION_SUBNETS
    seed: int = 0
    job: agent.JobSettings = field(default_factory=default_job)
    build_jobs: int = 2
    name: str = ""

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ParameterError("threads", f"must be >= 1, got {self.threads}")
        if self.job.rounds < 1:
            raise ParameterError("rounds", f"must be >= 1, got {self.job.rounds}")
        if self.job.timeout_s <= 0:
            raise ParameterError("op_timeout", f"must be > 0 seconds, got {self.job.timeout_s}")
        if not self.resolutions:
            raise ParameterError("resolutions", "empty")
        object.__setattr__(self, "resolutions", tuple(sorted(set(int(r) for r in self.resolutions))))

    @property
    def profile_name(self) -> str:
        """The profile's name: ``name``, else ``DEVICE-BACKEND-<threads>t``."""
        return self.name or f"{self.device}-{self.backend}-{self.threads}t"

    def for_target(self, target: Target) -> "ProfileRequest":
        """This request on ``target``'s device, backend and threads."""
        return replace(self, device=target.device, backend=target.backend, threads=target.threads)

    def measured_resolutions(self) -> list[int]:
        if self.quick:
            return pick_resolutions(self.resolutions, self.quick_resolutions)
        return list(self.resolutions)

    def calibration_archs(self) -> list[ArchConfig]:
        """Calibration subnets: spread evenly over the MAC-count quantiles of a large random pool (its smallest and
        largest subnet included), so the calibration interpolates over the sizes random subnets take instead of
        extrapolating to the small and large ones; their own random stream, apart from validation samples."""
        n = self.calibration_subnets
        if n <= 0:
            return []
        rng = np.random.default_rng([self.seed, 1])
        pool = sample_batch(rng, CALIBRATION_POOL_PER_SUBNET * n, space_for_width(self.width),
                            self.resolutions).to_configs()
        order = np.argsort([subnet_macs(a) for a in pool], kind="stable")
        picks = np.unique(np.round(np.linspace(0, len(pool) - 1, n)).astype(int))
        return [pool[order[i]] for i in picks]


@dataclass
class ProfileRun:
    """A profiling job's outcome: the profile (calibration not yet fitted) and the calibration measurements."""

    profile: Profile
    calibration_archs: list[ArchConfig]
    calibration_ms: np.ndarray
    seconds: dict[str, float]
    n_measured: int
    n_interpolated: int


def measure_items(items: Sequence[Item], backend: str, runner: Runner, journal: Path,
                  job: agent.JobSettings, cache_dir: Path | None = None, build_jobs: int = 2,
                  log: Log | None = None) -> tuple[dict[str, agent.Summary], dict[str, float]]:
    """Build (cached) and measure ``items``; build failures are journaled as BUILD_ERROR. Returns the summaries
    by item id and the seconds spent building and measuring."""
    say = log or (lambda s: None)
    journal.parent.mkdir(parents=True, exist_ok=True)
    builder = Builder(get_backend(backend), cache_dir, build_jobs)
    t0 = time.perf_counter()
    built = builder.build(items, _every(log, "building models"))
    t_build = time.perf_counter() - t0
    failed = [b for b in built.values() if not b.ok]
    if failed:
        header = agent.make_header(backend, runner.threads, job)
        j = agent.Journal(str(journal), header)
        have = agent.latest(j.results)
        for b in failed:
            if (b.item.id, 0) not in have:
                j.append(agent.MeasureResult(b.item.id, 0, agent.ErrorCode.BUILD_ERROR.value, b.error,
                                             time=time.time()))
        j.close()
        say(f"{len(failed)} item(s) failed to build, e.g. {failed[0].item.id}: {failed[0].error}")
    models = {i: b.path for i, b in built.items() if b.ok}
    t0 = time.perf_counter()
    summaries = runner.measure(models, journal, job, _every(log, "measuring", result=True))
    t_measure = time.perf_counter() - t0
    for b in failed:
        summaries[b.item.id] = agent.Summary(b.item.id, agent.ErrorCode.BUILD_ERROR.value, b.error)
    return summaries, {"build_s": t_build, "measure_s": t_measure}


def _every(log: Log | None, what: str, result: bool = False, period: float = 5.0) -> Callable | None:
    """A progress callback that logs at most every ``period`` seconds (and at the end)."""
    if log is None:
        return None
    last = [0.0]

    def cb(k: int, n: int, *rest: Any) -> None:
        now = time.monotonic()
        if k == n or now - last[0] >= period:
            last[0] = now
            extra = f" (round {rest[0].round})" if result and rest else ""
            log(f"{what}: {k}/{n}{extra}")
    return cb


def profile_device(req: ProfileRequest, work_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                   log: Log | None = None, fresh: bool = False, runner: Runner | None = None) -> ProfileRun:
    """Measure the ops (and calibration subnets) of ``req`` and build its profile from the journal. ``runner``:
    any :class:`~ofakit.profiler.devices.Runner` (e.g. a board's); default: :func:`ofakit.profiler.devices.resolve`'s for
    ``req.device``."""
    t_start = time.perf_counter()
    if runner is None:
        target = resolve(req.device, req.backend, req.threads)
        req, runner = req.for_target(target), target.runner
    elif req.backend is None or req.threads is None:
        raise ValueError("profile_device: a request measured by a given runner needs its backend and threads")
    spec = space_for_width(req.width)
    cache = Path(cache_dir) if cache_dir else cache_root()
    work = Path(work_dir) if work_dir else cache / "work" / req.profile_name
    journal = work / JOURNAL
    if fresh:  # the journal and what is paired with it (a board's run folder id, device states)
        for p in (journal, *work.glob(JOURNAL + ".*")):
            p.unlink(missing_ok=True)
    env = runner.environment()
    measured_res = req.measured_resolutions()
    ops = enumerate_ops(spec, measured_res)
    cal = req.calibration_archs()
    items = [Item.op(op) for op in ops.values()] + [Item.subnet(a) for a in cal]
    if log:
        log(f"{req.profile_name}: {len(ops)} distinct ops at {len(measured_res)} resolution(s) + {len(cal)} "
            f"calibration subnets, {req.job.rounds} rounds; journal {journal}")
    summaries, secs = measure_items(items, req.backend, runner, journal, req.job, cache, req.build_jobs, log)

    rows, errors = [], []
    for key in ops:
        s = summaries.get(key)
        if s is not None and s.ok:
            rows.append(OpStats(key=key, ms=s.ms, median_ms=s.median_ms, mean_ms=s.mean_ms, std_ms=s.std_ms,
                                iqr_ms=s.iqr_ms, min_ms=s.min_ms, cv=s.cv, n=s.n, rounds=s.rounds))
        else:
            errors.append({"key": key, "error": s.error if s else "MISSING", "msg": s.msg if s else ""})
    n_measured = len(rows)
    extra = [r for r in req.resolutions if r not in measured_res]
    guessed = interpolate(spec, {r.key: r.ms for r in rows}, measured_res, extra) if extra else {}
    rows += [OpStats(key=k, ms=v, rounds=0) for k, v in guessed.items()]

    cal_ms = np.array([_ms(summaries.get(Item.subnet(a).id)) for a in cal], dtype=float)
    env["loadavg_end"] = list(_loadavg())
    desc = {"mode": "cpu" if req.backend != "torch" else "eager", "batch": 1, "input": "random float32, NCHW",
            "exporter": "ofakit.ofa_core.export (BN folded)" if req.backend != "torch" else "torch eager modules",
            **get_backend(req.backend).describe()}
    method = {
        "statistic": "ms = minimum over rounds of the per-round median (rounds interleaved in shuffled order)",
        "columns": "median_ms = median of the round medians; mean/std/iqr/cv/n from the best round; "
                   "min_ms = fastest run; rounds = rounds measured (0 = interpolated, quick mode)",
        "job": asdict(req.job), "seed": req.seed, "quick": req.quick, "measured_resolutions": measured_res,
        "interpolation": "piecewise linear in input feature-map area per op slot" if guessed else None,
        "calibration_subnets": len(cal), **{k: v for k, v in desc.items() if k != "mode"},
    }
    meta = ProfileMeta(name=req.profile_name, device=req.device, backend=req.backend, width=spec.width_mult,
                       resolutions=list(req.resolutions), batch=desc["batch"], threads=req.threads,
                       mode=desc["mode"], source="measured",
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"), ofakit_version=__version__,
                       environment=env, method=method, errors=errors)
    secs["total_s"] = time.perf_counter() - t_start
    return ProfileRun(Profile(meta, rows), cal, cal_ms, secs, n_measured, len(guessed))


def measure_subnets(archs: Sequence[ArchConfig], device: str, backend: str, threads: int, job: agent.JobSettings,
                    journal: str | Path, cache_dir: str | Path | None = None, build_jobs: int = 2,
                    log: Log | None = None, runner: Runner | None = None
                    ) -> tuple[np.ndarray, dict[str, agent.Summary], dict[str, float]]:
    """Measure whole subnets end to end (same builder, runner and method as ops). NaN where one failed.
    ``runner``: any :class:`~ofakit.profiler.devices.Runner`; default: :func:`ofakit.profiler.devices.resolve`'s for
    ``device``."""
    runner = runner or resolve(device, backend, threads).runner
    items = [Item.subnet(a) for a in archs]
    summaries, secs = measure_items(items, backend, runner, Path(journal), job,
                                    Path(cache_dir) if cache_dir else None, build_jobs, log)
    return np.array([_ms(summaries.get(it.id)) for it in items], dtype=float), summaries, secs


def _ms(s: agent.Summary | None) -> float:
    return float(s.ms) if s is not None and s.ok and s.ms is not None else float("nan")


def _loadavg() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return ()
