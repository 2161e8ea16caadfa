"""`ofakit train --config FILE` (progressive shrinking) and `ofakit accuracy-dataset --n N` (subnet accuracies).

Both run as one process or under ``torchrun --nproc_per_node K --no-python -- ofakit ...`` (DDP, NCCL on GPUs,
gloo on CPU; the ``--`` stops torchrun's parser from reading ``--n`` as an abbreviation of its own options); both
resume what an interrupted run left behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.fileio import check_out


def _device(value: Optional[str], threads: Optional[int]) -> Optional[str]:
    """Check --device; apply --threads (torch CPU threads of this process; 1 avoids oversubscribing a shared
    machine, where spinning OpenMP threads can cost 10x)."""
    if value not in (None, "cpu", "cuda"):
        raise UserError(f"--device: expected cpu or cuda, got {value!r}")
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads: expected a positive number, got {threads}")
        import torch
        torch.set_num_threads(threads)
    return value


def register(app: typer.Typer) -> None:
    """Add `ofakit train` and `ofakit accuracy-dataset` to `app`."""

    @app.command("train")
    def train(
        config: str = typer.Option(..., "--config", help="YAML schedule, or a built-in one: ps_fashion_mnist, "
                                                         "ps_imagenet"),
        data: Optional[str] = typer.Option(None, "--data", help="fashion-mnist or an image folder (one sub-folder "
                                                                "per class); overrides the config"),
        out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/<config name>)"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its checkpoints"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)"),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads per process"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    ) -> None:
        """Train an OFA supernet by progressive shrinking with distillation, phase by phase."""
        check_out(out, "folder")
        from ofakit.ofa_core.train import ProgressiveShrinking, init_distributed, load_config, resolve_config, shutdown

        path = resolve_config(config)
        cfg = load_config(path)
        if data is not None:
            cfg = cfg.replace_data(source=data)
        env = init_distributed(_device(device, threads))
        try:
            ps = ProgressiveShrinking(cfg, out or Path("runs") / path.stem, env, progress=not quiet)
            results = ps.run(resume=resume)
        finally:
            shutdown(env)
        if env.is_main:
            for res in results:
                accs = {s["name"]: s["acc"] for s in res["subnets"]}
                typer.echo(f"{res['phase']}: largest {100 * accs['largest']:.2f}%  smallest "
                           f"{100 * accs['smallest']:.2f}%  (held-out {res['holdout_images']} images)")
            typer.echo(f"weights: {ps.out / cfg.phases[-1].name / 'final.pt'}")

    @app.command("accuracy-dataset")
    def accuracy_dataset(
        checkpoint: Path = typer.Option(..., "--checkpoint", help="supernet weights (PHASE/final.pt of a run)"),
        out: Path = typer.Option(..., "--out", help="JSONL file to append records to (resumable)"),
        n: int = typer.Option(2000, "--n", help="number of random subnets"),
        config: Optional[str] = typer.Option(None, "--config", help="the run's config (default: config.yaml of "
                                                                    "the run holding --checkpoint)"),
        data: Optional[str] = typer.Option(None, "--data", help="override the config's data source"),
        seed: int = typer.Option(0, "--seed", help="which random subnets"),
        eval_images: Optional[int] = typer.Option(None, "--eval-images", help="held-out images measured per "
                                                                            "subnet (default: the config's)"),
        calib_images: Optional[int] = typer.Option(None, "--calib-images", help="training images that re-estimate "
                                                                              "BatchNorm (default: the config's)"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)"),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads per process"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    ) -> None:
        """Measure N random subnets (BN re-estimated, held-out split) into JSONL {ks, e, d, r, width, acc}."""
        check_out(out, "file")
        from ofakit.ofa_core.supernet import OFAMobileNetV3
        from ofakit.ofa_core.train import build_accuracy_dataset, init_distributed, load_config, resolve_config, shutdown
        from ofakit.ofa_core.train.checkpoint import load_model_state, model_state
        from ofakit.ofa_core.train.data import make_splits, open_source

        cfg_path = resolve_config(config) if config else checkpoint.parent.parent / "config.yaml"
        if not cfg_path.exists():
            raise UserError(f"{cfg_path}: no run config next to the checkpoint; pass --config (the held-out "
                            f"split must be the one training used)")
        cfg = load_config(cfg_path)
        changes = {k: v for k, v in (("source", data), ("eval_images", eval_images), ("calib_images", calib_images))
                   if v is not None}
        if changes:
            cfg = cfg.replace_data(**changes)
        d = cfg.data
        splits = make_splits(open_source(d.source, d.workers), d.holdout, d.split_seed, d.train_subset,
                             d.eval_images, d.calib_images)
        env = init_distributed(_device(device, threads))
        try:
            model = OFAMobileNetV3(cfg.width, splits.source.n_classes, cfg.dropout)
            load_model_state(model, model_state(checkpoint), str(checkpoint))
            model.to(env.device)
            bar = _bar(not quiet and env.is_main)
            task = bar.add_task("subnets", total=None) if bar else None
            if bar:
                bar.start()
            try:
                added = build_accuracy_dataset(
                    model, splits, out, n, cfg.resolutions, env, seed, cfg.eval.batch_size, d.center_crop,
                    on_record=(lambda k, total: bar.update(task, completed=k, total=total)) if bar else None)
            finally:
                if bar:
                    bar.stop()
            counts = env.gather(added)
        finally:
            shutdown(env)
        if env.is_main:
            typer.echo(f"{out}: added {sum(counts)} records ({n} subnets requested)")


def _bar(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True))
