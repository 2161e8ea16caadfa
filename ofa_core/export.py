"""Export of static networks (a subnet or a single operator) to ONNX and TFLite, checked against torch.

Both exporters work on an eval-mode copy of the model with every Conv2d -> BatchNorm2d pair folded into one
conv, use a fixed input shape (the example's, batch included) and write atomically (temp file in the target
folder, then ``os.replace``), so a crash never leaves a half-written model behind.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .bn import fold_bn
from .direct import ONNX_INPUT, ONNX_OUTPUT
from .errors import UserError


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike, suffix: str) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path``, on failure removed."""
    dest = Path(path)
    if not dest.parent.is_dir():
        raise UserError(f"{dest}: output folder {str(dest.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is ordinary output
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write ``model`` (BN folded, eval mode) as ONNX with the fixed input shape of ``example``.

    Uses the TorchScript-based exporter (``dynamo=False``): on these nets it is ~20x faster than the dynamo
    exporter and gives the same graph. Input/output are named ``input``/``output``.
    """
    import onnx

    folded = fold_bn(model)
    with _atomic_target(path, ".onnx") as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(folded, (example,), str(tmp), opset_version=opset, dynamo=False,
                              do_constant_folding=True, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT])
        bn = [n.name for n in onnx.load(str(tmp), load_external_data=False).graph.node
              if n.op_type == "BatchNormalization"]
        if bn:
            raise RuntimeError(f"BatchNormalization left unfolded in the ONNX graph: {bn[:3]}")
    return Path(path)


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Send file descriptors 1 and 2 (where the TFLite converter's C++ and Python logs go) to a temp file; the
    log is shown only if the block fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode("utf-8", "replace")[-4000:])


def export_tflite(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``model`` (BN folded, eval mode) as a TFLite flatbuffer with litert-torch; the input stays NCHW.
    The converter's log stays off the console unless it fails."""
    folded = fold_bn(model)
    with _quiet_fds(), warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            import litert_torch
        except ImportError as exc:  # the optional 'tflite' extra
            raise UserError(f"TFLite export needs litert-torch (pip install 'ofakit[tflite]'): {exc}") from None
        with _atomic_target(path, ".tflite") as tmp:
            litert_torch.convert(folded, (example,)).export(str(tmp))
    return Path(path)


EXPORTERS: dict[str, Callable[..., Path]] = {"onnx": export_onnx, "tflite": export_tflite}


def tflite_interpreter(path: str | os.PathLike, num_threads: int = 1):
    """A TFLite interpreter from ``ai_edge_litert`` or, failing that, ``tflite_runtime`` (tensors allocated)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise UserError("running a .tflite file needs ai-edge-litert or tflite-runtime") from None
    interp = Interpreter(model_path=str(path), num_threads=num_threads)
    interp.allocate_tensors()
    return interp


def run_file(path: str | os.PathLike, x: np.ndarray, fmt: str | None = None) -> np.ndarray:
    """Run an exported ONNX (onnxruntime, CPU, 1 thread) or TFLite file on one input array; the format is
    ``fmt`` ("onnx" or "tflite") or else the file suffix."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if fmt == "tflite":
        interp = tflite_interpreter(path)
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()
    raise UserError(f"{path}: unknown model format (expected .onnx or .tflite)")


def max_abs_diff(path: str | os.PathLike, model: nn.Module, example: torch.Tensor, fmt: str | None = None) -> float:
    """Largest absolute difference between the exported file's output and ``model``'s (eval mode) on ``example``;
    infinite when either output holds a NaN or an infinity (so no tolerance passes it)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(example).numpy()
    finally:
        model.train(was_training)
    out = run_file(path, example.detach().numpy(), fmt)
    if out.shape != ref.shape:
        raise RuntimeError(f"{path}: output shape {out.shape} differs from torch's {ref.shape}")
    diff = np.abs(out.astype(np.float64) - ref)
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")
