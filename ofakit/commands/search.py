"""`ofakit search`: evolutionary search for the most accurate subnet under latency (one or several devices),
FLOPs and parameter bounds; `--sweep` traces the accuracy-latency front.

Examples::

    ofakit search --profile note10 --latency 25 --accuracy-predictor ofa --seed 1 --out a.json
    ofakit search --profile note10 --latency 25 --profile my-phone --latency 8 --flops 400 ...
    ofakit search --profile note10 --sweep 15:35:2 --accuracy-predictor ofa --out front.csv
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.fileio import check_out

OFA_RESOLUTIONS = "160,176,192,208,224"  # predictors.constraints.OFA_RESOLUTIONS, as the option's text


def parse_sweep(text: str) -> list[float]:
    """``LO:HI:STEP`` (inclusive) -> bounds."""
    try:
        lo, hi, step = (float(p) for p in text.split(":"))
    except ValueError:
        raise UserError(f"--sweep: expected LO:HI:STEP, got {text!r}") from None
    if not (step > 0 and hi >= lo > 0):
        raise UserError(f"--sweep: need 0 < LO <= HI and STEP > 0, got {text!r}")
    n = int((hi - lo) / step + 1e-9) + 1
    return [round(lo + i * step, 10) for i in range(n)]


def register(app: typer.Typer) -> None:
    """Add `ofakit search` to `app`."""

    @app.command("search")
    def search(
        accuracy_predictor: str = typer.Option(..., "--accuracy-predictor", "-a",
                                               help="ofa (OFA's pretrained predictor, width 1.2, shipped), ofa:PATH or "
                                                    "mlp:PATH (fit-accuracy)."),
        profile: List[str] = typer.Option([], "--profile", "-p", help="Device profile; repeat for several."),
        latency: List[float] = typer.Option([], "--latency", "-l", help="Latency bound (ms) of each --profile, "
                                                                         "in order."),
        flops: Optional[float] = typer.Option(None, "--flops", help="FLOPs bound (millions of MACs, as OFA)."),
        params: Optional[float] = typer.Option(None, "--params", help="Parameter bound (millions)."),
        resolutions: str = typer.Option(OFA_RESOLUTIONS, "--resolutions", "-r", help="Comma list or "
                                                                                     "START:STOP:STEP."),
        width: Optional[float] = typer.Option(None, "--width", help="Width multiplier (default: the profiles', "
                                                                    "else 1.0)."),
        population: int = typer.Option(100, "--population", help="Population size."),
        generations: Optional[int] = typer.Option(None, "--generations", help="Generations (default 100; with "
                                                                                "--ofa 500, as OFA)."),
        parent_ratio: float = typer.Option(0.25, "--parent-ratio"),
        mutation_ratio: float = typer.Option(0.5, "--mutation-ratio"),
        mutate_prob: float = typer.Option(0.1, "--mutate-prob", help="Per block, stage depth and resolution."),
        ofa: bool = typer.Option(False, "--ofa", help="OFA's plain algorithm: 500 generations, no duplicate "
                                                      "removal, no final local search."),
        seed: int = typer.Option(0, "--seed"),
        sweep: Optional[str] = typer.Option(None, "--sweep", help="LO:HI:STEP: sweep the first profile's "
                                                                  "latency bound; --out names the CSV."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Arch JSON (ready for `ofakit export`); "
                                                                     "with --sweep the front's CSV."),
        predictor: List[str] = typer.Option([], "--predictor", help="Latency predictor of every --profile (lut or "
                                                                     "calibrated; default: calibrated where the "
                                                                     "profile has a calibration, else lut), or a "
                                                                     "saved predictor folder (fit-latency, "
                                                                     "few-shot: a device of its own, its --latency "
                                                                     "after the profiles'); repeatable."),
    ) -> None:
        """Find the most accurate subnet that meets every bound (predicted accuracy, predicted latency)."""
        check_out(out, "file")
        from threadpoolctl import threadpool_limits

        from ofakit.device_profiles import atomic_write_text
        from ofakit.ofa_core.search import EvolutionSearch, SearchConfig
        from ofakit.ofa_core.search import sweep as run_sweep
        from ofakit.predictors.accuracy import load_accuracy_predictor
        from ofakit.api import write_front
        from ofakit.predictors.constraints import build_constraints
        from ofakit.predictors.registry import is_predictor_folder

        from ..workflows import parse_resolutions

        res = parse_resolutions(resolutions)
        bounds = parse_sweep(sweep) if sweep is not None else []
        if sweep is not None and out is None:
            raise UserError("--sweep: give --out FILE.csv for the front")
        acc = load_accuracy_predictor(accuracy_predictor)
        saved = [p for p in predictor if is_predictor_folder(p)]
        named = [p for p in predictor if p not in saved]
        if len(named) > 1:
            raise UserError(f"--predictor: name one registered predictor for every --profile, got {named}")
        constraints, w = build_constraints(profile, latency, flops, params, width, res, sweep is not None,
                                           named[0] if named else None, saved, getattr(acc, "width_", None))
        kw: dict[str, Any] = dict(population=population, parent_ratio=parent_ratio, mutation_ratio=mutation_ratio,
                                  mutate_prob=mutate_prob, resolution_mutate_prob=mutate_prob, resolutions=res, width=w)
        if generations is not None:
            kw["generations"] = generations
        config = SearchConfig.ofa(**kw) if ofa else SearchConfig(**kw)
        with threadpool_limits(1):  # the predictors' small matrix products run fastest on one BLAS thread
            if sweep is not None:
                results = run_sweep(acc, constraints, bounds, 0, config, seed)
            else:
                result = EvolutionSearch(acc, constraints, config).run(seed)
        if sweep is not None:
            csv_path, png = write_front(results, bounds, constraints, out)
            typer.echo(f"{'bound':>8}  {'top-1 %':>8}  " + "  ".join(f"{c.name:>18}" for c in constraints))
            for b, r in zip(bounds, results):
                typer.echo(f"{b:8.4g}  {100 * r.accuracy:8.3f}  "
                           + "  ".join(f"{r.values[c.name]:18.4g}" for c in constraints))
            typer.echo(f"wrote {csv_path} and {png}")
            return
        a = result.arch
        typer.echo(f"best subnet (seed {seed}, {result.evaluations} accuracy predictions, {result.seconds:.2f} s):")
        typer.echo(f"  ks={list(a.ks)}")
        typer.echo(f"  e={list(a.e)}")
        typer.echo(f"  d={list(a.d)} r={a.r} width={a.width}")
        typer.echo(f"  predicted top-1: {100 * result.accuracy:.2f}%")
        for c in constraints:
            typer.echo(f"  {c.name}: {c.describe(result.values[c.name])} (bound {c.describe(c.bound)})")
        typer.echo(f"  top-1 from: accuracy predictor {accuracy_predictor}")
        for c in constraints:
            if c.source:
                typer.echo(f"  {c.name} from: {c.source}")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, a.to_json() + "\n")
            typer.echo(f"wrote {out}")
