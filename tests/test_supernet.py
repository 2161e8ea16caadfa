"""The elastic supernet: extraction equals the supernet, kernel transforms, channel sorting, BN recalibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ofakit.ofa_core.bn import recalibrate_bn
from ofakit.ofa_core.errors import ArchError, UserError
from ofakit.ofa_core.space import ArchConfig, space_for_width
from ofakit.ofa_core.static import StaticSubnet, build_subnet
from ofakit.ofa_core.supernet import DynamicMBConv, OFAMobileNetV3, depthwise_same

N_CLASSES = 10


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters (so BN is not an identity), non-identity kernel transforms and
    a classifier with O(1) outputs."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0, 0.1, generator=g)
    for name, p in model.named_parameters():
        if "kernel_transforms" in name:
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def make_supernet(seed: int, width: float = 1.0, **kw) -> OFAMobileNetV3:
    """A supernet with perturbed weights whose BN statistics come from its largest subnet, so features keep their
    dependence on the input through all stages (with arbitrary statistics the signal dies out by stage 3)."""
    torch.manual_seed(seed)
    net = perturb(OFAMobileNetV3(width=width, n_classes=N_CLASSES, **kw), seed)
    net.set_max_subnet()
    return recalibrate_bn(net, [torch.randn(2, 3, 128, 128) for _ in range(2)])


@pytest.fixture(scope="module")
def supernet() -> OFAMobileNetV3:
    return make_supernet(0)


def features_and_logits(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output of the final 1x1 expand, before pooling; logits) of a supernet or a static subnet."""
    head = net.final_expand if isinstance(net, OFAMobileNetV3) else net.layers[-4]
    seen = []
    hook = head.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        hook.remove()
    return seen[0], logits


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest difference of features and of logits; also checks the features really depend on the input."""
    (fa, la), (fb, lb) = features_and_logits(a, x), features_and_logits(b, x)
    assert fa.std((2, 3)).mean() > 1e-3  # spatially varying features: a wrong weight would show
    return max((fa - fb).abs().max().item(), (la - lb).abs().max().item())


def structure(net: nn.Module) -> list:
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()] + [type(m).__name__ for m in net.modules()]


def test_extracted_subnets_equal_supernet(supernet):
    rng = np.random.default_rng(0)
    archs = set()
    for i in range(20):
        arch = supernet.sample_active_subnet(rng, resolutions=(128, 144, 160))
        archs.add(arch.r)
        x = torch.randn(1, 3, arch.r, arch.r)
        static = supernet.get_active_subnet()
        assert isinstance(static, StaticSubnet) and not static.training
        assert max_diff(supernet, static, x) <= 1e-5
        if i < 3:
            ref = build_subnet(arch, n_classes=N_CLASSES)
            assert static.ops == ref.ops and structure(static) == structure(ref)
    assert archs == {128, 144, 160}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5, 7])
def test_depthwise_kernel_crop_is_exact_in_values_and_gradients(stride, k):
    torch.manual_seed(k + stride)
    for h, w in [(1, 1), (2, 2), (3, 3), (2, 5), (4, 4), (9, 9)]:
        x = torch.randn(2, 6, h, w, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(6, 1, k, k, dtype=torch.float64, requires_grad=True)
        ref = torch.nn.functional.conv2d(x, weight, None, stride, k // 2, 1, 6)
        out = depthwise_same(x, weight, stride)
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
        g_ref = torch.autograd.grad(ref.square().sum(), (x, weight))
        g_out = torch.autograd.grad(out.square().sum(), (x, weight))
        for a, b in zip(g_out, g_ref):
            assert torch.allclose(a, b, atol=1e-10)


def test_supernet_at_small_resolution_equals_uncropped_static_subnet():
    net = make_supernet(3)
    arch = ArchConfig((7,) * 20, (6, 4, 3, 6) * 5, (4, 3, 2, 4, 3), 48, 1.0)
    net.set_active_subnet(arch)
    static = build_subnet(arch, n_classes=N_CLASSES)  # full 7x7 kernels, zero padding around 2x2 and 3x3 maps
    static.load_state_dict(net.get_active_subnet().state_dict())
    assert max_diff(net, static.eval(), torch.randn(2, 3, 48, 48)) <= 1e-5


def test_extraction_at_width_1_2_and_train_mode_grad():
    net = make_supernet(1, width=1.2)
    arch = ArchConfig((3, 5, 7, 5) * 5, (3, 4, 6, 4) * 5, (4, 3, 2, 3, 4), 128, 1.2)
    net.set_active_subnet(arch)
    x = torch.randn(2, 3, 128, 128)
    net.train()
    loss = net(x).square().mean()
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert grads["blocks.0.kernel_transforms.7to5"].abs().sum() > 0  # ks 3 uses both matrices
    assert grads["blocks.0.kernel_transforms.5to3"].abs().sum() > 0
    assert grads["blocks.1.kernel_transforms.5to3"] is None  # ks 5 does not use the 5to3 one
    assert grads["blocks.7.dw_weight"] is None  # stage 2 has depth 3: its fourth block is skipped
    assert grads["blocks.19.dw_weight"].abs().sum() > 0
    net.eval()
    assert max_diff(net, net.get_active_subnet(), x[:1]) <= 1e-5


def test_kernel_transformation_follows_ofa(supernet):
    block = supernet.blocks[4]  # stage 1 (SE), 7x7 master kernel
    w7 = block.dw_weight[:24]
    m75, m53 = block.kernel_transforms["7to5"], block.kernel_transforms["5to3"]
    w5 = (w7[:, :, 1:6, 1:6].reshape(24, 25) @ m75.T).reshape(24, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(24, 9) @ m53.T).reshape(24, 1, 3, 3)
    torch.testing.assert_close(block.depthwise_filter(24, 7), w7, rtol=0, atol=0)
    torch.testing.assert_close(block.depthwise_filter(24, 5), w5)
    torch.testing.assert_close(block.depthwise_filter(24, 3), w3)
    fresh = DynamicMBConv(24, 40, 2, False, True, (3, 5, 7), (3, 4, 6), space_for_width(1.0))  # identity matrices
    nn.init.normal_(fresh.dw_weight)
    torch.testing.assert_close(fresh.depthwise_filter(8, 3), fresh.dw_weight[:8, :, 2:5, 2:5], rtol=0, atol=0)


def test_eval_cache_follows_weight_changes():
    net = make_supernet(3)
    net.set_active_subnet(ArchConfig((3,) * 20, (4,) * 20, (2,) * 5, 128))
    x = torch.randn(1, 3, 128, 128)
    y0 = features_and_logits(net, x)[0]
    assert torch.equal(features_and_logits(net, x)[0], y0)
    with torch.no_grad():
        net.blocks[0].kernel_transforms["5to3"].mul_(1.5)  # in place, as an optimizer step would
    y1 = features_and_logits(net, x)[0]
    assert (y1 - y0).abs().max() > 1e-3
    assert max_diff(net, net.get_active_subnet(), x) <= 1e-5
    net.load_state_dict(perturb(OFAMobileNetV3(n_classes=N_CLASSES), seed=4).state_dict())
    assert (features_and_logits(net, x)[0] - y1).abs().max() > 1e-3


def test_reorganize_channels_keeps_function():
    net = make_supernet(5)
    rng = np.random.default_rng(5)
    arch = net.sample_active_subnet(rng, e=[6], resolutions=[128])
    x = torch.randn(1, 3, 128, 128)
    before = net.get_active_subnet()
    small = net.sample_active_subnet(rng, e=[3], resolutions=[128])
    small_before = features_and_logits(net, x)[0]
    net.reorganize_channels()
    net.set_active_subnet(arch)
    assert max_diff(net, before, x) <= 1e-5
    net.set_active_subnet(small)
    assert (features_and_logits(net, x)[0] - small_before).abs().max() > 1e-3  # other channels now
    for block in net.blocks:
        imp = block.project_conv.weight.abs().sum((0, 2, 3))
        assert torch.all(imp[:-1] >= imp[1:])
        if block.se is not None:
            se_imp = block.se.expand.weight.abs().sum((0, 2, 3))
            assert torch.all(se_imp[:-1] >= se_imp[1:])
    with pytest.raises(ArchError, match="stage_blocks"):
        net.reorganize_channels([20])


def test_reorganize_expand_stage_keeps_width_groups():
    net = perturb(OFAMobileNetV3(n_classes=N_CLASSES), seed=6)
    block = net.blocks[5]
    mid3, mid4 = block.mid_of[3], block.mid_of[4]
    before = block.project_conv.weight.abs().sum((0, 2, 3))
    net.reorganize_channels([5], expand_stage=1)
    imp = block.project_conv.weight.abs().sum((0, 2, 3))
    for group in (slice(0, mid4), slice(mid4, None)):  # channels stay inside the e=4 group and the rest
        torch.testing.assert_close(imp[group].sort().values, before[group].sort().values)
        assert torch.all(imp[group][:-1] >= imp[group][1:])
    assert mid3 < mid4 < block.max_mid


def manual_bn_stats(conv_out: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    means = torch.stack([y.mean((0, 2, 3)) for y in conv_out])
    vars_ = torch.stack([y.transpose(0, 1).flatten(1).var(1, unbiased=True) for y in conv_out])
    return means.mean(0), vars_.mean(0)


def test_recalibrate_bn_static_equals_manual_computation():
    torch.manual_seed(7)
    arch = ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 128)
    net = perturb(build_subnet(arch, n_classes=N_CLASSES), seed=7).train()
    batches = [torch.randn(4, 3, 128, 128) for _ in range(4)]
    old = net.layers[0].bn.running_mean.clone()
    out = recalibrate_bn(net, iter(batches + batches), n_batches=3)
    assert out is net and not net.training
    with torch.no_grad():
        mean, var = manual_bn_stats([net.layers[0].conv(x) for x in batches[:3]])
    bn = net.layers[0].bn
    assert not torch.allclose(bn.running_mean, old)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    recalibrate_bn(net, [(x, torch.zeros(4)) for x in batches[:3]])  # (input, label) batches of a loader
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="no batches"):
        recalibrate_bn(net, [])
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)  # a failed call changes nothing


def test_recalibrate_bn_on_supernet_matches_extracted_and_keeps_other_channels():
    torch.manual_seed(8)
    net = perturb(OFAMobileNetV3(n_classes=N_CLASSES), seed=8)
    arch = net.sample_active_subnet(np.random.default_rng(8), d=[2, 3], resolutions=[128])
    batches = [torch.randn(4, 3, 128, 128) for _ in range(3)]
    static = net.get_active_subnet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recalibrate_bn(net, batches)
    recalibrate_bn(static, batches)
    after = net.state_dict()
    for k, v in net.get_active_subnet().state_dict().items():
        torch.testing.assert_close(v, static.state_dict()[k], rtol=1e-5, atol=1e-6)
    skipped = next(b for b in range(20) if b % 4 >= arch.d[b // 4])
    assert torch.equal(after[f"blocks.{skipped}.dw_bn.running_var"], before[f"blocks.{skipped}.dw_bn.running_var"])
    mid = net.blocks[0].active_mid
    rm = "blocks.0.dw_bn.running_mean"
    assert not torch.allclose(after[rm][:mid], before[rm][:mid])
    assert torch.equal(after[rm][mid:], before[rm][mid:])
    assert after["stem.bn.num_batches_tracked"] == 3
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_sample_active_subnet_restrictions(supernet):
    rng = np.random.default_rng(9)
    for _ in range(10):
        a = supernet.sample_active_subnet(rng, ks=[3, 7], e=[4], d=[2, 3], resolutions=[144, 176])
        active = a.active_blocks()
        assert {a.ks[b] for b in active} <= {3, 7} and {a.e[b] for b in active} == {4}
        assert set(a.d) <= {2, 3} and a.r in (144, 176)
        assert supernet.active_arch == a
    one = supernet.sample_active_subnet(np.random.default_rng(1))
    assert supernet.sample_active_subnet(np.random.default_rng(1)) == one
    assert one.r in space_for_width(1.0).resolutions
    with pytest.raises(ArchError, match="ks"):
        supernet.sample_active_subnet(rng, ks=[9])
    with pytest.raises(ArchError, match="d"):
        supernet.sample_active_subnet(rng, d=[])


def test_set_active_validation_and_extremes():
    net = OFAMobileNetV3(n_classes=N_CLASSES, ks_choices=(3, 5), e_choices=(3, 4), d_choices=(2, 3))
    assert "7to5" not in net.blocks[0].kernel_transforms and net.blocks[0].dw_weight.shape[-1] == 5
    net.set_max_subnet()
    assert net.active_arch == ArchConfig((5,) * 20, (4,) * 20, (3,) * 5, 224)
    net.set_min_subnet()
    assert net.active_arch == ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 128)
    with pytest.raises(ArchError, match=r"ks\[0\]"):
        net.set_active_subnet(ArchConfig((7,) * 20, (3,) * 20, (2,) * 5, 128))
    with pytest.raises(ArchError, match=r"d\[0\]"):
        net.set_active_subnet(ArchConfig((3,) * 20, (3,) * 20, (4,) * 5, 128))
    with pytest.raises(ArchError, match="width"):
        net.set_active_subnet(ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 128, 1.2))
    assert net.active_arch == ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 128)  # failed calls change nothing
    with pytest.raises(ArchError, match="ks"):
        OFAMobileNetV3(ks_choices=(3, 9))
    with torch.no_grad():  # the input decides the size
        assert net.eval()(torch.randn(1, 3, 96, 96)).shape == (1, N_CLASSES)
