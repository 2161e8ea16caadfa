"""Supernet weight files: ofakit's own state dicts and OFA's released checkpoints, loaded as they are.

OFA's checkpoints (``ofa_mbv3_d234_e346_k357_w1.0`` / ``w1.2``) hold ``{"state_dict": ...}`` in OFA's module layout:
``first_conv``, ``blocks.0`` (the first block), ``blocks.1..20`` (dynamic MBConvs with ``inverted_bottleneck``,
``depth_conv`` (+ ``se``), ``point_linear``, each a dynamic op around a plain conv / BN, hence ``conv.conv`` and
``bn.bn``; older files say ``mobile_inverted_conv`` instead of ``conv``), ``final_expand_layer``,
``feature_mix_layer`` and ``classifier.linear``. :func:`ofakit_keys` renames such a dict to
:class:`~ofakit.ofa_core.supernet.OFAMobileNetV3`'s names; the tensors are used as they are (same shapes, same kernel
transformation convention).
"""
from __future__ import annotations

import os
import re
from typing import Any

import torch

from .errors import UserError

_FIRST = (("first_conv.", "stem."), ("blocks.0.conv.depth_conv.", "first_block.depthwise."),
          ("blocks.0.conv.point_linear.", "first_block.project."), ("final_expand_layer.", "final_expand."),
          ("feature_mix_layer.", "feature_mix."))
_BLOCK = re.compile(r"blocks\.(\d+)\.conv\.(.+)")
_IN_BLOCK = (("inverted_bottleneck.conv.conv.", "expand_conv."), ("inverted_bottleneck.bn.bn.", "expand_bn."),
             ("depth_conv.conv.conv.weight", "dw_weight"), ("depth_conv.bn.bn.", "dw_bn."),
             ("depth_conv.se.fc.", "se."), ("point_linear.conv.conv.", "project_conv."),
             ("point_linear.bn.bn.", "project_bn."))
_MATRIX = re.compile(r"depth_conv\.conv\.(\d+to\d+)_matrix")


def is_ofa_layout(state: dict[str, Any]) -> bool:
    """Whether ``state`` uses OFA's module names (its stem is ``first_conv``)."""
    return any(k.startswith("first_conv.") for k in state)


_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _rename(key: str) -> str:
    """ofakit's name of OFA's ``key``; a key of no known parameter is returned as it is."""
    if key.rsplit(".", 1)[-1] not in _LEAVES and not key.endswith("_matrix"):
        return key
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    for old, new in _FIRST:
        if key.startswith(old):
            return new + key[len(old):]
    m = _BLOCK.fullmatch(key)
    if m is None or m.group(1) == "0":
        return key
    block, rest = int(m.group(1)) - 1, m.group(2)
    mm = _MATRIX.fullmatch(rest)
    if mm:
        return f"blocks.{block}.kernel_transforms.{mm.group(1)}"
    for old, new in _IN_BLOCK:
        if rest.startswith(old):
            return f"blocks.{block}.{new}{rest[len(old):]}"
    return key


def ofakit_keys(state: dict[str, Any]) -> dict[str, Any]:
    """OFA's state dict with ofakit's key names (keys it does not know are kept, so a strict load names them)."""
    return {_rename(k): v for k, v in state.items()}


def read_supernet_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The supernet weights in a file: ofakit's checkpoint (``model``), a bare state dict, or OFA's released
    checkpoint (``state_dict`` in OFA's layout, renamed). Loaded with ``weights_only=True``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file") from None
    except Exception as exc:  # weights_only refuses pickled code; other files are not torch archives
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: not a torch state dict loadable with weights_only=True ({first[:160]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: no supernet state dict in the file (expected tensors, or a dict holding them "
                        f"under 'state_dict' or 'model')")
    state = ofakit_keys(obj) if is_ofa_layout(obj) else obj
    if "classifier.linear.weight" not in state:
        raise UserError(f"{path}: not an OFA-MobileNetV3 supernet state dict (no classifier.linear.weight)")
    return state


def _names(keys: set[str], n: int = 3) -> str:
    shown = sorted(keys)[:n]
    return ", ".join(shown) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def width_of(state: dict[str, torch.Tensor], candidates: tuple[float, ...] = (1.0, 1.2)) -> float | None:
    """The width multiplier whose supernet has exactly ``state``'s tensor shapes, or None."""
    from .supernet import OFAMobileNetV3

    n_classes = int(state["classifier.linear.weight"].shape[0])
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for w in candidates:
        ref = {k: tuple(v.shape) for k, v in OFAMobileNetV3(w, n_classes).state_dict().items()}
        if ref == shapes:
            return w
    return None


def load_supernet_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` strictly into ``model`` (BN batch counters it lacks are kept at 0). A mismatch is one line:
    the missing and unexpected keys, or, when only shapes differ, the width the weights are for."""
    own = model.state_dict()
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        parts = [f"missing {len(missing)} key(s): {_names(missing)}" if missing else "",
                 f"unexpected {len(unexpected)} key(s): {_names(unexpected)}" if unexpected else ""]
        raise UserError(f"{where}: not this supernet's weights (in ofakit's key names: "
                        f"{'; '.join(p for p in parts if p)})")
    bad = {k for k in own if tuple(own[k].shape) != tuple(state[k].shape)}
    if bad:
        spec = getattr(model, "spec", None)
        have = getattr(spec, "width_mult", None)
        w = width_of(state)
        if w is not None and have is not None:
            raise UserError(f"{where}: weights of a width-{w:g} supernet, the subnet asked for has width {have:g} "
                            f"(give an arch of width {w:g}, e.g. --width {w:g})")
        k = sorted(bad)[0]
        raise UserError(f"{where}: {len(bad)} tensor(s) of another shape than this supernet's, e.g. {k}: "
                        f"{tuple(state[k].shape)} vs {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True)
