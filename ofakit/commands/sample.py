"""`ofakit sample --n N --seed S`: random subnets of the space as arch files, to start with."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import typer

from ofakit.ofa_core.errors import UserError


def write_archs(archs: list[dict], out: Optional[Path]) -> str:
    """Write arch dicts: FOLDER/arch-000.json ... (a new folder appears whole), FILE.json (one arch, or a JSON
    list), FILE.jsonl (JSON lines), or stdout (JSON lines). Returns what was written, for the user."""
    from ofakit.ofa_core.fileio import atomic_write_text

    lines = [json.dumps(a, separators=(", ", ": ")) for a in archs]
    if out is None:
        typer.echo("\n".join(lines))
        return ""
    if out.suffix == ".jsonl":
        atomic_write_text(out, "\n".join(lines) + "\n")
        return f"wrote {len(archs)} archs to {out}"
    if out.suffix == ".json":
        atomic_write_text(out, (lines[0] if len(archs) == 1 else "[\n" + ",\n".join(lines) + "\n]") + "\n")
        return f"wrote {len(archs)} arch{'s' if len(archs) > 1 else ''} to {out}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file; give a folder, FILE.json or FILE.jsonl")
    names = [f"arch-{i:03d}.json" for i in range(len(archs))]
    if out.is_dir():
        for name, line in zip(names, lines):
            atomic_write_text(out / name, line + "\n")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        for name, line in zip(names, lines):
            (tmp / name).write_text(line + "\n", encoding="utf-8")
        os.replace(tmp, out)
    return f"wrote {names[0]}..{names[-1]} to {out}/" if len(names) > 1 else f"wrote {out / names[0]}"


def register(app: typer.Typer) -> None:
    """Add `ofakit sample` to `app`."""

    @app.command("sample")
    def sample(
        n: int = typer.Option(1, "--n", min=1, help="Number of subnets."),
        seed: int = typer.Option(0, "--seed"),
        width: float = typer.Option(1.0, "--width", help="Width multiplier (1.0, or 1.2 as OFA's Note10 profile)."),
        resolutions: Optional[str] = typer.Option(None, "--resolutions", "-r",
                                                  help="START:STOP:STEP or a comma list (default 128:224:4)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="A folder (arch-000.json, ...), FILE.json "
                                                                    "or FILE.jsonl (default: print JSON lines)."),
    ) -> None:
        """Draw random subnets uniformly (OFA's sampler) and write them as arch files for predict / export."""
        import numpy as np

        from ofakit.ofa_core.space import sample_batch, space_for_width

        from ..workflows import parse_resolutions

        spec = space_for_width(width)
        res = parse_resolutions(resolutions) if resolutions else None
        batch = sample_batch(np.random.default_rng(seed), n, spec, res)
        done = write_archs([a.to_dict() for a in batch.to_configs()], out)
        if done:
            typer.echo(done)
