"""`ofakit profile DEVICE`: measure every elastic operator on a device into a profile; `ofakit profile
import-ofa | export-ofa` convert OFA's YAML lookup tables.

``profile`` is a group whose unknown first word falls through to ``measure``, so ``ofakit profile cpu --quick``
and ``ofakit profile import-ofa DIR ...`` both work.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import click
import typer
from typer.core import TyperGroup

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.fileio import check_out

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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Profile folder (default: NAME in your profile folder)."),
    name: str = typer.Option("", "--name", help="Profile name (default: DEVICE-BACKEND-<threads>t)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Journal folder (default: cache/work/NAME)."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard this profile's journal and measure anew."),
    calibration: int = typer.Option(30, "--calibration-subnets", help="Whole subnets measured to calibrate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the round order and calibration subnets."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Model-building processes (backends whose models are not "
                                                     "built directly, e.g. torch)."),
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
    from ofakit.profiler.pipeline import ProfileRequest

    from ..workflows import few_shot as fit_few_shot_on
    from ..workflows import log_to_stderr as log_line
    from ..workflows import make_job, parse_resolutions, profile_devices

    remote = remote_cli.remote_settings(inventory, accept_new_host_key, connect_timeout, retries, reconnects)
    boards = [n.strip() for n in (devices or "").split(",") if n.strip()]
    if few_shot:
        if device is None or boards or tag:
            raise UserError("--few-shot: name one DEVICE (this machine 'cpu' or one board)")
        _, folder, ms = fit_few_shot_on(device, few_shot, seed=seed, backend=backend, threads=threads, width=width,
                                        out=out, name=name, work=work, jobs=jobs, remote=remote, log=log_line)
        print(f"{folder.name}: few-shot predictor from {len(ms)} measured subnets "
              f"({', '.join(f'{v:.2f}' for v in ms)} ms) -> {folder}")
        return 0
    if device is None and not boards and not tag:
        raise UserError("give a DEVICE ('cpu' or a board of the inventory), --devices a,b or --tag T")
    extra = {} if quick_resolutions is None else {"quick_resolutions": quick_resolutions}
    req = ProfileRequest(device=device or "", backend=backend, threads=threads, width=width,
                         resolutions=parse_resolutions(resolutions), quick=quick, calibration_subnets=calibration,
                         seed=seed, job=make_job(rounds, min_time, extra_rounds, op_timeout), build_jobs=jobs,
                         name=name, **extra)
    done = profile_devices(req, boards, tag, remote, out=out, work=work, fresh=fresh, log=log_line)
    for p in done:
        if p is not None:
            print(p.summary())
    return 0 if all(done) else 1


@profile_app.command("import-ofa")
def import_ofa_cmd(
    folder: Path = typer.Argument(..., help="Folder of OFA <R>_lookup_table.yaml files."),
    name: str = typer.Option(..., "--name", help="Name of the new profile."),
    width: float = typer.Option(..., "--width", help="Width multiplier the tables were measured for."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Profile folder (default: NAME in your profile folder)."),
) -> None:
    """Import OFA's YAML latency tables as a device profile."""
    check_out(out, "folder")
    from ofakit.device_profiles.ofa_yaml import import_ofa
    from ofakit.device_profiles.store import write_folder

    target = out or write_folder(name)
    prof = import_ofa(folder, name, width)
    dest = prof.save(target)
    print(f"{name}: {len(prof)} entries over {len(prof.meta.resolutions)} resolutions -> {dest}")


@profile_app.command("export-ofa")
def export_ofa_cmd(
    profile: str = typer.Argument(..., help="Profile name or folder."),
    folder: Path = typer.Argument(..., help="Output folder for <R>_lookup_table.yaml files."),
) -> None:
    """Write a profile as OFA's YAML latency tables (one file per resolution)."""
    check_out(folder, "folder", "FOLDER")
    from ofakit.device_profiles import load_profile
    from ofakit.device_profiles.ofa_yaml import export_ofa

    prof = load_profile(profile)
    files = export_ofa(prof, folder)
    print(f"{prof.name}: wrote {len(files)} files to {folder}")


@profile_app.command("recalibrate")
def recalibrate_cmd(
    profile: str = typer.Argument(..., help="Profile (name or folder) whose device state to re-measure."),
    anchors: Optional[int] = typer.Option(None, "--anchors", help="Calibration subnets re-measured, evenly spread "
                                                                  "over their sizes (default 10, at least 3)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Rounds per subnet (default: the profile's)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Journal folder (default: cache/work/PROFILE)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Save the recalibrated profile into this folder "
                                                                 "(default: in place, profile.json only)."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Model-building processes (backends whose models are not "
                                                     "built directly, e.g. torch)."),
    inventory: Optional[Path] = remote_cli.InventoryOpt, accept_new_host_key: bool = remote_cli.AcceptOpt,
    connect_timeout: float = remote_cli.TimeoutOpt, retries: int = remote_cli.RetriesOpt,
    reconnects: int = remote_cli.ReconnectsOpt,
) -> None:
    """Re-measure a few of the profile's calibration subnets now and store the device-state factor (now / at
    calibration time) that its calibrated predictions are then scaled by (predict, search, validate)."""
    from ..workflows import find_profile, recalibrate, runner_for_profile
    from ..workflows import log_to_stderr as log_line

    remote = remote_cli.remote_settings(inventory, accept_new_host_key, connect_timeout, retries, reconnects)
    prof = find_profile(profile, remote)
    state, old, folder = recalibrate(prof, out, anchors=anchors, rounds=rounds, work=work, jobs=jobs, log=log_line,
                                     runner=runner_for_profile(prof, remote))
    was = f" (was {old['factor']:.3f} from {old.get('date', '?')})" if old else ""
    print(f"{prof.name}: state factor {state['factor']:.3f}{was} from {state['n']} calibration subnets re-measured "
          f"in {state['seconds']:.0f} s -> {folder / 'profile.json'}")


def register(app: typer.Typer) -> None:
    """Add `ofakit profile` to `app`."""
    app.add_typer(profile_app, name="profile")
