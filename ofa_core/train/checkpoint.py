"""Checkpoints: plain state dicts written atomically (temp file, fsync, rename) and read with
``torch.load(weights_only=True)`` -- never an unpickled object, never a half-written file."""
from __future__ import annotations

import io
import json
import os
from typing import Any

import torch

from ..errors import UserError
from ..fileio import atomic_write_bytes
from ..supernet_weights import is_ofa_layout, load_supernet_state, ofakit_keys


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically save a dict of tensors, numbers, strings and lists/dicts of them."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint` (weights only); errors name the file."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch raises several types for foreign or damaged files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: not a loadable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint (expected a dict, got {type(state).__name__})")
    return state


def model_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights in a checkpoint: its ``model`` (or OFA's ``state_dict``) entry, or the file itself if it
    is a bare state dict; OFA's key layout is renamed to ofakit's."""
    state = load_checkpoint(path)
    sd = state.get("model", state.get("state_dict", state))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: no model state dict in the checkpoint")
    return ofakit_keys(sd) if is_ofa_layout(sd) else sd


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` strictly into ``model``; a mismatch is one line naming ``where`` and the real cause
    (missing / unexpected keys, or the width the weights are for)."""
    load_supernet_state(model, state, where)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
