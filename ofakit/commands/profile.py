"""`ofakit profile DEVICE`: measure every elastic operator on a device into a profile; `ofakit profile
import-ofa | export-ofa` convert OFA's YAML lookup tables.

``profile`` is a group whose unknown first word falls through to ``measure``, so ``ofakit profile cpu --quick``
and ``ofakit profile import-ofa DIR ...`` both work.
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, List, Optional

import click
import typer
from typer.core import TyperGroup

from ofa_core.errors import UserError
from ofa_core.fileio import check_out

from . import devices as remote_cli


class _DefaultToMeasure(TyperGroup):
    """A group that treats an unknown first word (a device name or an option) as ``measure``'s."""

    default_command = "measure"

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


profile_app = typer.Typer(cls=_DefaultToMeasure, no_args_is_help=True,
                          help="Profile a device's operators (ofakit profile DEVICE), or convert OFA lookup tables.")


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
        raise UserError(f"--resolutions: expected START:STOP:STEP or a comma list, got {text!r}") from None
    if not out or any(not 32 <= r <= 1024 for r in out):
        raise UserError(f"--resolutions: resolutions must lie in 32..1024, got {text!r}")
    return out


def log_line(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def fit_calibration(run: Any, log: Any = log_line) -> None:
    """Fit the profile's calibration on the job's calibration subnets (kept apart from any validation set)."""
    import numpy as np

    from predictors.lut import CalibratedLUTPredictor

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


def make_request(device: str, backend: str, threads: int, resolutions: str, quick: bool, rounds: int, name: str,
                 calibration: int, seed: int, jobs: int, width: float, quick_resolutions: Optional[int] = None,
                 min_time: Optional[float] = None, extra_rounds: Optional[int] = None) -> Any:
    """The :class:`~profiler.pipeline.ProfileRequest` the command-line options describe."""
    from profiler.pipeline import ProfileRequest, default_job

    job = default_job()
    job.rounds = rounds
    if min_time is not None:
        if min_time <= 0:
            raise UserError(f"--min-time: must be > 0, got {min_time}")
        job.timing.min_s = min_time
    if extra_rounds is not None:
        if extra_rounds < 0:
            raise UserError(f"--extra-rounds: must be >= 0, got {extra_rounds}")
        job.extra_rounds = extra_rounds
    extra = {} if quick_resolutions is None else {"quick_resolutions": quick_resolutions}
    return ProfileRequest(device=device, backend=backend, threads=threads, width=width,
                          resolutions=parse_resolutions(resolutions), quick=quick, calibration_subnets=calibration,
                          seed=seed, job=job, build_jobs=jobs, name=name, **extra)


def profile_local(device: str, backend: str, threads: int, resolutions: str, quick: bool, rounds: int,
                  out: Optional[Path], name: str, work: Optional[Path], fresh: bool, calibration: int, seed: int,
                  jobs: int, width: float, quick_resolutions: Optional[int] = None, min_time: Optional[float] = None,
                  runner: Any = None, log: Any = log_line, extra_rounds: Optional[int] = None) -> Path:
    """Profile ``device`` and save the calibrated profile; returns its folder. ``runner``: this machine's by
    default; a board's SSHRunner when profiler.remote profiles a board."""
    from device_profiles import profile_root
    from profiler.pipeline import profile_device

    req = make_request(device, backend, threads, resolutions, quick, rounds, name, calibration, seed, jobs, width,
                       quick_resolutions, min_time, extra_rounds)
    run = profile_device(req, work, log=log, fresh=fresh, runner=runner)
    fit_calibration(run, log)
    folder = run.profile.save(out or profile_root() / req.name)
    s = run.seconds
    print(f"{req.name}: {run.n_measured} ops measured, {run.n_interpolated} interpolated, "
          f"{len(run.profile.meta.errors)} failed; build {s['build_s']:.0f} s, measure {s['measure_s']:.0f} s, "
          f"total {s['total_s']:.0f} s -> {folder}")
    return folder


@profile_app.command("measure")
def measure_cmd(
    device: Optional[str] = typer.Argument(None, help="Device to profile: 'cpu' (this machine) or a board of the "
                                                      "device inventory (ofakit devices list)."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="onnxruntime | tflite | torch (default "
                                                                         "onnxruntime; a board's: its inventory's)."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Runtime threads (default 1; a board's: its "
                                                                         "inventory's)."),
    resolutions: str = typer.Option("128:224:4", "--resolutions", "-r", help="START:STOP:STEP or a comma list."),
    quick: bool = typer.Option(False, "--quick", help="Measure a few resolutions, interpolate the rest."),
    rounds: int = typer.Option(4, "--rounds", help="Interleaved measurement rounds per op."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Profile folder (default: profile root/NAME)."),
    name: str = typer.Option("", "--name", help="Profile name (default: DEVICE-BACKEND-<threads>t)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Journal folder (default: cache/work/NAME)."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard this profile's journal and measure anew."),
    calibration: int = typer.Option(30, "--calibration-subnets", help="Whole subnets measured to calibrate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the round order and calibration subnets."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Model-building processes."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier of the supernet."),
    min_time: Optional[float] = typer.Option(None, "--min-time", help="Seconds timed per op and round "
                                                                      "(default 0.03)."),
    quick_resolutions: Optional[int] = typer.Option(None, "--quick-resolutions",
                                                    help="Resolutions measured by --quick (default 3)."),
    extra_rounds: Optional[int] = typer.Option(None, "--extra-rounds",
                                               help="At most this many rounds added, one at a time, for noisy ops "
                                                    "(default 4)."),
    few_shot: int = typer.Option(0, "--few-shot", help="Instead of a LUT: measure this many random subnets end to "
                                                      "end and fit a few-shot predictor from the known profiles."),
    devices: Optional[str] = remote_cli.DevicesOpt, tag: Optional[str] = remote_cli.TagOpt,
    inventory: Optional[Path] = remote_cli.InventoryOpt, accept_new_host_key: bool = remote_cli.AcceptOpt,
    connect_timeout: float = remote_cli.TimeoutOpt, retries: int = remote_cli.RetriesOpt,
    reconnects: int = remote_cli.ReconnectsOpt, op_timeout: Optional[float] = remote_cli.OpTimeoutOpt,
) -> int:
    """Measure every distinct operator of the space on DEVICE (or on boards over SSH, in parallel) and write its
    profile (resumes if interrupted)."""
    check_out(out, "folder")
    remote = remote_cli.remote_settings(inventory, accept_new_host_key, connect_timeout, retries, reconnects,
                                        op_timeout, devices, tag)
    if few_shot:
        if device is None or devices or tag:
            raise UserError("--few-shot: name one DEVICE (this machine 'cpu' or one board)")
        return few_shot_profile(device, few_shot, seed, backend, threads, width, out, name, work, jobs,
                                {**remote_cli.remote_settings(None, False, 10.0, 3, 3), **remote})
    return dispatch_profile(device, remote, backend=backend, threads=threads, resolutions=resolutions, quick=quick,
                            rounds=rounds, out=out, name=name, work=work, fresh=fresh, calibration=calibration,
                            seed=seed, jobs=jobs, width=width, min_time=min_time, quick_resolutions=quick_resolutions,
                            extra_rounds=extra_rounds)


def few_shot_profile(device: str, n: int, seed: int, backend: Optional[str], threads: Optional[int], width: float,
                     out: Optional[Path], name: str, work: Optional[Path], jobs: int, remote: dict) -> int:
    """`ofakit profile DEVICE --few-shot N`: measure N random subnets on DEVICE (same method as profiles) and save
    a few-shot latency predictor fitted on them and on every known profile's LUT."""
    import numpy as np

    from device_profiles import profile_root
    from ofa_core.space import sample_batch, space_for_width
    from predictors.fewshot import fit_few_shot
    from profiler.builder import cache_root
    from profiler.pipeline import default_job, measure_subnets

    if n < 4:
        raise UserError(f"--few-shot: needs at least 4 subnets, got {n}")
    runner, backend, threads = remote_cli.device_runner(device, backend, threads, remote)
    name = name or f"{device}-{backend}-{threads}t-fewshot{n}"
    archs = sample_batch(np.random.default_rng([seed, 3]), n, space_for_width(width)).to_configs()
    journal = (work or cache_root() / "work" / name) / f"fewshot-seed{seed}.jsonl"
    log_line(f"{name}: measuring {n} subnets end to end on {device} ({backend}, {threads} thread(s))")
    ms, _, _ = measure_subnets(archs, device, backend, threads, default_job(), journal, build_jobs=jobs,
                               log=log_line, runner=runner)
    ok = np.isfinite(ms)
    if ok.sum() < 4:
        raise UserError(f"{device}: only {int(ok.sum())} of {n} subnets could be measured; see {journal}")
    pred = fit_few_shot([a for a, g in zip(archs, ok) if g], ms[ok])
    folder = pred.save(out or profile_root() / name)
    print(f"{name}: few-shot predictor from {int(ok.sum())} measured subnets "
          f"({', '.join(f'{v:.2f}' for v in ms[ok])} ms) -> {folder}")
    return 0


def dispatch_profile(device: Optional[str], remote: Optional[dict] = None, **kw: Any) -> int:
    """Route a profiling request: this machine ('cpu') here; boards of the inventory (DEVICE, --devices, --tag)
    over SSH through :func:`ofakit.commands.devices.profile_boards_cli`. Returns the exit code."""
    from profiler.pipeline import LOCAL_DEVICES

    remote = remote or {}
    if device in LOCAL_DEVICES and not remote.get("devices") and not remote.get("tag"):
        kw["backend"], kw["threads"] = kw.get("backend") or "onnxruntime", kw.get("threads") or 1
        profile_local(device, **kw)
        return 0
    defaults = remote_cli.remote_settings(None, False, 10.0, 3, 3)
    return remote_cli.profile_boards_cli(device, {**defaults, **remote}, **kw)


@profile_app.command("import-ofa")
def import_ofa_cmd(
    folder: Path = typer.Argument(..., help="Folder of OFA <R>_lookup_table.yaml files."),
    name: str = typer.Option(..., "--name", help="Name of the new profile."),
    width: float = typer.Option(..., "--width", help="Width multiplier the tables were measured for."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Profile folder (default: profile root/NAME)."),
) -> None:
    """Import OFA's YAML latency tables as a device profile."""
    check_out(out, "folder")
    from device_profiles import profile_root
    from device_profiles.ofa_yaml import import_ofa

    prof = import_ofa(folder, name, width)
    dest = prof.save(out or profile_root() / name)
    print(f"{name}: {len(prof)} entries over {len(prof.meta.resolutions)} resolutions -> {dest}")


@profile_app.command("export-ofa")
def export_ofa_cmd(
    profile: str = typer.Argument(..., help="Profile name or folder."),
    folder: Path = typer.Argument(..., help="Output folder for <R>_lookup_table.yaml files."),
) -> None:
    """Write a profile as OFA's YAML latency tables (one file per resolution)."""
    check_out(folder, "folder", "FOLDER")
    from device_profiles import load_profile
    from device_profiles.ofa_yaml import export_ofa

    prof = load_profile(profile)
    files = export_ofa(prof, folder)
    print(f"{prof.name}: wrote {len(files)} files to {folder}")


RESUME_S = 600.0  # an unfinished recalibration journal older than this is discarded: the device has moved since


def recalibrate_profile(prof: Any, anchors: Optional[int] = None, rounds: Optional[int] = None,
                        work: Optional[Path] = None, jobs: int = 2, log: Any = log_line, runner: Any = None
                        ) -> dict[str, Any]:
    """Re-measure ``anchors`` (default: up to 10) of the profile's calibration subnets on its device with its
    backend and method, and return the device state to store as ``calibration["state"]`` (factor = median now /
    at calibration time). Resumes an interrupted run of the last ``RESUME_S`` seconds. ``runner``: a board's
    SSHRunner, else this machine's."""
    import numpy as np

    from predictors.lut import MIN_ANCHORS, anchor_archs, anchor_factor
    from profiler.agent.ofakit_agent import cpu_model
    from profiler.builder import cache_root
    from profiler.pipeline import LOCAL_DEVICES, measure_subnets

    from .validate import ANCHORS, job_of

    meta, cal = prof.meta, prof.meta.calibration or {}
    if meta.source != "measured" or not meta.backend or meta.threads is None:
        raise UserError(f"profile {prof.name!r} was not measured by ofakit ({meta.source}); recalibration "
                        f"re-measures subnets on its device with its backend")
    n_cal = len(cal.get("fit_archs") or [])
    if not n_cal or len(cal.get("fit_measured_ms") or []) != n_cal:
        raise UserError(f"profile {prof.name!r} stores no calibration subnets with their measured latencies; "
                        f"profile the device with --calibration-subnets N first")
    anchors = min(ANCHORS, n_cal) if anchors is None else anchors
    if not MIN_ANCHORS <= anchors <= n_cal:
        raise UserError(f"--anchors: must lie in {MIN_ANCHORS}..{n_cal} (the profile's calibration subnets), "
                        f"got {anchors}")
    if rounds is not None and rounds < 1:
        raise UserError(f"--rounds: must be >= 1, got {rounds}")
    here, then_cpu = cpu_model(), (meta.environment or {}).get("cpu_model")
    if runner is None and meta.device in LOCAL_DEVICES and then_cpu and here and then_cpu != here:
        raise UserError(f"profile {prof.name!r} was measured on a {then_cpu!r}, this machine is a {here!r}: a state "
                        f"factor cannot bridge two devices; profile this one (ofakit profile {meta.device})")
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


@profile_app.command("recalibrate")
def recalibrate_cmd(
    profile: str = typer.Argument(..., help="Profile (name or folder) whose device state to re-measure."),
    anchors: Optional[int] = typer.Option(None, "--anchors", help="Calibration subnets re-measured, evenly spread "
                                                                  "over their sizes (default 10, at least 3)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Rounds per subnet (default: the profile's)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Journal folder (default: cache/work/PROFILE)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Save the recalibrated profile into this folder "
                                                                 "(default: in place, profile.json only)."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Model-building processes."),
    inventory: Optional[Path] = remote_cli.InventoryOpt, accept_new_host_key: bool = remote_cli.AcceptOpt,
    connect_timeout: float = remote_cli.TimeoutOpt, retries: int = remote_cli.RetriesOpt,
    reconnects: int = remote_cli.ReconnectsOpt,
) -> None:
    """Re-measure a few of the profile's calibration subnets now and store the device-state factor (now / at
    calibration time) that its calibrated predictions are then scaled by (predict, search, validate)."""
    from device_profiles import ProfileError
    from predictors.lut import STATE_KEY, stored_state

    prof = remote_cli.board_profile(profile, inventory)
    runner = remote_cli.board_runner(prof, remote_cli.remote_settings(inventory, accept_new_host_key,
                                                                      connect_timeout, retries, reconnects))
    try:
        old = stored_state(prof)
    except ProfileError:  # a damaged stored state is what recalibrating replaces
        old = {}
    state = recalibrate_profile(prof, anchors, rounds, work, jobs, log_line, runner)
    prof.meta.calibration[STATE_KEY] = state
    folder = prof.save(out) if out else prof.save_meta()
    was = f" (was {old['factor']:.3f} from {old.get('date', '?')})" if old else ""
    print(f"{prof.name}: state factor {state['factor']:.3f}{was} from {state['n']} calibration subnets re-measured "
          f"in {state['seconds']:.0f} s -> {folder / 'profile.json'}")


def register(app: typer.Typer) -> None:
    """Add `ofakit profile` to `app`."""
    app.add_typer(profile_app, name="profile")
