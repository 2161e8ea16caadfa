"""Static (non-elastic) torch modules built from :class:`~ofakit.ofa_core.ops.OpSpec`.

One builder per operator kind, kept in a small registry. The same builders make a single operator for the
profiler and a whole subnet (:func:`build_subnet`), so an op measured alone and the op inside a network are the
same module. Layer structure follows OFA's MobileNetV3 layers (conv -> BN -> act; SE with ReLU and h-sigmoid).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from .ops import BLOCK, CLASSIFIER, FEATURE_MIX, FINAL_EXPAND, POOL, STEM, OpSpec, subnet_ops
from .space import ArchConfig


def activation(hswish: bool) -> nn.Module:
    return nn.Hardswish() if hswish else nn.ReLU()


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation; 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: nn.Module | None = None):
        layers: OrderedDict[str, nn.Module] = OrderedDict({
            "conv": nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            "bn": nn.BatchNorm2d(cout),
        })
        if act is not None:
            layers["act"] = act
        super().__init__(layers)


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 reduce (bias) -> ReLU -> 1x1 expand (bias) -> h-sigmoid -> scale."""

    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.relu = nn.ReLU()
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.relu(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project, identity shortcut if any."""

    def __init__(self, op: OpSpec):
        super().__init__()
        cin, cout, mid = op.in_shape[2], op.out_shape[2], op.mid
        self.expand = ConvBNAct(cin, mid, 1, act=activation(op.hswish)) if op.has_expand_conv else None
        self.depthwise = ConvBNAct(mid, mid, op.kernel, op.stride, groups=mid, act=activation(op.hswish))
        self.se = SqueezeExcite(mid, op.se_mid) if op.se else None
        self.project = ConvBNAct(mid, cout, 1)
        self.residual = op.idskip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class GlobalPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class FeatureMix(nn.Sequential):
    """1x1 conv without bias or BN, then h-swish (OFA's feature_mix_layer)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(OrderedDict(conv=nn.Conv2d(cin, cout, 1, bias=False), act=nn.Hardswish()))


class Classifier(nn.Module):
    """Flatten -> dropout -> linear."""

    def __init__(self, cin: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(torch.flatten(x, 1)))


_BUILDERS: dict[str, Callable[[OpSpec], nn.Module]] = {
    STEM: lambda op: ConvBNAct(op.in_shape[2], op.out_shape[2], 3, 2, act=nn.Hardswish()),
    BLOCK: MBConv,
    FINAL_EXPAND: lambda op: ConvBNAct(op.in_shape[2], op.out_shape[2], 1, act=nn.Hardswish()),
    POOL: lambda op: GlobalPool(),
    FEATURE_MIX: lambda op: FeatureMix(op.in_shape[2], op.out_shape[2]),
    CLASSIFIER: lambda op: Classifier(op.in_shape[2], op.out_shape[2]),
}


def build_op(op: OpSpec) -> nn.Module:
    """A freshly initialised module computing ``op`` (NCHW input of shape (N, C, H, W))."""
    return _BUILDERS[op.kind](op)


def op_input(op: OpSpec, batch: int = 1) -> torch.Tensor:
    """A random NCHW input of the op's input shape."""
    h, w, c = op.in_shape
    return torch.randn(batch, c, h, w)


class StaticSubnet(nn.Module):
    """A plain network: the subnet's ops in order. ``layers[i]`` computes ``ops[i]``."""

    def __init__(self, ops: list[OpSpec], dropout: float = 0.0):
        super().__init__()
        self.ops = list(ops)
        self.layers = nn.ModuleList(build_op(op) for op in ops)
        if ops and ops[-1].kind == CLASSIFIER:
            self.layers[-1].dropout.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def build_subnet(arch: ArchConfig, n_classes: int | None = None, dropout: float = 0.0) -> StaticSubnet:
    """A static network for ``arch`` built straight from its config (fresh weights)."""
    ops = subnet_ops(arch)
    if n_classes is not None and n_classes != ops[-1].out_shape[2]:
        last = ops[-1]
        ops[-1] = OpSpec(last.kind, last.in_shape, (1, 1, n_classes))
    return StaticSubnet(ops, dropout)
