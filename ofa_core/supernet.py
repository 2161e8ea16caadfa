"""The elastic OFA-MobileNetV3 supernet: one set of weights, any subnet of the space active at a time.

Dynamic operators follow OFA (``ofa/imagenet_classification/elastic_nn``): the depthwise conv keeps the largest
kernel and derives smaller ones with learned kernel transformation matrices (7 -> 5 -> 3, initialised to the
identity); pointwise convs and squeeze-excite use the first channels of their weights; BatchNorm normalises the
active channels with the first entries of its statistics and affine parameters; a stage of depth ``d`` runs its
first ``d`` blocks. Everything that changes with the active subnet lives on the module instances (no class flags).

The stem, the fixed first block and the head are plain :mod:`ofakit.ofa_core.static` modules, so
:meth:`OFAMobileNetV3.get_active_subnet` builds exactly :func:`ofakit.ofa_core.static.build_subnet` of the active arch
and fills it by copying weights (smaller kernels baked in).
"""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ArchError
from .ops import SE_REDUCTION, head_ops
from .space import MAX_DEPTH, N_BLOCKS, N_STAGES, ArchConfig, SpaceSpec, make_divisible
from .static import MBConv, SqueezeExcite, StaticSubnet, activation, build_op, build_subnet


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its parameters and statistics, ``C`` = the input's channels.

    Train-mode updates (momentum or cumulative average when ``momentum`` is None) go to those channels only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:n], self.running_var[:n], self.weight[:n], self.bias[:n],
                            self.training, factor, self.eps)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    """Copy the first ``dst.num_features`` channels of ``src`` (affine, statistics, settings) into ``dst``."""
    n = dst.num_features
    dst.weight.copy_(src.weight[:n])
    dst.bias.copy_(src.bias[:n])
    dst.running_mean.copy_(src.running_mean[:n])
    dst.running_var.copy_(src.running_var[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


def _permute_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.copy_(t.index_select(0, idx))


def depthwise_same(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """'Same'-padded depthwise conv of ``x`` with the (C, 1, k, k) ``weight``, the kernel first cropped to the
    centre taps an H x W input can reach (``min(k, 2H - 1)`` by ``min(k, 2W - 1)``).

    Exact: the dropped taps only ever multiply zero padding, at stride 1 and 2 alike, and the output size is
    ``(H - 1) // stride + 1`` either way. At 32-64 px inputs the late stages run 7x7 kernels on 1x1 and 2x2
    maps, where PyTorch's CPU kernels spend most of a training step on padding.
    """
    k = weight.shape[-1]
    kh, kw = min(k, 2 * x.shape[-2] - 1), min(k, 2 * x.shape[-1] - 1)
    if kh < k or kw < k:
        sh, sw = (k - kh) // 2, (k - kw) // 2
        weight = weight[:, :, sh:sh + kh, sw:sw + kw]
    return F.conv2d(x, weight, None, stride, (kh // 2, kw // 2), 1, x.shape[1])


class ActiveWeights(NamedTuple):
    """The weights of a dynamic MBConv for its active kernel and expand ratio."""

    expand: torch.Tensor | None
    depthwise: torch.Tensor
    se_reduce: torch.Tensor | None
    se_reduce_bias: torch.Tensor | None
    se_expand: torch.Tensor | None
    se_expand_bias: torch.Tensor | None
    project: torch.Tensor


class DynamicMBConv(nn.Module):
    """An MBConv block with elastic kernel size and expand ratio (fixed input/output width and stride)."""

    def __init__(self, cin: int, cout: int, stride: int, hswish: bool, se: bool, ks_choices: Sequence[int],
                 e_choices: Sequence[int], spec: SpaceSpec):
        super().__init__()
        self.cin, self.cout, self.stride, self.hswish, self.use_se = cin, cout, stride, hswish, se
        self.ks_choices = tuple(sorted(set(ks_choices)))
        self.e_choices = tuple(sorted(set(e_choices)))
        self.mid_of = {e: spec.middle_width(cin, e) for e in self.e_choices}
        max_mid, kmax = max(self.mid_of.values()), self.ks_choices[-1]
        self.max_mid = max_mid
        self.residual = stride == 1 and cin == cout
        self.expand_conv = nn.Conv2d(cin, max_mid, 1, bias=False)
        self.expand_bn = DynamicBatchNorm2d(max_mid)
        self.dw_weight = nn.Parameter(torch.empty(max_mid, 1, kmax, kmax))
        # OFA's kernel transformation matrices, e.g. "7to5" (25x25) and "5to3" (9x9), identity at start.
        self.kernel_transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for small, big in zip(self.ks_choices, self.ks_choices[1:])})
        self.dw_bn = DynamicBatchNorm2d(max_mid)
        self.se = SqueezeExcite(max_mid, make_divisible(max_mid // SE_REDUCTION, 8)) if se else None
        self.project_conv = nn.Conv2d(max_mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.act = activation(hswish)
        self.active_kernel, self.active_expand = kmax, self.e_choices[-1]
        self._memo: tuple[tuple, ActiveWeights] | None = None

    @property
    def active_mid(self) -> int:
        return self.mid_of[self.active_expand]

    def depthwise_filter(self, mid: int, kernel: int) -> torch.Tensor:
        """(mid, 1, k, k) depthwise filter: centre crops of the largest kernel, each passed through the
        transformation matrix of its step (OFA: crop, flatten to k*k, ``x @ M.T``, reshape)."""
        w = self.dw_weight[:mid]
        for big, small in zip(reversed(self.ks_choices), reversed(self.ks_choices[:-1])):
            if big <= kernel:
                break
            s = (big - small) // 2
            crop = w[:, :, s:s + small, s:s + small].reshape(mid, small * small)
            w = F.linear(crop, self.kernel_transforms[f"{big}to{small}"]).view(mid, 1, small, small)
        return w

    def _active_weights(self) -> ActiveWeights:
        mid = self.active_mid
        has_expand = mid != self.cin
        se_mid = make_divisible(mid // SE_REDUCTION, 8)
        se = self.se
        return ActiveWeights(
            self.expand_conv.weight[:mid] if has_expand else None,
            self.depthwise_filter(mid, self.active_kernel),
            se.reduce.weight[:se_mid, :mid].contiguous() if se else None,
            se.reduce.bias[:se_mid] if se else None,
            se.expand.weight[:mid, :se_mid].contiguous() if se else None,
            se.expand.bias[:mid] if se else None,
            self.project_conv.weight[:, :mid].contiguous())

    def _sources(self) -> tuple:
        """Identity and in-place version of every weight :meth:`_active_weights` reads."""
        ps = [self.expand_conv.weight, self.dw_weight, self.project_conv.weight, *self.kernel_transforms.values()]
        if self.se is not None:
            ps += [self.se.reduce.weight, self.se.reduce.bias, self.se.expand.weight, self.se.expand.bias]
        return tuple((p._version, p.data_ptr()) for p in ps)

    def active_weights(self) -> ActiveWeights:
        """Weights of the active setting; in eval mode without autograd they are kept until the setting or any
        parameter (in-place version counter) changes, so repeated inference pays the slicing once."""
        if self.training or torch.is_grad_enabled():
            self._memo = None
            return self._active_weights()
        key = (self.active_kernel, self.active_expand, self._sources())
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, self._active_weights())
        return self._memo[1]

    def train(self, mode: bool = True) -> "DynamicMBConv":
        self._memo = None
        return super().train(mode)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_memo"] = None  # derived tensors are never copied or pickled
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.active_weights()
        y = x if w.expand is None else self.act(self.expand_bn(F.conv2d(x, w.expand)))
        y = self.act(self.dw_bn(depthwise_same(y, w.depthwise, self.stride)))
        if w.se_reduce is not None:
            s = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), w.se_reduce, w.se_reduce_bias))
            y = y * F.hardsigmoid(F.conv2d(s, w.se_expand, w.se_expand_bias))
        y = self.project_bn(F.conv2d(y, w.project))
        return x + y if self.residual else y

    @torch.no_grad()
    def copy_to(self, m: MBConv) -> None:
        """Fill a static :class:`~ofakit.ofa_core.static.MBConv` of the active setting with this block's weights."""
        w = self._active_weights()
        if m.expand is not None:
            m.expand.conv.weight.copy_(w.expand)
            _copy_bn(m.expand.bn, self.expand_bn)
        m.depthwise.conv.weight.copy_(w.depthwise)
        _copy_bn(m.depthwise.bn, self.dw_bn)
        if m.se is not None:
            m.se.reduce.weight.copy_(w.se_reduce)
            m.se.reduce.bias.copy_(w.se_reduce_bias)
            m.se.expand.weight.copy_(w.se_expand)
            m.se.expand.bias.copy_(w.se_expand_bias)
        m.project.conv.weight.copy_(w.project)
        _copy_bn(m.project.bn, self.project_bn)

    @torch.no_grad()
    def reorganize(self, expand_stage: int = 0) -> None:
        """OFA's ``re_organize_middle_weights``: sort middle channels by the L1 norm of the projection weights
        they feed (and SE's hidden channels by its expand weights); the block's function is unchanged at the
        largest expand ratio. ``expand_stage`` > 0 keeps channels inside the ``expand_stage + 1`` largest widths
        (OFA's progressive shrinking of the expand ratio) in their width group."""
        importance = self.project_conv.weight.abs().sum((0, 2, 3))
        idx = torch.argsort(importance, descending=True, stable=True)
        if expand_stage > 0:  # OFA adds -1e5 offsets per width group; a stable sort by group is exact
            bounds = torch.tensor(sorted(self.mid_of.values(), reverse=True)[1:expand_stage + 1], device=idx.device)
            group = (torch.arange(self.max_mid, device=idx.device)[:, None] >= bounds[None, :]).sum(1)
            idx = idx[torch.argsort(group[idx], stable=True)]
        self.project_conv.weight.copy_(self.project_conv.weight.index_select(1, idx))
        self.dw_weight.copy_(self.dw_weight.index_select(0, idx))
        _permute_bn(self.dw_bn, idx)
        self.expand_conv.weight.copy_(self.expand_conv.weight.index_select(0, idx))
        _permute_bn(self.expand_bn, idx)
        if self.se is not None:
            se = self.se
            se.expand.weight.copy_(se.expand.weight.index_select(0, idx))
            se.expand.bias.copy_(se.expand.bias.index_select(0, idx))
            se.reduce.weight.copy_(se.reduce.weight.index_select(1, idx))
            se_idx = torch.argsort(se.expand.weight.abs().sum((0, 2, 3)), descending=True)
            se.expand.weight.copy_(se.expand.weight.index_select(1, se_idx))
            se.reduce.weight.copy_(se.reduce.weight.index_select(0, se_idx))
            se.reduce.bias.copy_(se.reduce.bias.index_select(0, se_idx))


class OFAMobileNetV3(nn.Module):
    """OFA-MobileNetV3 supernet at width multiplier ``width`` with elastic kernel, expand and depth.

    ``layers`` order: ``stem``, ``first_block``, ``blocks`` (20 dynamic MBConv, 4 per stage), ``final_expand``,
    ``pool``, ``feature_mix``, ``classifier``; the first two and the head are static modules.
    """

    def __init__(self, width: float = 1.0, n_classes: int = 1000, dropout: float = 0.1,
                 ks_choices: Sequence[int] = (3, 5, 7), e_choices: Sequence[int] = (3, 4, 6),
                 d_choices: Sequence[int] = (2, 3, 4)) -> None:
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ArchError(f"n_classes: expected a positive integer, got {n_classes!r}")
        if not 0 <= dropout < 1:
            raise ArchError(f"dropout: expected a value in [0, 1), got {dropout!r}")
        for name, vals, allowed in (("ks", ks_choices, (3, 5, 7)), ("e", e_choices, (3, 4, 6)),
                                    ("d", d_choices, (2, 3, 4))):
            if not vals or any(v not in allowed for v in vals):
                raise ArchError(f"{name}: choices {list(vals)!r} must be a non-empty subset of {list(allowed)}")
        self.spec = SpaceSpec(width_mult=width, n_classes=n_classes, ks_choices=tuple(sorted(set(ks_choices))),
                              e_choices=tuple(sorted(set(e_choices))), d_choices=tuple(sorted(set(d_choices))))
        self.n_classes, self.dropout = n_classes, dropout
        spec = self.spec
        (stem_op, first_op), (final_op, pool_op, mix_op, cls_op) = head_ops(spec, max(spec.resolutions))
        self.stem = build_op(stem_op)
        self.first_block = build_op(first_op)
        self.blocks = nn.ModuleList(
            DynamicMBConv(spec.block_in_width(s, i), st.width, st.stride if i == 0 else 1, st.hswish, st.se,
                          spec.ks_choices, spec.e_choices, spec)
            for s, st in enumerate(spec.stages) for i in range(MAX_DEPTH))
        self.final_expand = build_op(final_op)
        self.pool = build_op(pool_op)
        self.feature_mix = build_op(mix_op)
        self.classifier = build_op(cls_op)
        self.classifier.dropout.p = dropout
        self._init_weights()
        self._depth: tuple[int, ...] = ()
        self._r = 0
        self._run: tuple[DynamicMBConv, ...] = ()
        self.set_max_subnet()

    def _init_weights(self) -> None:
        """OFA's 'he_fout' initialisation: conv N(0, sqrt(2 / (k*k*out))), BN (1, 0), linear U(+-1/sqrt(in)), 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.size(1))
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)
            elif isinstance(m, DynamicMBConv):
                k = m.dw_weight.shape[-1]
                nn.init.normal_(m.dw_weight, 0.0, math.sqrt(2.0 / (k * k * m.max_mid)))

    # --- active subnet ------------------------------------------------------------------------------
    def set_active_subnet(self, arch: ArchConfig) -> None:
        """Make ``arch`` the active subnet (``arch.r`` is recorded; the input decides the actual size)."""
        if not isinstance(arch, ArchConfig):
            raise ArchError(f"arch: expected an ArchConfig, got {type(arch).__name__}")
        if abs(arch.width - self.spec.width_mult) > 1e-9:
            raise ArchError(f"width: arch is for width {arch.width}, this supernet has width "
                            f"{self.spec.width_mult}")
        s = self.spec
        active = arch.active_blocks()
        for name, values, choices, where in (("d", arch.d, s.d_choices, range(N_STAGES)),
                                             ("ks", arch.ks, s.ks_choices, active), ("e", arch.e, s.e_choices, active)):
            for i in where:
                if values[i] not in choices:
                    raise ArchError(f"{name}[{i}]: {values[i]} is not one of this supernet's {list(choices)}")
        for b in active:
            self.blocks[b].active_kernel, self.blocks[b].active_expand = arch.ks[b], arch.e[b]
        self._depth, self._r = tuple(arch.d), arch.r
        self._run = tuple(self.blocks[b] for b in active)

    def set_max_subnet(self) -> None:
        s = self.spec
        self.set_active_subnet(ArchConfig((max(s.ks_choices),) * N_BLOCKS, (max(s.e_choices),) * N_BLOCKS,
                                          (max(s.d_choices),) * N_STAGES, max(s.resolutions), s.width_mult))

    def set_min_subnet(self) -> None:
        s = self.spec
        self.set_active_subnet(ArchConfig((min(s.ks_choices),) * N_BLOCKS, (min(s.e_choices),) * N_BLOCKS,
                                          (min(s.d_choices),) * N_STAGES, min(s.resolutions), s.width_mult))

    def sample_active_subnet(self, rng: np.random.Generator, ks: Sequence[int] | None = None,
                             e: Sequence[int] | None = None, d: Sequence[int] | None = None,
                             resolutions: Sequence[int] | None = None) -> ArchConfig:
        """Draw a subnet uniformly per choice (restricted to ``ks``/``e``/``d``/``resolutions`` if given, as in
        progressive shrinking), make it active and return it."""
        s = self.spec

        def pick(name: str, given: Sequence[int] | None, default: Sequence[int], n: int) -> list[int]:
            choices = list(default if given is None else given)
            if not choices or (name != "r" and any(c not in default for c in choices)):
                raise ArchError(f"{name}: choices {choices!r} must be a non-empty subset of {list(default)}")
            return [int(c) for c in rng.choice(np.asarray(choices), n)]

        arch = ArchConfig(tuple(pick("ks", ks, s.ks_choices, N_BLOCKS)), tuple(pick("e", e, s.e_choices, N_BLOCKS)),
                          tuple(pick("d", d, s.d_choices, N_STAGES)), pick("r", resolutions, s.resolutions, 1)[0],
                          s.width_mult)
        self.set_active_subnet(arch)
        return arch

    @property
    def active_arch(self) -> ArchConfig:
        """The active subnet (skipped blocks report their last setting)."""
        return ArchConfig(tuple(b.active_kernel for b in self.blocks), tuple(b.active_expand for b in self.blocks),
                          self._depth, self._r, self.spec.width_mult)

    # --- forward and extraction ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for block in self._run:
            x = block(x)
        return self.classifier(self.feature_mix(self.pool(self.final_expand(x))))

    @torch.no_grad()
    def get_active_subnet(self) -> StaticSubnet:
        """The active subnet as a plain :class:`~ofakit.ofa_core.static.StaticSubnet` (the structure of
        ``build_subnet(active_arch)``) with weights, kernels and BN statistics copied."""
        arch = self.active_arch
        net = build_subnet(arch, n_classes=self.n_classes, dropout=self.dropout)
        ref = next(self.parameters())
        net.to(device=ref.device, dtype=ref.dtype)
        layers = list(net.layers)
        n = len(self._run)
        statics = [(layers[0], self.stem), (layers[1], self.first_block), (layers[-4], self.final_expand),
                   (layers[-3], self.pool), (layers[-2], self.feature_mix), (layers[-1], self.classifier)]
        for dst, src in statics:
            dst.load_state_dict(src.state_dict())
        for dst, block in zip(layers[2:2 + n], self._run):
            block.copy_to(dst)
        return net.train(self.training)

    @torch.no_grad()
    def reorganize_channels(self, stage_blocks: Iterable[int] | None = None, expand_stage: int = 0) -> None:
        """Sort the middle channels of the elastic blocks (all, or the block indices 0..19 in ``stage_blocks``)
        by importance, as OFA does before shrinking the expand ratio; outputs of the largest expand are kept."""
        for b in (range(N_BLOCKS) if stage_blocks is None else stage_blocks):
            if not 0 <= int(b) < N_BLOCKS:
                raise ArchError(f"stage_blocks: block index {b} is not in 0..{N_BLOCKS - 1}")
            self.blocks[int(b)].reorganize(expand_stage)
