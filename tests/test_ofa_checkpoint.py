"""OFA's released supernet checkpoints load as they are: ``{"state_dict": ...}`` in OFA's key layout.

The checkpoint is generated here with random weights under the key names of OFA's modules (OFAMobileNetV3:
first_conv, blocks.0 = the first MBConv, blocks.1..20 = DynamicMBConvLayer with inverted_bottleneck / depth_conv
(+ se) / point_linear around DynamicConv2d / DynamicSeparableConv2d / DynamicBatchNorm2d, final_expand_layer,
feature_mix_layer, classifier.linear).
"""
from __future__ import annotations

import json

import pytest
import torch

from ofakit.ofa_core.supernet import OFAMobileNetV3
from ofakit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def bn(out: dict, prefix: str, t: dict, ours: str) -> None:
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{prefix}.{p}"] = t[f"{ours}.{p}"]


def ofa_checkpoint(width: float, old_names: bool = False) -> tuple[dict, dict]:
    """(OFA-layout state dict with random weights, the same tensors under ofakit's names)."""
    torch.manual_seed(1)
    # fresh weights moved by noise (distinct tensors, finite outputs); BN variances stay positive
    t = {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else v + 0.05 * torch.randn_like(v))
         if v.is_floating_point() else v for k, v in OFAMobileNetV3(width).state_dict().items()}
    out: dict = {"first_conv.conv.weight": t["stem.conv.weight"]}
    bn(out, "first_conv.bn", t, "stem.bn")
    out["blocks.0.conv.depth_conv.conv.weight"] = t["first_block.depthwise.conv.weight"]
    bn(out, "blocks.0.conv.depth_conv.bn", t, "first_block.depthwise.bn")
    out["blocks.0.conv.point_linear.conv.weight"] = t["first_block.project.conv.weight"]
    bn(out, "blocks.0.conv.point_linear.bn", t, "first_block.project.bn")
    layer = "mobile_inverted_conv" if old_names else "conv"
    for i in range(20):
        o, b = f"blocks.{i + 1}.{layer}", f"blocks.{i}"
        out[f"{o}.inverted_bottleneck.conv.conv.weight"] = t[f"{b}.expand_conv.weight"]
        bn(out, f"{o}.inverted_bottleneck.bn.bn", t, f"{b}.expand_bn")
        out[f"{o}.depth_conv.conv.conv.weight"] = t[f"{b}.dw_weight"]
        out[f"{o}.depth_conv.conv.7to5_matrix"] = t[f"{b}.kernel_transforms.7to5"]
        out[f"{o}.depth_conv.conv.5to3_matrix"] = t[f"{b}.kernel_transforms.5to3"]
        bn(out, f"{o}.depth_conv.bn.bn", t, f"{b}.dw_bn")
        if f"{b}.se.reduce.weight" in t:
            for part in ("reduce", "expand"):
                for p in ("weight", "bias"):
                    out[f"{o}.depth_conv.se.fc.{part}.{p}"] = t[f"{b}.se.{part}.{p}"]
        out[f"{o}.point_linear.conv.conv.weight"] = t[f"{b}.project_conv.weight"]
        bn(out, f"{o}.point_linear.bn.bn", t, f"{b}.project_bn")
    out["final_expand_layer.conv.weight"] = t["final_expand.conv.weight"]
    bn(out, "final_expand_layer.bn", t, "final_expand.bn")
    out["feature_mix_layer.conv.weight"] = t["feature_mix.conv.weight"]
    out["classifier.linear.weight"], out["classifier.linear.bias"] = t["classifier.linear.weight"], t["classifier.linear.bias"]
    assert len(out) == len(t)
    return out, t


@pytest.mark.parametrize("old_names", [False, True])
def test_ofa_checkpoint_loads_strictly_and_exports(tmp_path, capsys, old_names):
    from ofakit.ofa_core.train.checkpoint import load_model_state, model_state

    ofa, ours = ofa_checkpoint(1.2, old_names)
    path = tmp_path / "ofa_mbv3_d234_e346_k357_w1.2"
    torch.save({"state_dict": ofa}, path)
    net = OFAMobileNetV3(1.2)
    load_model_state(net, model_state(path), str(path))
    got = net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ours.items())
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"ks": [7, 5, 3, 3] * 5, "e": [6, 4, 3, 6] * 5, "d": [2, 3, 4, 2, 3], "r": 160,
                                "width": 1.2}))
    assert main(["export", str(arch), "--format", "onnx", "--out", str(tmp_path / "n.onnx"), "--weights", str(path),
                 "--check"]) == 0, capsys.readouterr().err
    assert "max |onnx - torch|" in capsys.readouterr().out


def test_mismatches_say_the_real_cause(tmp_path, capsys):
    ofa, _ = ofa_checkpoint(1.2)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}))

    def export(state: dict) -> str:
        path = tmp_path / "w.pth"
        torch.save({"state_dict": state}, path)
        args = ["export", str(arch), "--format", "onnx", "--out", str(tmp_path / "n.onnx"), "--weights", str(path)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "weights of a width-1.2 supernet, the subnet asked for has width 1" in export(ofa)
    broken = {k: v for k, v in ofa.items() if k != "blocks.7.conv.point_linear.conv.conv.weight"}
    broken["blocks.7.conv.point_linear.conv.conv.weights"] = ofa["blocks.7.conv.point_linear.conv.conv.weight"]
    err = export(broken)
    assert "missing 1 key(s): blocks.6.project_conv.weight" in err
    assert "unexpected 1 key(s): blocks.7.conv.point_linear.conv.conv.weights" in err
    assert not (tmp_path / "n.onnx").exists()
