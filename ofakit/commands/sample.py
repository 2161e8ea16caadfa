"""`ofakit sample --n N --seed S`: random subnets of the space as arch files, to start with."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


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

        from ofakit.ofa_core.records import arch_line, write_arch_file
        from ofakit.ofa_core.space import sample_batch, space_for_width

        from ..workflows import parse_resolutions

        spec = space_for_width(width)
        res = parse_resolutions(resolutions) if resolutions else None
        batch = sample_batch(np.random.default_rng(seed), n, spec, res)
        archs = [a.to_dict() for a in batch.to_configs()]
        typer.echo(write_arch_file(archs, out) if out is not None else "\n".join(map(arch_line, archs)))
