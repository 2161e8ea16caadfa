"""Elastic operators: counts, OFA keys (against OFA's Note10 table), MACs/params against built modules, SlotTable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.ops import (MissingOpError, OpSpec, SlotTable, enumerate_ops, resolution_ops, subnet_macs,
                          subnet_ops, subnet_params)
from ofakit.ofa_core.space import ArchConfig, sample_arch, sample_batch, space_for_width
from ofakit.ofa_core.static import build_op, build_subnet, op_input

NOTE10_LUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ofa_note10_lut"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_96_ops_per_resolution_and_1257_distinct():
    spec = space_for_width(1.0)
    for r in spec.resolutions:
        ops = resolution_ops(spec, r)
        assert len(ops) == 96 and len({op.key for op in ops}) == 96
    assert len(spec.resolutions) == 25
    assert len(enumerate_ops(spec)) == 1257


@pytest.mark.parametrize("r", range(160, 225, 4))
def test_width_1_2_keys_equal_ofa_note10_table(r):
    table = yaml.safe_load((NOTE10_LUT / f"{r}_lookup_table.yaml").read_text())
    ours = {op.key for op in resolution_ops(space_for_width(1.2), r)}
    assert ours == set(table)


def test_from_key_round_trip():
    for key, op in enumerate_ops(space_for_width(1.0)).items():
        back = OpSpec.from_key(key)
        assert back == op and back.key == key
    for bad in ("Conv-input:1x1-output:2x2x2", "expanded_conv-input:8x8x16-output:8x8x16", "Logits-input:1x1x8"):
        with pytest.raises(UserError, match="not an OFA operator key"):
            OpSpec.from_key(bad)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of every Conv2d and Linear, counted from the shapes a real forward pass produces (batch 1)."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("width, r, seed", [(1.0, 128, 0), (1.0, 224, 1), (1.2, 160, 2), (1.2, 200, 3)])
def test_macs_and_params_match_built_module(width, r, seed):
    arch = sample_arch(np.random.default_rng(seed), space_for_width(width), resolutions=[r])
    net = build_subnet(arch)
    assert sum(p.numel() for p in net.parameters()) == subnet_params(arch)
    assert count_macs(net, torch.randn(1, 3, r, r)) == subnet_macs(arch)
    for op in subnet_ops(arch)[:3]:  # single-op modules agree too
        m = build_op(op)
        assert sum(p.numel() for p in m.parameters()) == op.params
        assert count_macs(m, op_input(op)) == op.macs


def test_macs_grow_with_every_choice():
    base = dict(ks=(3,) * 20, e=(3,) * 20, d=(2,) * 5, r=160)
    small = subnet_macs(ArchConfig(**base))
    for field, value in (("ks", (5,) * 20), ("e", (4,) * 20), ("d", (3,) * 5), ("r", 176)):
        assert subnet_macs(ArchConfig(**{**base, field: value})) > small
    assert subnet_macs(ArchConfig(**base, width=1.2)) > small


def test_slot_table_sum_equals_per_op_sum():
    spec = space_for_width(1.0)
    res = (128, 160, 224)
    table = SlotTable(spec, res, lambda op, r: op.macs)
    batch = sample_batch(np.random.default_rng(5), 40, spec, resolutions=res)
    expected = np.array([subnet_macs(a) for a in batch.to_configs()], dtype=float)
    assert np.array_equal(table.evaluate(batch), expected)
    stage = table.stage_sums(batch)
    assert stage.shape == (40, 5)


def test_slot_table_names_missing_op():
    spec = space_for_width(1.0)
    gap = next(op for op in resolution_ops(spec, 160) if op.kernel == 7 and op.mid == 240)

    def value(op: OpSpec, r: int) -> float:
        if op.key == gap.key:
            raise KeyError(op.key)
        return 1.0

    table = SlotTable(spec, (160,), value)
    uses = ArchConfig((7,) * 20, (6,) * 20, (4,) * 5, 160)
    avoids = ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 160)
    assert np.isfinite(table.evaluate([avoids])).all()
    with pytest.raises(MissingOpError, match=gap.key):
        table.evaluate([uses, avoids])
    with pytest.raises(MissingOpError, match="resolution 224"):
        table.evaluate([ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 224)])
