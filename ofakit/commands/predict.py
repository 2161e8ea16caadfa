"""`ofakit predict` (latency of subnets on a device) and the commands that fit predictors: `ofakit fit-accuracy`
(accuracy MLP), `ofakit fit-latency` (learned latency regressor), `ofakit fit-few-shot` (a new device from a few
measured subnets)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.fileio import check_out


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UserError(f"--hidden: expected comma-separated layer sizes like 400,400,400, got {text!r}")
    return sizes


def _save_target(out: Optional[Path], name: Optional[str]) -> Path:
    """Where a fitted latency predictor goes: ``--out FOLDER``, or ``--name NAME`` in the user's profile folder
    (then found by that name like a profile)."""
    from ofakit.device_profiles.store import write_folder

    if (out is None) == (name is None):
        raise UserError("give either --out FOLDER or --name NAME (saved in your profile folder)")
    return out if out is not None else write_folder(name)


NameOpt = typer.Option(None, "--name", help="Save into your profile folder under this name (use it as "
                                            "--predictor NAME) instead of --out.")


def register(app: typer.Typer) -> None:
    """Add `predict`, `fit-accuracy`, `fit-latency` and `fit-few-shot` to `app`."""

    @app.command("predict")
    def predict(
        archs: List[Path] = typer.Argument(..., help="Arch files: OFA's {\"ks\", \"e\", \"d\", \"r\"} dict as JSON, a JSON "
                                                     "list or JSON lines of them, or a CSV with an arch column (a "
                                                     "search front, validation.csv)."),
        profile: Optional[List[str]] = typer.Option(None, "--profile", "-p",
                                                    help="Device profile name or folder (default: this CPU's); "
                                                         "repeat for one column per profile."),
        width: Optional[float] = typer.Option(None, "--width",
                                              help="Width multiplier (default: the file's, else the profile's)."),
        predictor: Optional[str] = typer.Option(None, "--predictor",
                                                help="lut, calibrated, or a saved predictor (folder or name: "
                                                     "fit-latency, few-shot), which carries its own device data "
                                                     "(default: calibrated if the profile has a calibration, "
                                                     "else lut)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of a table."),
    ) -> None:
        """Print the predicted latency (ms) of each subnet, with the profile and predictor that gave it."""
        from ofakit.api import latency_columns
        from ofakit.ofa_core.records import read_arch_records

        records = [rec for path in archs for rec in read_arch_records(path)]
        columns = latency_columns(profile or [], predictor)
        values = [col.predict(records, width) for col in columns]
        if as_json:
            typer.echo(json.dumps({"columns": [{"profile": c.profile, "predictor": c.kind, "source": c.source}
                                               for c in columns],
                                   "rows": [{"arch": label, "ms": [v[i] for v in values]}
                                            for i, (label, _) in enumerate(records)]}, indent=1))
            return
        if len(records) == 1 and len(columns) == 1:
            typer.echo(f"{values[0][0]:.3f} ms  ({columns[0].source})")
            return
        heads = [c.title for c in columns]
        pad = max(len(label) for label, _ in records + [("arch", None)])
        typer.echo("  ".join([f"{'arch':<{pad}}", *(f"{h:>12}" for h in heads)]))
        for i, (label, _) in enumerate(records):
            typer.echo("  ".join([f"{label:<{pad}}", *(f"{v[i]:>12.3f}" for v in values)]))
        typer.echo("ms from: " + "; ".join(f"{c.title} = {c.source}" for c in columns))

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
        from ofakit.predictors.accuracy import AccuracyMLP, accuracy_metrics, load_accuracy_jsonl

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
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to save the regressor into."),
        name: Optional[str] = NameOpt,
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

        from ofakit.predictors.metrics import latency_metrics
        from ofakit.predictors.regressors import LatencyRegressor, load_measured

        dest = _save_target(out, name)
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
        typer.echo(f"saved {reg.save(dest)} (fitted on all {len(ms)} subnets; use it as --predictor "
                   f"{name or dest})")

    @app.command("fit-few-shot")
    def fit_few_shot_cmd(
        data: Path = typer.Argument(..., help="A few subnets measured on the new device (same formats as "
                                              "fit-latency), e.g. 10."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to save the predictor into."),
        name: Optional[str] = NameOpt,
        reference: Optional[List[str]] = typer.Option(
            None, "--reference", "-r", help="Known device profile to learn from (repeatable; default: every "
                                            "known profile that covers the subnets)."),
        width: Optional[float] = typer.Option(None, "--width", help="Width multiplier of the subnets."),
    ) -> None:
        """Build a latency predictor for a new device from a few measured subnets and known devices' LUTs."""
        check_out(out, "folder")
        from ofakit.predictors.fewshot import fit_few_shot
        from ofakit.predictors.regressors import load_measured

        dest = _save_target(out, name)
        archs, ms = load_measured(data, width)
        model = fit_few_shot(archs, ms, references=reference or None)
        typer.echo(f"model: log ms ~ {model.description} (leave-one-out RMSE of log ms: "
                   f"{model.loo_rmse_[0]:.3f}; references: {', '.join(model.reference_names_) or 'none'})")
        typer.echo(f"saved {model.save(dest)} (use it as --predictor {name or dest})")

