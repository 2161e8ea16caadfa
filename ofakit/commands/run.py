"""`ofakit run` (what `make run` does): profile this CPU quickly into a run folder, validate the result on a few
dozen held-out subnets measured end to end, print the fidelity table and write the plot.

The shipped profile is never touched; its predictions for the same measured subnets are printed beside the fresh
quick profile's when it exists.
"""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer


def run_cmd(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<date-time>)."),
    n: int = typer.Option(30, "--n", help="Held-out subnets to validate on."),
    seed: int = typer.Option(0, "--seed", help="Seed of the round order and of the subnet samples."),
    rounds: int = typer.Option(4, "--rounds", help="Interleaved measurement rounds."),
    calibration: int = typer.Option(30, "--calibration-subnets", help="Subnets measured to calibrate."),
    quick_resolutions: Optional[int] = typer.Option(None, "--quick-resolutions",
                                                    help="Resolutions measured by --quick (default 3)."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help="onnxruntime | tflite | torch."),
    threads: int = typer.Option(1, "--threads", "-t", help="Runtime threads."),
) -> None:
    """Profile this CPU (quick), validate on held-out subnets, print the table, write the plot."""
    from ofakit.device_profiles import DEFAULT_PROFILE, ProfileError, load_profile
    from ofakit.predictors.registry import create_predictor
    from ofakit.profiler.pipeline import ProfileRequest

    from ..validation import fidelity, format_table, state_line, validate_profile, write_outputs
    from ..workflows import log_to_stderr, make_job, parse_resolutions, profile

    t0 = time.perf_counter()
    folder = out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    work = folder / "work"
    extra = {} if quick_resolutions is None else {"quick_resolutions": quick_resolutions}
    req = ProfileRequest(device="cpu", backend=backend, threads=threads, resolutions=parse_resolutions("128:224:4"),
                         quick=True, calibration_subnets=calibration, seed=seed, job=make_job(rounds),
                         name=f"cpu-{backend}-{threads}t-quick", **extra)
    print(f"ofakit run: profiling this CPU (quick, {backend}, {threads} thread(s)) into {folder}")
    done = profile(req, out=folder / "profile", work=work, log=log_to_stderr)
    print(done.summary())
    prof = load_profile(done.folder)
    t_profile = time.perf_counter() - t0
    print(f"ofakit run: validating on {n} held-out subnets measured end to end")
    rep = validate_profile(prof, n, seed, work=work, log=log_to_stderr)
    csv_path, png_path = write_outputs(rep, folder, f"this CPU, quick profile: {n} held-out subnets")
    rows = {f"quick profile, {k}": v for k, v in rep.metrics().items()}
    try:
        shipped = load_profile(DEFAULT_PROFILE)
    except ProfileError:
        shipped = None
    if shipped is not None and shipped.meta.backend == backend and shipped.meta.threads == threads:
        rows[f"shipped {DEFAULT_PROFILE}, raw"] = fidelity(rep.measured,
                                                           create_predictor("lut", shipped).predict(rep.archs))
        if shipped.meta.calibration:
            rows[f"shipped {DEFAULT_PROFILE}, corrected"] = fidelity(
                rep.measured, create_predictor("calibrated", shipped).predict(rep.archs))
    print()
    print(format_table(rows))
    print(state_line(rep))
    print()
    print(f"profile {t_profile:.0f} s, validation {rep.seconds['total_s']:.0f} s, "
          f"total {time.perf_counter() - t0:.0f} s")
    print(f"wrote {done.folder}, {csv_path}, {png_path}")


def register(app: typer.Typer) -> None:
    """Add `ofakit run` to `app`."""
    app.command("run")(run_cmd)
