"""`ofakit profiles list | show | compare`: the device profiles and saved latency predictors this install knows.

Shipped profiles are read-only; yours live in your profile folder (``$OFAKIT_PROFILE_DIR``, else
``$XDG_DATA_HOME/ofakit/profiles``, else ``~/.local/share/ofakit/profiles``) and shadow a shipped one of the same
name.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ofakit.ofa_core.errors import UserError

profiles_app = typer.Typer(no_args_is_help=True, help="List, show and compare device profiles.")

SOURCES = {"measured": "measured", "ofa-import": "imported", "few-shot": "few-shot",
           "latency-regressor": "fitted"}
"""How a profile or saved predictor came to be, by its ``source`` prefix or predictor kind."""


def _source(raw: str) -> str:
    return SOURCES.get(raw.split(":")[0], raw or "?")


def _validation(val: dict[str, Any]) -> str:
    """``n=100 ±10%: 100% RMSE 4.0% (calibrated)`` from a profile's stored validation figures, or ``-``."""
    for row, label in (("corrected", "calibrated"), ("raw", "LUT sum")):
        m = val.get(row)
        if isinstance(m, dict) and "within10" in m:
            return f"n={val.get('n', m.get('n', '?'))} ±10%: {m['within10']:.0f}% RMSE {m['rmse_pct']:.1f}% ({label})"
    return "-"


def _resolutions(res: list[int]) -> str:
    if len(res) > 2 and len({b - a for a, b in zip(res, res[1:])}) == 1:
        return f"{res[0]}:{res[-1]}:{res[1] - res[0]}"
    return ",".join(str(r) for r in res)


def describe(folder: Path) -> dict[str, Any]:
    """One row of `profiles list` for a profile or saved predictor folder (a damaged one says so)."""
    from ofakit.device_profiles import store

    where = "shipped" if store.is_shipped(folder) else "yours"
    row: dict[str, Any] = {"name": folder.name, "where": where, "path": str(folder)}
    try:
        if (folder / "profile.json").is_file():
            meta = json.loads((folder / "profile.json").read_text(encoding="utf-8"))
            env = meta.get("environment") or {}
            row.update(device=meta.get("device", ""), backend=meta.get("backend", ""),
                       threads=meta.get("threads"), width=meta.get("width"),
                       resolutions=_resolutions(list(meta.get("resolutions") or [])),
                       source=_source(str(meta.get("source", ""))), validation=_validation(meta.get("validation") or {}),
                       emulated="yes" if env.get("emulated") else "no",
                       calibrated="yes" if meta.get("calibration") else "no")
        else:
            body = json.loads((folder / "predictor.json").read_text(encoding="utf-8"))
            meta = body.get("meta") or {}
            row.update(device="", backend="", threads=None, width=meta.get("width"), resolutions="",
                       source=_source(str(body.get("kind", ""))), validation="-", emulated="no", calibrated="-")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        row.update(source=f"damaged ({exc.__class__.__name__})")
    return row


COLUMNS = ("name", "device", "backend", "threads", "width", "resolutions", "source", "calibrated", "validation",
           "emulated", "where")


@profiles_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Every profile and saved latency predictor, yours first shadowing shipped ones of the same name."""
    from ofakit.device_profiles import store

    rows = []
    for name, folders in sorted(store.entries().items()):
        row = describe(folders[0])
        if len(folders) > 1:
            row["where"] += f" (shadows {describe(folders[1])['where']})"
        rows.append(row)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    cells = [[("-" if row.get(c) is None else str(row.get(c, ""))) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(COLUMNS)]
    typer.echo("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip())
    for r in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    typer.echo(f"your profile folder: {store.user_dir()}")


@profiles_app.command("show")
def show_cmd(name: str = typer.Argument(..., help="Profile name or folder.")) -> None:
    """What a profile describes, how it was made and how well it predicts."""
    from ofakit.device_profiles import load_profile
    from ofakit.predictors.registry import default_predictor

    prof = load_profile(name)
    m = prof.meta
    cal, env = m.calibration or {}, m.environment or {}
    lines = [
        ("name", m.name), ("folder", str(prof.path)), ("device", m.device), ("backend", m.backend),
        ("threads", m.threads), ("batch", m.batch), ("mode", m.mode or "-"), ("width", m.width),
        ("resolutions", _resolutions(list(m.resolutions))), ("operators", len(prof)),
        ("source", f"{_source(m.source)} ({m.source})"), ("created", m.created or "-"),
        ("emulated", "yes" if env.get("emulated") else "no"),
        ("cpu", env.get("cpu_model", "-")), ("runtime", " ".join(f"{k} {v}" for k, v in (env.get("runtime") or {}).items()) or "-"),
        ("default predictor", default_predictor(prof)),
    ]
    if cal:
        terms = " + ".join(f"{v:.4g}*{f}" for f, v in zip(cal.get("features", []), cal.get("coef", [])))
        lines.append(("calibration", f"ms = {terms} + {cal.get('intercept', 0):.4g} on {cal.get('n_fit', '?')} "
                                     f"subnets (fit RMSE {cal.get('fit_rmse_pct', float('nan')):.2f}%)"))
        state = cal.get("state")
        if isinstance(state, dict) and "factor" in state:
            lines.append(("device state", f"factor {state['factor']:.3f} from {state.get('date', '?')}"))
    lines.append(("validation", _validation(m.validation or {})))
    if m.errors:
        lines.append(("failed ops", len(m.errors)))
    pad = max(len(k) for k, _ in lines)
    for k, v in lines:
        typer.echo(f"{k:<{pad}}  {'-' if v is None else v}")


@profiles_app.command("compare")
def compare_cmd(
    a: str = typer.Argument(..., help="First profile (name or folder)."),
    b: str = typer.Argument(..., help="Second profile, of the same width."),
    n: int = typer.Option(1000, "--n", min=3, help="Random subnets predicted on both."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Predict the same random subnets on two profiles (each with its default predictor): the latency ratio B/A
    (median and spread) and whether they rank subnets alike (Spearman)."""
    import numpy as np
    from scipy.stats import spearmanr

    from ofakit.device_profiles import load_profile
    from ofakit.ofa_core.space import sample_batch, space_for_width
    from ofakit.predictors.registry import create_predictor, default_predictor

    pa, pb = load_profile(a), load_profile(b)
    if pa.meta.width != pb.meta.width:
        raise UserError(f"profiles {pa.name!r} (width {pa.meta.width}) and {pb.name!r} (width {pb.meta.width}) "
                        f"describe different supernets; compare profiles of one width")
    res = sorted(set(pa.meta.resolutions) & set(pb.meta.resolutions))
    if not res:
        raise UserError(f"profiles {pa.name!r} and {pb.name!r} share no resolution")
    batch = sample_batch(np.random.default_rng(seed), n, space_for_width(pa.meta.width), res)
    kinds = [default_predictor(p) for p in (pa, pb)]
    ya, yb = (create_predictor(k, p).predict(batch) for k, p in zip(kinds, (pa, pb)))
    ratio = yb / ya
    q10, q50, q90 = np.quantile(ratio, [0.1, 0.5, 0.9])
    rho = float(spearmanr(ya, yb).statistic)
    typer.echo(f"{n} random subnets (seed {seed}, width {pa.meta.width}, resolutions {_resolutions(res)}):")
    for p, k, y in ((pa, kinds[0], ya), (pb, kinds[1], yb)):
        typer.echo(f"  {p.name} ({k}): median {np.median(y):.3f} ms, range {y.min():.3f}..{y.max():.3f} ms")
    typer.echo(f"  ratio {pb.name} / {pa.name}: median {q50:.3f}, 10-90% {q10:.3f}..{q90:.3f}")
    typer.echo(f"  Spearman (same ranking = 1): {rho:.4f}")


def register(app: typer.Typer) -> None:
    """Add `ofakit profiles` to `app`."""
    app.add_typer(profiles_app, name="profiles")
