"""`ofakit export ARCH.json --format onnx|tflite --out FILE`: export one subnet as a deployable model."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ofakit.ofa_core.fileio import check_out

CHECK_TOLERANCE = 1e-4


class Format(str, Enum):
    onnx = "onnx"
    tflite = "tflite"


def register(app: typer.Typer) -> None:
    """Add `ofakit export` to `app`."""

    @app.command("export")
    def export(
        arch: Path = typer.Argument(..., help="Arch JSON: OFA's {\"ks\", \"e\", \"d\", \"r\"} dict."),
        fmt: Format = typer.Option(..., "--format", "-f", help="Model format."),
        out: Path = typer.Option(..., "--out", "-o", help="Output file (written atomically)."),
        width: Optional[float] = typer.Option(None, "--width", help="Width multiplier (default: the file's or 1.0)."),
        weights: Optional[Path] = typer.Option(
            None, "--weights", help="Supernet weights: a checkpoint of `ofakit train` or OFA's released "
                                 "checkpoint as it is; default: fresh weights."),
        seed: int = typer.Option(0, "--seed", help="Seed for fresh weights and the check input."),
        check: bool = typer.Option(False, "--check", help="Run the file and compare with torch (max abs diff)."),
    ) -> None:
        """Export the subnet of ARCH.json (BN folded, batch 1, NCHW input) to ONNX or TFLite."""
        check_out(out, "file")
        import torch

        from ofakit.ofa_core.export import EXPORTERS, max_abs_diff
        from ofakit.ofa_core.space import load_arch
        from ofakit.ofa_core.static import build_subnet

        cfg = load_arch(str(arch), width)
        torch.manual_seed(seed)
        if weights is not None:
            from ofakit.ofa_core.supernet import OFAMobileNetV3
            from ofakit.ofa_core.supernet_weights import load_supernet_state, read_supernet_state

            state = read_supernet_state(weights)
            net = OFAMobileNetV3(width=cfg.width, n_classes=int(state["classifier.linear.weight"].shape[0]))
            load_supernet_state(net, state, str(weights))
            net.set_active_subnet(cfg)
            model = net.get_active_subnet().eval()
        else:
            model = build_subnet(cfg).eval()
        example = torch.randn(1, 3, cfg.r, cfg.r)
        path = EXPORTERS[fmt.value](model, example, out)
        typer.echo(f"wrote {path} ({fmt.value}, r={cfg.r}, width={cfg.width}, {path.stat().st_size / 1e6:.1f} MB)")
        if check:
            diff = max_abs_diff(path, model, example, fmt.value)
            typer.echo(f"max |{fmt.value} - torch| = {diff:.2e}")
            if not diff <= CHECK_TOLERANCE:  # NaN-safe
                typer.echo(f"ofakit: check failed: difference above {CHECK_TOLERANCE:g}", err=True)
                raise typer.Exit(1)
