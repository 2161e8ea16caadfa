"""BatchNorm recalibration: re-estimate running statistics of a (sub)network on a few batches of data; and
BatchNorm folding into the preceding convolutions, as deployed (:func:`fold_bn`).

A subnet shares BN layers with every other subnet of the supernet, so its statistics must be re-estimated before
it is evaluated (OFA's ``set_running_statistics``). Works on a static network and on the supernet with a subnet
active; in the supernet only the channels the active subnet uses are re-estimated, the rest are kept.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import UserError


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], n_batches: int | None = None) -> nn.Module:
    """Reset every BatchNorm's statistics and set them to the exact average over ``batches`` (cumulative
    average, ``momentum=None``), forward only and without autograd; returns ``model`` in eval mode.

    ``batches`` yields input tensors or ``(input, ...)`` tuples (a data loader); at most ``n_batches`` are used.
    Only BN layers run in train mode (dropout stays off). Channels or layers the forward passes did not reach
    (inactive channels or blocks of a supernet) keep their previous statistics.
    """
    if n_batches is not None and n_batches < 1:
        raise UserError(f"n_batches: expected a positive integer, got {n_batches!r}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = {bn: (bn.momentum, bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
             for bn in bns}
    seen = {bn: 0 for bn in bns}

    def record(bn: nn.Module, args: tuple) -> None:
        seen[bn] = max(seen[bn], args[0].shape[1])

    hooks = [bn.register_forward_pre_hook(record) for bn in bns]
    model.eval()
    used = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for batch in batches:
            if n_batches is not None and used >= n_batches:
                break
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            used += 1
        if used == 0:
            raise UserError("recalibrate_bn: no batches to estimate BatchNorm statistics from")
    except BaseException:
        for bn, (_, mean, var, count) in saved.items():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
        raise
    else:
        for bn, (_, mean, var, count) in saved.items():
            n = seen[bn]
            bn.running_mean[n:] = mean[n:]
            bn.running_var[n:] = var[n:]
            if n == 0:
                bn.num_batches_tracked.copy_(count)
    finally:
        for h in hooks:
            h.remove()
        for bn, (momentum, *_) in saved.items():
            bn.momentum = momentum
        model.eval()
    return model


def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with each BatchNorm2d that directly follows a Conv2d inside an
    ``nn.Sequential`` folded into that conv (the BN becomes ``nn.Identity``)."""
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return folded
