"""`ofakit profiles list | show | compare`: the device profiles and saved latency predictors this install knows.

Shipped profiles are read-only; yours live in your profile folder (``$OFAKIT_PROFILE_DIR``, else
``$XDG_DATA_HOME/ofakit/profiles``, else ``~/.local/share/ofakit/profiles``) and shadow a shipped one of the same
name.
"""
from __future__ import annotations

import json

import typer

profiles_app = typer.Typer(no_args_is_help=True, help="List, show and compare device profiles.")

COLUMNS = ("name", "device", "backend", "threads", "width", "resolutions", "source", "calibrated", "validation",
           "emulated", "where")


@profiles_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Every profile and saved latency predictor, yours first shadowing shipped ones of the same name."""
    from ofakit.device_profiles import store

    rows = store.catalog()
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
    from ofakit.device_profiles.store import resolutions_text, source_kind, validation_text
    from ofakit.predictors.registry import default_predictor

    prof = load_profile(name)
    m = prof.meta
    cal, env = m.calibration or {}, m.environment or {}
    lines = [
        ("name", m.name), ("folder", str(prof.path)), ("device", m.device), ("backend", m.backend),
        ("threads", m.threads), ("batch", m.batch), ("mode", m.mode or "-"), ("width", m.width),
        ("resolutions", resolutions_text(list(m.resolutions))), ("operators", len(prof)),
        ("source", f"{source_kind(m.source)} ({m.source})"), ("created", m.created or "-"),
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
    lines.append(("validation", validation_text(m.validation or {})))
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

    from ofakit.api import compare_profiles
    from ofakit.device_profiles.store import resolutions_text

    c = compare_profiles(a, b, n, seed)
    typer.echo(f"{n} random subnets (seed {seed}, width {c.width}, resolutions {resolutions_text(c.resolutions)}):")
    for name, kind, y in ((c.a, c.kinds[0], c.ms_a), (c.b, c.kinds[1], c.ms_b)):
        typer.echo(f"  {name} ({kind}): median {np.median(y):.3f} ms, range {y.min():.3f}..{y.max():.3f} ms")
    q10, q50, q90 = np.quantile(c.ratio, [0.1, 0.5, 0.9])
    typer.echo(f"  ratio {c.b} / {c.a}: median {q50:.3f}, 10-90% {q10:.3f}..{q90:.3f}")
    typer.echo(f"  Spearman (same ranking = 1): {c.spearman:.4f}")


def register(app: typer.Typer) -> None:
    """Add `ofakit profiles` to `app`."""
    app.add_typer(profiles_app, name="profiles")
