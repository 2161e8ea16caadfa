"""The workflows that chain the parts: profile a device (this CPU or GPU, a board, a fleet of boards), fit its
calibration, recalibrate its device state, fit a few-shot predictor from measured subnets. Validation is
:mod:`ofakit.validation`; search constraints are :mod:`ofakit.predictors.constraints`.

Each workflow takes one :class:`~ofakit.profiler.pipeline.ProfileRequest` (or a profile) built once by the caller and
the :class:`~ofakit.profiler.devices.RemoteSettings` for boards; devices are resolved to runners by
:func:`ofakit.profiler.devices.resolve`. Nothing here prints: progress goes to the ``log`` callback given.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from ofakit.ofa_core.errors import ParameterError, UserError
from ofakit.profiler.devices import RemoteSettings, Runner, is_local, resolve, select_boards

if TYPE_CHECKING:
    from ofakit.device_profiles import Profile
    from ofakit.predictors.fewshot import FewShotPredictor
    from ofakit.profiler.agent.ofakit_agent import JobSettings
    from ofakit.profiler.pipeline import ProfileRequest, ProfileRun
    from ofakit.profiler.remote.fleet import BoardOutcome

Log = Callable[[str], None]
RESUME_S = 600.0  # an unfinished recalibration journal older than this is discarded: the device has moved since


def _quiet(msg: str) -> None:
    """The default ``log``: says nothing."""


def log_to_stderr(msg: str) -> None:
    """A ``log`` that prints each line indented on stderr (the CLI's)."""
    import sys

    print(f"  {msg}", file=sys.stderr, flush=True)


def parse_resolutions(text: str) -> tuple[int, ...]:
    """``128:224:4`` (start:stop:step, inclusive), ``160,176,224`` or ``224``."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 4
            if step <= 0 or stop < start:
                raise ValueError
            out = tuple(range(start, stop + 1, step))
        else:
            out = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ParameterError("resolutions", f"expected START:STOP:STEP or a comma list, got {text!r}") from None
    if not out or any(not 32 <= r <= 1024 for r in out):
        raise ParameterError("resolutions", f"resolutions must lie in 32..1024, got {text!r}")
    return out


def make_job(rounds: Optional[int] = None, min_time: Optional[float] = None, extra_rounds: Optional[int] = None,
             op_timeout: Optional[float] = None) -> "JobSettings":
    """The default measurement method with these settings changed (None: the default)."""
    from ofakit.profiler.pipeline import default_job

    job = default_job()
    if min_time is not None:
        if min_time <= 0:
            raise ParameterError("min_time", f"must be > 0, got {min_time}")
        job.timing.min_s = min_time
    if extra_rounds is not None:
        if extra_rounds < 0:
            raise ParameterError("extra_rounds", f"must be >= 0, got {extra_rounds}")
        job.extra_rounds = extra_rounds
    if op_timeout is not None:
        if op_timeout <= 0:
            raise ParameterError("op_timeout", f"must be > 0 seconds, got {op_timeout}")
        job.timeout_s = float(op_timeout)
    if rounds is not None:
        job.rounds = rounds
    return job


def fit_calibration(run: "ProfileRun", log: Log = _quiet) -> None:
    """Fit the profile's calibration on the job's calibration subnets (kept apart from any validation set)."""
    from ofakit.predictors.lut import CalibratedLUTPredictor

    prof, archs, ms = run.profile, run.calibration_archs, run.calibration_ms
    ok = np.isfinite(ms)
    if not archs:
        return
    try:
        pred = CalibratedLUTPredictor(prof).fit([a for a, g in zip(archs, ok) if g], ms[ok])
    except (ValueError, UserError) as exc:
        log(f"no calibration fitted: {exc}")
        return
    prof.meta.calibration = pred.to_calibration([a for a, g in zip(archs, ok) if g], ms[ok])
    c = prof.meta.calibration
    terms = " + ".join(f"{v:.4g}*{f}" for f, v in zip(c["features"], c["coef"]))
    log(f"calibration on {c['n_fit']} subnets: ms = {terms} + {c['intercept']:.4g} "
        f"(fit RMSE {c['fit_rmse_pct']:.2f}%)")


@dataclass(frozen=True)
class Profiled:
    """A saved profile: where it went and the job that made it."""

    folder: Path
    run: "ProfileRun"

    @property
    def name(self) -> str:
        return self.run.profile.name

    def summary(self) -> str:
        s, run = self.run.seconds, self.run
        return (f"{self.name}: {run.n_measured} ops measured, {run.n_interpolated} interpolated, "
                f"{len(run.profile.meta.errors)} failed; build {s['build_s']:.0f} s, measure {s['measure_s']:.0f} s, "
                f"total {s['total_s']:.0f} s -> {self.folder}")


def profile(req: "ProfileRequest", *, runner: Optional[Runner] = None, remote: RemoteSettings = RemoteSettings(),
            out: Optional[Path] = None, work: Optional[Path] = None, fresh: bool = False,
            log: Log = _quiet) -> Profiled:
    """Profile ``req.device`` (resolved to its runner unless ``runner`` is given, then ``req`` names its backend
    and threads), fit the calibration and save the profile (``out``, default: the profile root)."""
    from ofakit.device_profiles.store import write_folder
    from ofakit.profiler.pipeline import profile_device

    if runner is None:
        target = resolve(req.device, req.backend, req.threads, remote)
        req, runner = req.for_target(target), target.runner
    dest = out or write_folder(req.profile_name)
    run = profile_device(req, work, log=log, fresh=fresh, runner=runner)
    fit_calibration(run, log)
    return Profiled(run.profile.save(dest), run)


def profile_boards(req: "ProfileRequest", devices: Sequence[str] = (), tag: Optional[str] = None,
                   remote: RemoteSettings = RemoteSettings(), *, out: Optional[Path] = None,
                   work: Optional[Path] = None, fresh: bool = False, console: Any = None,
                   log: Log = _quiet) -> list[tuple["BoardOutcome", Optional[Profiled]]]:
    """Profile the boards ``devices`` and those tagged ``tag`` in parallel, each like this CPU into its own
    profile, with ``req``'s method (its backend and threads, else each board's from the inventory). Returns each
    board's outcome and, where it succeeded, its saved profile."""
    from ofakit.profiler.remote.fleet import profile_boards as run_fleet

    if not devices and tag is None:
        raise UserError("no device to profile: name a device ('cpu' or a board of the inventory) or a tag")
    boards = select_boards(list(devices), tag, remote)
    if len(boards) > 1 and (out or req.name or work):
        raise UserError("an output folder, profile name or journal folder names one profile; profile boards one "
                        "at a time to use them")
    done: dict[str, Profiled] = {}

    def run_one(board_req: "ProfileRequest", runner: Runner, say: Log) -> Path:
        done[board_req.device] = profile(board_req, runner=runner, out=out, work=work, fresh=fresh, log=say)
        return done[board_req.device].folder

    pairs = [(d, replace(req, device=d.name, backend=req.backend or d.backend, threads=req.threads or d.threads))
             for d in boards]
    return [(o, done.get(o.device) if o.ok else None) for o in run_fleet(pairs, remote, run_one, console=console)]


def profile_devices(req: "ProfileRequest", devices: Sequence[str] = (), tag: Optional[str] = None,
                    remote: RemoteSettings = RemoteSettings(), *, out: Optional[Path] = None,
                    work: Optional[Path] = None, fresh: bool = False, log: Log = _quiet
                    ) -> list[Optional[Profiled]]:
    """Profile ``req.device`` (if any) and the boards ``devices`` and ``tag`` select: this machine directly,
    boards in parallel over SSH. Returns one saved profile per device, None where a board failed."""
    if is_local(req.device) and not devices and tag is None:
        return [profile(req, remote=remote, out=out, work=work, fresh=fresh, log=log)]
    names = ([req.device] if req.device else []) + list(devices)
    return [p for _, p in profile_boards(req, names, tag, remote, out=out, work=work, fresh=fresh, log=log)]


def few_shot(device: str, n: int, *, seed: int = 0, backend: Optional[str] = None, threads: Optional[int] = None,
             width: float = 1.0, out: Optional[Path] = None, name: str = "", work: Optional[Path] = None,
             jobs: int = 2, remote: RemoteSettings = RemoteSettings(),
             log: Log = _quiet) -> tuple["FewShotPredictor", Path, np.ndarray]:
    """Measure ``n`` random subnets on ``device`` (same method as profiles) and save a few-shot latency
    predictor fitted on them and on every known profile's LUT. Returns it, its folder and the measured ms."""
    from ofakit.device_profiles.store import write_folder
    from ofakit.ofa_core.space import sample_batch, space_for_width
    from ofakit.predictors.fewshot import fit_few_shot
    from ofakit.profiler.builder import cache_root
    from ofakit.profiler.pipeline import default_job, measure_subnets

    if n < 4:
        raise ParameterError("few_shot", f"needs at least 4 subnets, got {n}")
    target = resolve(device, backend, threads, remote)
    name = name or f"{device}-{target.backend}-{target.threads}t-fewshot{n}"
    dest = out or write_folder(name)
    archs = sample_batch(np.random.default_rng([seed, 3]), n, space_for_width(width)).to_configs()
    journal = (work or cache_root() / "work" / name) / f"fewshot-seed{seed}.jsonl"
    log(f"{name}: measuring {n} subnets end to end on {device} ({target.backend}, {target.threads} thread(s))")
    ms, _, _ = measure_subnets(archs, device, target.backend, target.threads, default_job(), journal,
                               build_jobs=jobs, log=log, runner=target.runner)
    ok = np.isfinite(ms)
    if ok.sum() < 4:
        raise UserError(f"{device}: only {int(ok.sum())} of {n} subnets could be measured; see {journal}")
    pred = fit_few_shot([a for a, g in zip(archs, ok) if g], ms[ok])
    return pred, pred.save(dest), ms[ok]


def find_profile(name: str, remote: RemoteSettings = RemoteSettings()) -> "Profile":
    """The profile ``name`` (name or folder), or, for a board of the inventory, its default profile
    ``<board>-<backend>-<threads>t``."""
    from ofakit.device_profiles import ProfileError, load_profile
    from ofakit.profiler.remote.inventory import InventoryError, load_inventory

    try:
        return load_profile(name)
    except ProfileError as exc:
        try:
            dev = load_inventory(remote.inventory).get(name)
        except InventoryError:
            raise exc from None
        return load_profile(f"{dev.name}-{dev.backend}-{dev.threads}t")


def runner_for_profile(prof: "Profile", remote: RemoteSettings = RemoteSettings()) -> Runner:
    """The runner that re-measures on ``prof``'s device with its backend and threads (a board's over SSH). An
    imported profile (OFA's tables) has no device ofakit can reach: one line says so."""
    meta = prof.meta
    if meta.source != "measured":
        raise UserError(f"profile {prof.name!r} was imported ({meta.source}), not measured by ofakit: there is "
                        f"nothing to measure (validate and recalibrate re-measure a profile made by `ofakit "
                        f"profile`)")
    return resolve(meta.device, meta.backend, meta.threads, remote).runner


def recalibrate_profile(prof: "Profile", anchors: Optional[int] = None, rounds: Optional[int] = None,
                        work: Optional[Path] = None, jobs: int = 2, log: Log = _quiet,
                        runner: Optional[Runner] = None) -> dict[str, Any]:
    """Re-measure ``anchors`` (default: up to 10) of the profile's calibration subnets on its device with its
    backend and method, and return the device state to store as ``calibration["state"]`` (factor = median now /
    at calibration time). Resumes an interrupted run of the last ``RESUME_S`` seconds. ``runner``: default
    :func:`runner_for_profile`'s."""
    from ofakit.predictors.lut import MIN_ANCHORS, anchor_archs, anchor_factor
    from ofakit.profiler.builder import cache_root
    from ofakit.profiler.pipeline import measure_subnets

    from .validation import ANCHORS, job_of

    meta, cal = prof.meta, prof.meta.calibration or {}
    if meta.source != "measured" or not meta.backend or meta.threads is None:
        raise UserError(f"profile {prof.name!r} was not measured by ofakit ({meta.source}); recalibration "
                        f"re-measures subnets on its device with its backend")
    n_cal = len(cal.get("fit_archs") or [])
    if not n_cal or len(cal.get("fit_measured_ms") or []) != n_cal:
        raise UserError(f"profile {prof.name!r} stores no calibration subnets with their measured latencies; "
                        f"profile the device with calibration subnets first")
    anchors = min(ANCHORS, n_cal) if anchors is None else anchors
    if not MIN_ANCHORS <= anchors <= n_cal:
        raise ParameterError("anchors", f"must lie in {MIN_ANCHORS}..{n_cal} (the profile's calibration subnets), "
                                        f"got {anchors}")
    if rounds is not None and rounds < 1:
        raise ParameterError("rounds", f"must be >= 1, got {rounds}")
    runner = runner or runner_for_profile(prof)
    here, then_cpu = runner.environment().get("cpu_model"), (meta.environment or {}).get("cpu_model")
    if then_cpu and here and then_cpu != here:
        raise UserError(f"profile {prof.name!r} was measured on a {then_cpu!r}, {meta.device!r} is now a {here!r}: "
                        f"a state factor cannot bridge two devices; profile this one (ofakit profile {meta.device})")
    refs = anchor_archs(prof, anchors)
    job = job_of(prof, rounds)
    stamp = "".join(c for c in str(meta.created or "") if c.isalnum())[:15]
    journal = (work or cache_root() / "work" / prof.name) / f"recalibrate-{stamp or 'profile'}.jsonl"
    if journal.exists() and time.time() - journal.stat().st_mtime > RESUME_S:
        log(f"discarding {journal}: unfinished and older than {RESUME_S:.0f} s")
        journal.unlink()
    log(f"recalibrating {prof.name}: {len(refs)} of its {n_cal} calibration subnets on {meta.device} with "
        f"{meta.backend}, {meta.threads} thread(s); journal {journal}")
    t0 = time.perf_counter()
    now, _, _ = measure_subnets(refs, meta.device, meta.backend, meta.threads, job, journal, build_jobs=jobs,
                                log=log, runner=runner)
    factor = anchor_factor(prof, refs, now)
    ok = int(np.isfinite(now).sum())
    if factor is None:
        raise UserError(f"{prof.name}: only {ok} of {len(refs)} anchor subnets could be measured (need "
                        f"{MIN_ANCHORS}); see {journal}")
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    os.replace(journal, journal.with_name(f"{journal.stem}-{''.join(c for c in date if c.isalnum())[:15]}.jsonl"))
    return {"factor": factor, "date": date, "n": ok, "anchor_archs": [a.to_json() for a in refs],
            "anchor_ms": [float(v) if np.isfinite(v) else None for v in now],
            "rounds": max(job.rounds, job.subnet_rounds), "seconds": round(time.perf_counter() - t0, 1),
            "loadavg": [round(v, 2) for v in os.getloadavg()]}


def recalibrate(prof: "Profile", out: Optional[Path] = None, **kw: Any) -> tuple[dict[str, Any], dict[str, Any],
                                                                                  Path]:
    """:func:`recalibrate_profile` and store the new state in the profile (``out``: save the whole profile
    there, else its profile.json in place). Returns (new state, previous state or {}, folder)."""
    from ofakit.device_profiles import ProfileError
    from ofakit.predictors.lut import STATE_KEY, stored_state

    try:
        old = stored_state(prof)
    except ProfileError:  # a damaged stored state is what recalibrating replaces
        old = {}
    state = recalibrate_profile(prof, **kw)
    prof.meta.calibration[STATE_KEY] = state
    return state, old, prof.save(out) if out else prof.save_meta()
