"""`ofakit predict` (latency of subnets on a device) and the commands that fit predictors: `ofakit fit-accuracy`
(accuracy MLP), `ofakit fit-latency` (learned latency regressor), `ofakit fit-few-shot` (a new device from a few
measured subnets)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ofa_core.errors import UserError
from ofa_core.fileio import check_out


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UserError(f"--hidden: expected comma-separated layer sizes like 400,400,400, got {text!r}")
    return sizes


def register(app: typer.Typer) -> None:
    """Add `predict`, `fit-accuracy`, `fit-latency` and `fit-few-shot` to `app`."""

    @app.command("predict")
    def predict(
        archs: List[Path] = typer.Argument(..., help="Arch JSON file(s): OFA's {\"ks\", \"e\", \"d\", \"r\"} dict."),
        profile: Optional[str] = typer.Option(None, "--profile", "-p",
                                              help="Device profile name or folder (default: this CPU's)."),
        width: Optional[float] = typer.Option(None, "--width",
                                              help="Width multiplier (default: the file's, else the profile's)."),
        predictor: str = typer.Option("lut", "--predictor",
                                      help="lut, calibrated, or the folder of a saved predictor (fit-latency, "
                                           "few-shot), which carries its own profile data."),
    ) -> None:
        """Print the predicted latency (ms) of each subnet."""
        from device_profiles import DEFAULT_PROFILE, load_profile
        from ofa_core.space import ArchBatch, load_arch
        from predictors.base import LATENCY_PREDICTORS, make_latency_predictor

        named = predictor in LATENCY_PREDICTORS
        prof = load_profile(profile or DEFAULT_PROFILE) if named else None
        pred = make_latency_predictor(predictor, prof)
        if profile and not named:
            raise UserError("--profile: a saved predictor carries its own device data; leave --profile out")
        default_width = prof.meta.width if prof is not None else getattr(pred, "width_", 1.0)
        configs = [load_arch(p, width, default_width) for p in archs]
        if prof is not None and any(c.width != prof.meta.width for c in configs):
            bad = next(c for c in configs if c.width != prof.meta.width)
            raise UserError(f"width: profile {prof.name!r} describes the width-{prof.meta.width} supernet, the "
                            f"arch has width {bad.width} (pass --width {prof.meta.width})")
        by_width: dict[float, list[int]] = {}
        for i, c in enumerate(configs):
            by_width.setdefault(c.width, []).append(i)
        ms = [0.0] * len(configs)
        for idx in by_width.values():
            for i, v in zip(idx, pred.predict(ArchBatch.from_configs([configs[i] for i in idx]))):
                ms[i] = float(v)
        for path, v in zip(archs, ms):
            typer.echo(f"{v:.3f} ms" if len(archs) == 1 else f"{path}: {v:.3f} ms")

    @app.command("fit-accuracy")
    def fit_accuracy(
        data: Path = typer.Argument(..., help="JSONL: one {\"ks\",\"e\",\"d\",\"r\",\"width\",\"acc\"} per line "
                                              "(acc as a fraction), e.g. from `ofakit accuracy-dataset`."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to save the predictor into."),
        encoding: str = typer.Option("general", "--encoding", help="Arch encoding: general or ofa."),
        hidden: str = typer.Option("128,128", "--hidden", help="Hidden layer sizes (OFA used 400,400,400)."),
        epochs: int = typer.Option(500, "--epochs", min=1),
        patience: int = typer.Option(30, "--patience", min=1, help="Early stopping on the held-out loss."),
        lr: float = typer.Option(1e-3, "--lr"),
        validation: float = typer.Option(0.1, "--validation", help="Held-out fraction."),
        seed: int = typer.Option(0, "--seed"),
        test: Optional[Path] = typer.Option(None, "--test", help="Optional separate JSONL to report on."),
    ) -> None:
        """Train the MLP accuracy predictor; prints RMSE (points), Kendall tau and Spearman on the held-out split."""
        check_out(out, "folder")
        from predictors.accuracy import AccuracyMLP, accuracy_metrics, load_accuracy_jsonl

        archs, acc = load_accuracy_jsonl(data)
        test_set = load_accuracy_jsonl(test) if test is not None else None
        model = AccuracyMLP(hidden=_hidden(hidden), encoding=encoding, lr=lr, epochs=epochs, patience=patience,
                            validation_fraction=validation, random_state=seed).fit(archs, acc)
        folder = model.save(out)
        typer.echo(f"trained on {len(acc) - model.validation_.n} subnets, {model.n_epochs_} epochs")
        typer.echo(f"held-out: {model.validation_}")
        if test_set is not None:
            typer.echo(f"test:     {accuracy_metrics(test_set[1], model.predict(test_set[0]))}")
        typer.echo(f"saved {folder} (use it as mlp:{folder})")

    @app.command("fit-latency")
    def fit_latency(
        data: Path = typer.Argument(..., help="Measured subnets: CSV with ks,e,d,r (JSON lists) and ms columns, "
                                              "or JSONL of arch dicts with an ms field."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to save the regressor into."),
        model: str = typer.Option("gbr", "--model", help="ridge, gbr or rf."),
        profile: Optional[str] = typer.Option(None, "--profile", "-p",
                                              help="Device profile whose LUT sum the regressor corrects "
                                                   "(default: none, arch features only)."),
        holdout: float = typer.Option(0.25, "--holdout", help="Share of subnets held out for the report."),
        width: Optional[float] = typer.Option(None, "--width", help="Width multiplier of the subnets "
                                                                    "(default: the records', else 1.0)."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Train a latency regressor on measured subnets; prints held-out Spearman, MAPE and share within 10%."""
        check_out(out, "folder")
        import numpy as np

        from predictors.metrics import latency_metrics
        from predictors.regressors import LatencyRegressor, load_measured

        archs, ms = load_measured(data, width)
        if not 0 <= holdout < 1:
            raise UserError(f"--holdout: must be in [0, 1), got {holdout}")
        order = np.random.default_rng(seed).permutation(len(ms))
        n_test = int(round(len(ms) * holdout))
        test, train = order[:n_test], order[n_test:]
        reg = LatencyRegressor(model=model, profile=profile, random_state=seed).fit(archs[train], ms[train])
        if n_test:
            typer.echo(f"held-out ({n_test} subnets): {latency_metrics(ms[test], reg.predict(archs[test]))}")
        reg = LatencyRegressor(model=model, profile=profile, random_state=seed).fit(archs, ms)
        typer.echo(f"saved {reg.save(out)} (fitted on all {len(ms)} subnets; use it as --predictor {out})")

    @app.command("fit-few-shot")
    def fit_few_shot_cmd(
        data: Path = typer.Argument(..., help="A few subnets measured on the new device (same formats as "
                                              "fit-latency), e.g. 10."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to save the predictor into."),
        reference: Optional[List[str]] = typer.Option(
            None, "--reference", "-r", help="Known device profile to learn from (repeatable; default: every "
                                            "known profile that covers the subnets)."),
        width: Optional[float] = typer.Option(None, "--width", help="Width multiplier of the subnets."),
    ) -> None:
        """Build a latency predictor for a new device from a few measured subnets and known devices' LUTs."""
        check_out(out, "folder")
        from predictors.fewshot import fit_few_shot
        from predictors.regressors import load_measured

        archs, ms = load_measured(data, width)
        model = fit_few_shot(archs, ms, references=reference or None)
        typer.echo(f"model: log ms ~ {model.description} (leave-one-out RMSE of log ms: "
                   f"{model.loo_rmse_[0]:.3f}; references: {', '.join(model.reference_names_) or 'none'})")
        typer.echo(f"saved {model.save(out)} (use it as --predictor {out})")

