"""Accuracy of subnets: extract, re-estimate BatchNorm statistics on training images, measure on the held-out split.

:func:`crop_depthwise_to_input` is an exact rewrite that makes small-resolution evaluation cheap: a 'same'-padded
k x k depthwise conv on an h x h map only ever reaches the centre ``2h - 1`` taps, and PyTorch's CPU kernels are
very slow when the padding exceeds the map (7x7 on 2x2 or 1x1 maps at 32-64 px inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..bn import recalibrate_bn
from ..ops import BLOCK
from ..space import D_CHOICES, E_CHOICES, KS_CHOICES, N_BLOCKS, N_STAGES, ArchConfig, sample_batch, space_for_width
from ..static import MBConv, StaticSubnet
from ..supernet import OFAMobileNetV3
from .data import ImageSource, Splits, eval_batches


def crop_depthwise(conv: nn.Conv2d, size: int) -> None:
    """Shrink a 'same'-padded depthwise ``conv`` to the taps an input of ``size`` x ``size`` can reach."""
    k = conv.kernel_size[0]
    keep = min(k, 2 * size - 1)
    if keep >= k:
        return
    s = (k - keep) // 2
    conv.weight = nn.Parameter(conv.weight.detach()[:, :, s:s + keep, s:s + keep].clone(),
                               requires_grad=conv.weight.requires_grad)
    conv.kernel_size, conv.padding = (keep, keep), (keep // 2, keep // 2)


def crop_depthwise_to_input(net: StaticSubnet) -> StaticSubnet:
    """Exact rewrite of ``net`` for its own resolution (``net.ops``): depthwise kernels cropped to their input.

    The outputs are unchanged (the dropped taps only ever multiply zero padding); returns ``net``.
    """
    for op, layer in zip(net.ops, net.layers):
        if op.kind == BLOCK and isinstance(layer, MBConv):
            crop_depthwise(layer.depthwise.conv, op.in_shape[0])
    return net


class BatchCache:
    """Evaluation batches cut once and kept on the device they are used on, keyed by (images, resolution, batch
    size, crop, device): measuring many subnets at a few resolutions re-uses the crops, which on a GPU cost more
    than running a small subnet over them. Holds at most ``max_bytes``; batches beyond that are cut each time."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes, self.bytes = max_bytes, 0
        self._store: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def batches(self, source: ImageSource, indices: np.ndarray, r: int, batch_size: int, center_crop: float,
                device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        key = (id(source), len(indices), hash(np.asarray(indices).tobytes()), r, batch_size, center_crop,
               str(device))
        hit = self._store.get(key)
        if hit is not None:
            return hit
        stream = ((x.to(device), y.to(device)) for x, y in eval_batches(source, indices, r, batch_size, center_crop))
        size = len(indices) * 3 * r * r * 4
        if self.bytes + size > self.max_bytes:
            return stream
        self.bytes += size
        self._store[key] = out = list(stream)
        return out


@torch.no_grad()
def static_accuracy(net: StaticSubnet, r: int, splits: Splits, batch_size: int = 200, center_crop: float = 0.875,
                    recalibrate: bool = True, cache: BatchCache | None = None) -> float:
    """Top-1 (fraction) of a static net on the held-out split at resolution ``r``, BN statistics first
    re-estimated on the calibration images (OFA's ``set_running_statistics``) unless ``recalibrate`` is False.
    ``cache`` keeps the cut batches for the next call."""
    device = next(net.parameters()).device
    cache = cache or BatchCache(0)
    src = splits.source
    if recalibrate:
        recalibrate_bn(net, (x for x, _ in cache.batches(src, splits.calib, r, batch_size, center_crop, device)))
    net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.inference_mode():
        for x, y in cache.batches(src, splits.holdout, r, batch_size, center_crop, device):
            correct += (net(x).argmax(1) == y).sum()
    return int(correct) / len(splits.holdout)


def subnet_accuracy(model: OFAMobileNetV3, arch: ArchConfig, splits: Splits, batch_size: int = 200,
                    center_crop: float = 0.875, cache: BatchCache | None = None) -> float:
    """Top-1 (fraction) of ``arch`` taken from the supernet (no fine-tuning): a static copy, its BatchNorm
    re-estimated, measured on the held-out split at ``arch.r``. The supernet itself is left unchanged."""
    model.set_active_subnet(arch)
    net = crop_depthwise_to_input(model.get_active_subnet())
    return static_accuracy(net, arch.r, splits, batch_size, center_crop, cache=cache)


@dataclass(frozen=True)
class NamedArch:
    name: str
    arch: ArchConfig


def reference_archs(width: float, resolutions: tuple[int, ...], n_random: int, seed: int = 0) -> list[NamedArch]:
    """The largest subnet at the largest resolution, the smallest at the smallest, and ``n_random`` random ones
    (the same ones for a given seed, so phases can be compared)."""
    hi, lo = max(resolutions), min(resolutions)
    out = [NamedArch("largest", ArchConfig((max(KS_CHOICES),) * N_BLOCKS, (max(E_CHOICES),) * N_BLOCKS,
                                           (max(D_CHOICES),) * N_STAGES, hi, width)),
           NamedArch("smallest", ArchConfig((min(KS_CHOICES),) * N_BLOCKS, (min(E_CHOICES),) * N_BLOCKS,
                                            (min(D_CHOICES),) * N_STAGES, lo, width))]
    if n_random:
        batch = sample_batch(np.random.default_rng(seed), n_random, space_for_width(width), resolutions)
        out += [NamedArch(f"random-{i}", a) for i, a in enumerate(batch.to_configs())]
    return out


def arch_record(arch: ArchConfig) -> dict:
    """OFA's arch dict with ``r`` as an integer and the width: the accuracy-dataset record layout."""
    return {"ks": list(arch.ks), "e": list(arch.e), "d": list(arch.d), "r": arch.r, "width": arch.width}

