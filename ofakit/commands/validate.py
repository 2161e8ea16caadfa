"""`ofakit validate PROFILE`: measure random whole subnets on the profile's device and compare them with the
profile's predictions (the workflow and its report are :mod:`ofakit.validation`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ofakit.ofa_core.fileio import check_out

from . import devices as remote_cli


def validate_cmd(
    device: str = typer.Argument(..., help="Profile to validate (name or folder), e.g. cpu-onnxruntime-1t."),
    n: int = typer.Option(100, "--n", help="Number of random held-out subnets."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subnet sample."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Rounds per subnet (default: 16, or the "
                                                               "profile's if more)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for validation.csv/png "
                                                                   "(default: runs/validate/PROFILE-seedS-nN)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Journal folder (default: cache/work/PROFILE)."),
    record: bool = typer.Option(False, "--record", help="Store the figures in the profile's profile.json."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Model-building processes (backends whose models are not "
                                                     "built directly, e.g. torch)."),
    anchors: int = typer.Option(10, "--anchors", help="Calibration subnets re-measured beside the test "
                                                           "subnets for the device-state factor (0: none)."),
    inventory: Optional[Path] = remote_cli.InventoryOpt, accept_new_host_key: bool = remote_cli.AcceptOpt,
    connect_timeout: float = remote_cli.TimeoutOpt, retries: int = remote_cli.RetriesOpt,
    reconnects: int = remote_cli.ReconnectsOpt,
) -> None:
    """Measure random subnets end to end and compare them with the profile's predictions (a board's profile, or a
    board name, is re-measured on that board over SSH)."""
    check_out(out, "folder")
    from ..validation import format_table, record_validation, state_line, validate_profile, write_outputs
    from ..workflows import find_profile, runner_for_profile
    from ..workflows import log_to_stderr as log_line

    remote = remote_cli.remote_settings(inventory, accept_new_host_key, connect_timeout, retries, reconnects)
    prof = find_profile(device, remote)
    rep = validate_profile(prof, n, seed, rounds, work, jobs, log_line, runner_for_profile(prof, remote), anchors)
    folder = out or Path("runs") / "validate" / f"{prof.name}-seed{seed}-n{n}"
    csv_path, png_path = write_outputs(rep, folder)
    print(format_table({f"{prof.name} {k}": v for k, v in rep.metrics().items()}))
    print(state_line(rep))
    print(f"measured {len(rep.archs)} subnets in {rep.seconds['total_s']:.0f} s; wrote {csv_path} and {png_path}")
    if record:
        print(f"recorded in {record_validation(prof, rep, n, seed)}")


def register(app: typer.Typer) -> None:
    """Add `ofakit validate` to `app`."""
    app.command("validate")(validate_cmd)
