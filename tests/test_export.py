"""Export to ONNX and TFLite: BN folded, fixed shapes, atomic writes, numerics equal to torch (max abs diff)."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from ofakit.ofa_core.bn import recalibrate_bn
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.export import export_onnx, export_tflite, fold_bn, max_abs_diff, run_file
from ofakit.ofa_core.ops import BLOCK, subnet_ops
from ofakit.ofa_core.space import ArchConfig, sample_arch, space_for_width
from ofakit.ofa_core.static import build_op, build_subnet, op_input
from ofakit.ofa_core.supernet import OFAMobileNetV3

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def with_bn_stats(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """Random BN affine parameters, then statistics recalibrated on random data (non-trivial BN everywhere,
    and outputs that still depend on the input)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return recalibrate_bn(model, [torch.randn(shape, generator=g)])


def image(r: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, r, r, generator=torch.Generator().manual_seed(seed))


def onnx_nodes(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("width, r, seed", [(1.0, 128, 0), (1.2, 160, 1)])
def test_onnx_static_subnet_matches_torch(tmp_path, width, r, seed):
    torch.manual_seed(seed)
    arch = sample_arch(np.random.default_rng(seed), space_for_width(width), resolutions=[r])
    net = with_bn_stats(build_subnet(arch), (2, 3, r, r), seed)
    x = image(r, seed)
    path = export_onnx(net, x, tmp_path / "net.onnx")
    assert path == tmp_path / "net.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]
    ops = onnx_nodes(path)
    assert "BatchNormalization" not in ops and "Conv" in ops
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, r, r]
    assert max_abs_diff(path, net, x) <= TOL
    trunk = nn.Sequential(*net.layers[:-3])  # feature map before pooling: every weight shows in the output
    assert max_abs_diff(export_onnx(trunk, x, tmp_path / "trunk.onnx"), trunk, x) <= TOL


def test_onnx_single_operators(tmp_path):
    arch = ArchConfig((7, 5, 3, 3) * 5, (6, 3, 4, 4) * 5, (2, 2, 2, 2, 2), 160)
    ops = [op for op in subnet_ops(arch) if op.kind == BLOCK and op.se and op.hswish][:1] + subnet_ops(arch)[:1]
    for i, op in enumerate(ops):
        torch.manual_seed(i)
        x = op_input(op)
        m = with_bn_stats(build_op(op), (2, *x.shape[1:]), i)
        path = export_onnx(m, x, tmp_path / f"op{i}.onnx")
        assert "BatchNormalization" not in onnx_nodes(path)
        assert max_abs_diff(path, m, x) <= TOL


def test_fold_bn_leaves_original_untouched():
    net = build_subnet(ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 128)).train()
    folded = fold_bn(net)
    assert net.training and not folded.training
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_export_errors_leave_nothing_behind(tmp_path):
    net = build_subnet(ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 128))
    with pytest.raises(UserError, match="does not exist"):
        export_onnx(net, image(128), tmp_path / "missing" / "net.onnx")
    with pytest.raises(RuntimeError):  # wrong input channels: the export fails mid-way
        export_onnx(net, torch.randn(1, 4, 128, 128), tmp_path / "net.onnx")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="unknown model format"):
        run_file(tmp_path / "net.pb", np.zeros((1, 3, 8, 8)))


def test_extracted_subnet_onnx_and_tflite(tmp_path, capfd):
    """One extracted subnet through both exporters (litert-torch conversion takes ~20 s, so only one); the
    converter's log (C++ and Python, e.g. "Estimated count of arithmetic ops") stays off the console."""
    torch.manual_seed(3)
    sup = OFAMobileNetV3(n_classes=10)
    arch = sup.sample_active_subnet(np.random.default_rng(3), d=[2], resolutions=[128])
    net = with_bn_stats(sup.get_active_subnet(), (2, 3, arch.r, arch.r), 3)
    x = image(arch.r, 3)
    onnx_path = export_onnx(net, x, tmp_path / "sub.onnx")
    assert max_abs_diff(onnx_path, net, x) <= TOL
    capfd.readouterr()
    tfl = export_tflite(net, x, tmp_path / "sub.tflite")
    os.write(2, b"after\n")  # the console is back afterwards
    assert capfd.readouterr() == ("", "after\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.onnx", "sub.tflite"]
    assert max_abs_diff(tfl, net, x) <= TOL
    other = image(arch.r, 4)
    with torch.no_grad():
        ref = net(other).numpy()
    assert np.abs(run_file(tfl, other.numpy()) - ref).max() <= TOL
    assert np.abs(ref - net(x).detach().numpy()).max() > 100 * TOL  # the comparison can tell inputs apart
