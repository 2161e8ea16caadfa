"""Profile the OFA-MobileNetV3 space (width 1.0) on this machine's CUDA GPU and validate every profile.

Run through ``bench/gpu_profile.sh OUTDIR [PACKDIR]`` (it checks Python, dependencies and CUDA first).

Four profiles, in priority order: CUDA graphs at batch 1 and 64, eager at batch 1 and 64 (fp32; plus
onnxruntime's CUDA provider at batch 1 when the installed onnxruntime has it). Each is measured with the torch-cuda
backend through the normal pipeline (journaled, resumable), calibrated on its own 16 calibration subnets, then
validated against 100 held-out random subnets measured end to end in the same mode (``ofakit validate``'s code).

The device budget is short, so the work runs in two phases under a wall-clock budget (``--budget-s``):
  A. every profile *quick*: ``--quick-resolutions`` resolutions measured, the others interpolated; validated;
  B. every profile completed to all resolutions (the journal keeps phase A's ops and subnets, so only the missing
     ops are measured); a step is skipped when the time per op seen so far says it would not fit.
After every step the outputs are rewritten, so a run cut short still leaves complete profiles:
  OUTDIR/<name>/{profile.json,lut.csv}, OUTDIR/<name>-validation.{csv,png}, OUTDIR/summary.json,
  OUTDIR/work/<name>/*.jsonl (raw measurement journals);
  PACKDIR (optional, e.g. the device tool's $OUT, which returns at most 8 files): gpu_profiles.tar.gz (all of
  OUTDIR but the model cache), summary.json and the validation PNGs.

``--dry-run cpu`` (or GPU_PROFILE_DRY_RUN=cpu) runs the same steps with the torch CPU backend on a tiny subset, to
test this script where there is no GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofakit.ofa_core.errors import UserError  # noqa: E402

DEFAULT_CONFIGS = ("graph-b1", "graph-b64", "eager-b1", "eager-b64")
ORT_CONFIG = "ort-b1"
# Default guesses before anything was measured (seconds per op / per subnet record, fixed cost per step).
GUESS = {"op_s": 0.06, "subnet_s": 0.4, "fixed_s": 25.0}


def gpu_job() -> Any:
    """GPU timing: short windows (GPU noise is low), one round; warm-up until settled is the backend's."""
    from ofakit.profiler.agent.ofakit_agent import JobSettings, TimingSettings

    return JobSettings(TimingSettings(warmup_runs=5, warmup_s=0.002, min_runs=10, min_s=0.01, clock="wall"),
                       rounds=1, extra_rounds=0, timeout_s=60.0)


def dry_job() -> Any:
    from ofakit.profiler.agent.ofakit_agent import JobSettings, TimingSettings

    return JobSettings(TimingSettings(warmup_runs=1, warmup_s=0.0, min_runs=3, min_s=0.002),
                       rounds=1, extra_rounds=0, timeout_s=60.0)


@dataclass
class Config:
    """One profile to make: its name, the backend that measures it, and its validation settings."""

    label: str
    name: str
    device: str
    backend: str


@dataclass
class StepResult:
    name: str
    phase: str
    status: str  # done | skipped | failed
    note: str = ""
    seconds: float = 0.0
    mode: str = ""
    batch: int = 0
    measured_resolutions: list = field(default_factory=list)
    n_ops_measured: int = 0
    n_ops_interpolated: int = 0
    n_errors: int = 0
    subnet_ms: list = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def gpu_slug(name: str) -> str:
    """A short name for a GPU model: 'NVIDIA H100 80GB HBM3' -> 'h100'."""
    m = re.search(r"[a-z]*\d+[a-z]*", name.lower().replace("nvidia", ""))
    return m.group(0) if m else "gpu"


def make_configs(labels: list[str], dry_run: bool, slug: str) -> list[Config]:
    """Backends for ``labels`` (``graph-b64``, ``eager-b1``, ``ort-b1``...). A dry run measures every label with
    the torch CPU backend (eager, batch 1) under a ``dryrun-`` name, so nothing it writes passes for GPU data."""
    out = []
    for lab in labels:
        if dry_run:
            out.append(Config(lab, f"dryrun-cpu-torch-{lab}", "cpu", "torch"))
        elif lab.startswith("ort-"):
            out.append(Config(lab, f"{slug}-onnxruntime-cuda-{lab[4:]}", "gpu", f"onnxruntime-cuda-{lab[4:]}"))
        else:
            out.append(Config(lab, f"{slug}-torch-cuda-{lab}", "gpu", f"torch-cuda-{lab}"))
    return out


class Budget:
    """Wall-clock budget; per-step cost estimates from the journals measured so far."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds
        self.rates: dict[str, dict[str, float]] = {}  # config label -> op_s, subnet_s, fixed_s

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def learn(self, label: str, journals: list[Path], step_s: float) -> None:
        """Mean wall time per op and per subnet record, and the step's cost beyond them."""
        from ofakit.profiler.agent.ofakit_agent import read_results

        recs = [r for j in journals for r in read_results(str(j))[1] if r.wall_s]
        ops = [r.wall_s for r in recs if not r.id.startswith("subnet:")]
        subs = [r.wall_s for r in recs if r.id.startswith("subnet:")]
        old = self.rates.get(label, dict(GUESS))
        self.rates[label] = {"op_s": sum(ops) / len(ops) if ops else old["op_s"],
                             "subnet_s": sum(subs) / len(subs) if subs else old["subnet_s"],
                             "fixed_s": old["fixed_s"] if label in self.rates else
                             max(5.0, step_s - sum(ops) - sum(subs))}

    def estimate(self, label: str, n_ops: int, n_subnets: int) -> float:
        rate = self.rates.get(label)
        if rate is None:  # a config not measured yet: the slowest rates seen so far, else the guesses
            seen = list(self.rates.values()) or [GUESS]
            rate = {k: max(r[k] for r in seen) for k in GUESS}
        return n_ops * rate["op_s"] + n_subnets * rate["subnet_s"] + rate["fixed_s"]


def todo_counts(req: Any, work: Path, n_validate: int) -> tuple[int, int]:
    """(ops, subnets) of a profiling + validation step not yet in its journals."""
    from ofakit.ofa_core.ops import enumerate_ops
    from ofakit.ofa_core.space import space_for_width
    from ofakit.profiler.agent.ofakit_agent import read_results

    done = {r.id for j in work.glob("*.jsonl") for r in read_results(str(j))[1] if r.ok}
    ops = enumerate_ops(space_for_width(req.width), req.measured_resolutions())
    n_ops = sum(1 for k in ops if k not in done)
    n_sub = req.calibration_subnets + n_validate - sum(1 for i in done if i.startswith("subnet:"))
    return n_ops, max(0, n_sub)


def run_step(cfg: Config, quick: bool, args: argparse.Namespace, out: Path, budget: Budget,
             first: bool) -> StepResult:
    """Profile (quick or full), calibrate, validate and write one configuration."""
    from ofakit.device_profiles import atomic_write_text, load_profile
    from ofakit.validation import csv_text, plot, validate_profile
    from ofakit.workflows import fit_calibration, parse_resolutions
    from ofakit.profiler.pipeline import ProfileRequest, profile_device

    phase = "A (quick)" if quick else "B (full)"
    work = out / "work" / cfg.name
    req = ProfileRequest(device=cfg.device, backend=cfg.backend, threads=1, width=1.0,
                         resolutions=parse_resolutions(args.resolutions), quick=quick,
                         quick_resolutions=args.quick_resolutions, calibration_subnets=args.calibration,
                         seed=args.seed, job=args.job, build_jobs=args.jobs if cfg.label.startswith("ort-") else 1,
                         name=cfg.name)
    n_ops, n_sub = todo_counts(req, work, args.n_validate)
    need = budget.estimate(cfg.label, n_ops, n_sub)
    if not first and need > budget.left():
        note = f"needs ~{need:.0f} s for {n_ops} ops + {n_sub} subnets, {budget.left():.0f} s left"
        log(f"{cfg.name}: phase {phase} skipped: {note}")
        return StepResult(cfg.name, phase, "skipped", note)
    log(f"{cfg.name}: phase {phase}: {n_ops} ops + {n_sub} subnets to measure (~{need:.0f} s; "
        f"{budget.left():.0f} s of budget left)")
    t0 = time.monotonic()
    run = profile_device(req, work, cache_dir=out / "cache", log=lambda m: log(f"  {m}"))
    fit_calibration(run, lambda m: log(f"  {m}"))
    prof = run.profile
    prof.save(out / cfg.name)
    prof = load_profile(out / cfg.name)
    rep = validate_profile(prof, args.n_validate, args.seed, work=work, jobs=req.build_jobs,
                           log=lambda m: log(f"  {m}"))
    metrics = rep.metrics()
    prof.meta.validation = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "n": args.n_validate,
                            "seed": args.seed, "method": "same backend, mode and timing as the profile", **metrics}
    prof.save()
    atomic_write_text(out / f"{cfg.name}-validation.csv", csv_text(rep))
    title = f"{cfg.name} ({'quick' if quick else 'full'}): {len(rep.archs)} held-out subnets"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        plot(rep, Path(tmp) / "v.png", title)
        os.replace(Path(tmp) / "v.png", out / f"{cfg.name}-validation.png")
    seconds = time.monotonic() - t0
    budget.learn(cfg.label, sorted(work.glob("*.jsonl")), seconds)
    meas = [float(v) for v in rep.measured if v == v]
    return StepResult(cfg.name, phase, "done", seconds=seconds, mode=prof.meta.mode, batch=prof.meta.batch,
                      measured_resolutions=list(prof.meta.method.get("measured_resolutions", [])),
                      n_ops_measured=run.n_measured, n_ops_interpolated=run.n_interpolated,
                      n_errors=len(prof.meta.errors), subnet_ms=[min(meas), max(meas)] if meas else [],
                      calibration={k: prof.meta.calibration.get(k) for k in ("features", "coef", "intercept",
                                                                              "n_fit", "fit_rmse_pct")},
                      validation=metrics)


def summary_table(latest: dict[str, StepResult]) -> str:
    head = (f"{'profile':<34} {'mode':<6} {'batch':>5} {'res':>5} {'ops':>5} {'subnet ms':>13} "
            f"{'raw ±5%':>8} {'raw ±10%':>8} {'cal ±5%':>8} {'cal ±10%':>8} {'rho':>6} {'time s':>7}")
    lines = [head, "-" * len(head)]
    for r in latest.values():
        if r.status != "done":
            lines.append(f"{r.name:<34} {r.status}: {r.note}")
            continue
        raw = r.validation.get("raw", {})
        cal = r.validation.get("corrected", raw)
        rng = f"{r.subnet_ms[0]:.3f}-{r.subnet_ms[1]:.3f}" if r.subnet_ms else "-"
        lines.append(f"{r.name:<34} {r.mode:<6} {r.batch:>5} {len(r.measured_resolutions):>5} "
                     f"{r.n_ops_measured:>5} {rng:>13} {raw.get('within5', float('nan')):>7.1f}% "
                     f"{raw.get('within10', float('nan')):>7.1f}% {cal.get('within5', float('nan')):>7.1f}% "
                     f"{cal.get('within10', float('nan')):>7.1f}% {cal.get('spearman', float('nan')):>6.3f} "
                     f"{r.seconds:>7.0f}")
    return "\n".join(lines)


def write_summary(out: Path, info: dict, steps: list[StepResult]) -> dict[str, StepResult]:
    """summary.json (every step, the latest result per profile, environment) and the latest table."""
    from ofakit.device_profiles import atomic_write_text

    latest: dict[str, StepResult] = {}
    for s in steps:
        if s.status == "done" or s.name not in latest:
            latest[s.name] = s
    data = {**info, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "steps": [asdict(s) for s in steps], "profiles": {k: asdict(v) for k, v in latest.items()}}
    atomic_write_text(out / "summary.json", json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    return latest


def pack(out: Path, pack_dir: Path) -> None:
    """gpu_profiles.tar.gz of OUTDIR (without the model cache), summary.json and PNGs into ``pack_dir``."""
    pack_dir.mkdir(parents=True, exist_ok=True)
    tmp = pack_dir / ".gpu_profiles.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(out.iterdir()):
            if p.name not in ("cache",) and not p.name.startswith("."):
                tar.add(p, arcname=f"gpu_profiles/{p.name}")
    os.replace(tmp, pack_dir / "gpu_profiles.tar.gz")
    for p in [out / "summary.json", *sorted(out.glob("*-validation.png"))]:
        if p.exists() and p.resolve().parent != pack_dir.resolve():
            shutil.copyfile(p, pack_dir / p.name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("packdir", type=Path, nargs="?", default=None,
                   help="also pack the results here (tar.gz + summary + PNGs; e.g. the device tool's $OUT)")
    p.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget for all steps (seconds)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help="comma list of MODE-bN[-fp16|-bf16|-cl] (torch-cuda options) or ort-bN, in priority order")
    p.add_argument("--resolutions", default="128:224:4")
    p.add_argument("--quick-resolutions", type=int, default=4, help="resolutions measured in phase A")
    p.add_argument("--calibration", type=int, default=16, help="calibration subnets per profile")
    p.add_argument("--n-validate", type=int, default=100, help="held-out validation subnets per profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=8, help="model-building processes (ONNX export, ort-cuda only)")
    p.add_argument("--gpu-name", default="", help="short GPU name for the profile names (default: from the GPU)")
    p.add_argument("--dry-run", choices=("cpu",), default=os.environ.get("GPU_PROFILE_DRY_RUN") or None,
                   help="test this script on the CPU with the torch CPU backend (tiny defaults)")
    args = p.parse_args(argv)
    if args.dry_run:
        given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
        tiny = {"--configs": ("configs", "eager-b1,graph-b1"), "--resolutions": ("resolutions", "160,192,224"),
                "--quick-resolutions": ("quick_resolutions", 2), "--calibration": ("calibration", 6),
                "--n-validate": ("n_validate", 6)}
        for flag, (dest, value) in tiny.items():
            if flag not in given:
                setattr(args, dest, value)
    args.job = dry_job() if args.dry_run else gpu_job()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.outdir.resolve()
    try:
        if args.packdir and (args.packdir.resolve() == out or out in args.packdir.resolve().parents):
            raise UserError(f"PACKDIR {args.packdir} must lie outside OUTDIR {args.outdir}")
        from ofakit.profiler.backends.onnxruntime_cuda import ort_cuda_unavailable
        from ofakit.profiler.backends.torch_cuda import cuda_unavailable, gpu_versions

        labels = [c.strip() for c in args.configs.split(",") if c.strip()]
        info: dict[str, Any] = {"script": "bench/gpu_profile.py", "argv": sys.argv[1:] if argv is None else argv,
                                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "dry_run": args.dry_run, "budget_s": args.budget_s, "job": asdict(args.job)}
        if args.dry_run:
            slug = "cpu"
            info["note"] = "DRY RUN on the CPU with the torch CPU backend: no GPU data"
        else:
            why = cuda_unavailable()
            if why:
                print(f"gpu_profile: no usable CUDA GPU: {why}; nothing measured", file=sys.stderr)
                return 2
            info["gpu"] = gpu_versions()
            slug = args.gpu_name or gpu_slug(info["gpu"]["gpu"])
            ort_why = ort_cuda_unavailable()
            info["onnxruntime_cuda"] = ort_why or "available"
            log(f"onnxruntime CUDA provider: {ort_why or 'available'}")
            if ort_why is None and ORT_CONFIG not in labels and args.configs == ",".join(DEFAULT_CONFIGS):
                labels.append(ORT_CONFIG)
        configs = make_configs(labels, bool(args.dry_run), slug)
        for c in configs:  # bad option text fails here, before anything is measured
            if not args.dry_run:
                from ofakit.profiler.backends import get_backend

                get_backend(c.backend)
        out.mkdir(parents=True, exist_ok=True)
        budget = Budget(args.budget_s)
        log(f"profiling {', '.join(c.name for c in configs)} into {out} (budget {args.budget_s:.0f} s)")
        if not args.dry_run:
            import torch

            log(f"python {sys.version.split()[0]}, torch {torch.__version__}; GPU: "
                f"{json.dumps(info['gpu'], sort_keys=True)}")
        phases = [True] + ([False] if args.quick_resolutions < len(_res(args.resolutions)) else [])
        steps: list[StepResult] = []
        for quick in phases:
            for cfg in configs:
                failed_before = any(s.name == cfg.name and s.status == "failed" for s in steps)
                try:
                    if failed_before:  # phase A failed: do not spend the budget failing again
                        res = StepResult(cfg.name, "B (full)", "skipped", "phase A failed")
                    else:
                        res = run_step(cfg, quick, args, out, budget, first=not steps)
                except Exception as exc:  # noqa: BLE001 - one failed profile must not cost the others
                    if not isinstance(exc, UserError):
                        traceback.print_exc(file=sys.stdout)
                    log(f"{cfg.name}: failed: {type(exc).__name__}: {exc}")
                    res = StepResult(cfg.name, "A (quick)" if quick else "B (full)", "failed",
                                     f"{type(exc).__name__}: {exc}"[:500])
                steps.append(res)
                latest = write_summary(out, info, steps)
                if args.packdir:
                    pack(out, args.packdir)
                if res.status == "done":
                    log(f"{cfg.name}: phase {res.phase} done in {res.seconds:.0f} s")
        print()
        print(summary_table(latest))
        print(f"\ntotal {time.monotonic() - budget.start:.0f} s; outputs in {out}"
              + (f", packed into {args.packdir}" if args.packdir else ""))
        ok = all(s.status == "done" for s in latest.values())
        return 0 if ok else 1
    except UserError as exc:
        print(f"gpu_profile: error: {exc}", file=sys.stderr)
        return 2


def _res(text: str) -> tuple[int, ...]:
    from ofakit.workflows import parse_resolutions

    return parse_resolutions(text)


if __name__ == "__main__":
    sys.exit(main())
