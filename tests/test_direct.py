"""Directly built model files (ofa_core.direct) against the torch exporters (the reference): for the same weights,
the same outputs and the same graph of runtime ops, for several operators of every kind and whole subnets."""
from __future__ import annotations

import os
import time
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from ofakit.ofa_core.direct import build_onnx, build_tflite, module_weights, random_weights
from ofakit.ofa_core.export import export_onnx, export_tflite, run_file
from ofakit.ofa_core.ops import OpSpec, enumerate_ops, subnet_ops
from ofakit.ofa_core.space import sample_arch, space_for_width
from ofakit.ofa_core.static import build_op, build_subnet, op_input
from ofakit.profiler.backends import get_backend
from ofakit.profiler.builder import Builder
from ofakit.profiler.items import Item

TOL = 1e-4
pytestmark = pytest.mark.usefixtures("one_thread")


def variant(op: OpSpec) -> tuple:
    """What changes the graph of an op: kind, 1x1 expansion, SE, h-swish, shortcut, stride, 1x1 input."""
    return (op.kind, op.has_expand_conv, op.se, op.hswish, op.idskip, op.stride, op.in_shape[0] == 1)


def sample_ops(per_variant: int) -> list[OpSpec]:
    """Up to ``per_variant`` ops of each variant (each with another kernel size), over two widths and two
    resolutions."""
    seen: set = set()
    count: Counter = Counter()
    out = []
    for width, r in ((1.0, 128), (1.2, 176)):
        for op in enumerate_ops(space_for_width(width), [r]).values():
            v = variant(op)
            if count[v] < per_variant and (v, op.kernel) not in seen:
                seen.add((v, op.kernel))
                count[v] += 1
                out.append(op)
    return out


@torch.no_grad()
def with_random_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine parameters everywhere, so folding matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def onnx_ops(path) -> Counter:
    """Runtime op types of an ONNX graph. Identity nodes are left out: torch's exporter dedups equal constant
    initializers (e.g. two zero biases) through an Identity that onnxruntime removes before running."""
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node if n.op_type != "Identity")


def tflite_ops(path) -> Counter:
    """(op code, input shapes, builtin options) of every operator of a TFLite graph."""
    from ai_edge_litert import schema_py_generated as S

    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(open(path, "rb").read(), 0))
    sg = m.subgraphs[0]
    out = Counter()
    for o in sg.operators:
        code = m.operatorCodes[o.opcodeIndex]
        opts = o.builtinOptions
        out[(names[max(code.builtinCode, code.deprecatedBuiltinCode)],
             tuple(tuple(int(s) for s in sg.tensors[i].shape) for i in o.inputs),
             tuple(sorted((k, str(v)) for k, v in vars(opts).items())) if opts is not None else ())] += 1
    return out


def compare(tmp_path, fmt: str, ops: list[OpSpec], module: nn.Module, x: torch.Tensor) -> None:
    ref, direct = tmp_path / f"ref.{fmt}", tmp_path / f"direct.{fmt}"
    {"onnx": export_onnx, "tflite": export_tflite}[fmt](module, x, ref)
    {"onnx": build_onnx, "tflite": build_tflite}[fmt](ops, direct, module_weights(module), batch=x.shape[0])
    a, b = run_file(ref, x.numpy()), run_file(direct, x.numpy())
    assert a.shape == b.shape
    assert float(np.abs(a - b).max()) <= TOL * max(1.0, float(np.abs(a).max())), ops[0].key
    graph = onnx_ops if fmt == "onnx" else tflite_ops
    assert graph(direct) == graph(ref), ops[0].key


def test_sample_covers_every_variant() -> None:
    kinds = {variant(op) for op in sample_ops(1)}
    assert {v[0] for v in kinds} == {"Conv", "expanded_conv", "Conv_1", "AvgPool2D", "Conv_2", "Logits"}
    blocks = {v[1:6] for v in kinds if v[0] == "expanded_conv"}
    assert {(se, hs) for _, se, hs, _, _ in blocks} == {(False, False), (True, False), (False, True), (True, True)}
    assert {(skip, stride) for _, _, _, skip, stride in blocks} >= {(True, 1), (False, 2)}


def test_onnx_operators_match_torch_export(tmp_path) -> None:
    for i, op in enumerate(sample_ops(3)):
        compare(tmp_path, "onnx", [op], with_random_bn(build_op(op), i), op_input(op))


@pytest.mark.parametrize("seed,width", [(0, 1.0), (1, 1.2)])
def test_onnx_subnets_match_torch_export(tmp_path, seed: int, width: float) -> None:
    arch = sample_arch(np.random.default_rng(seed), space_for_width(width))
    net = with_random_bn(build_subnet(arch), seed)
    compare(tmp_path, "onnx", subnet_ops(arch), net, torch.randn(1, 3, arch.r, arch.r))


def test_onnx_batch(tmp_path) -> None:
    op = sample_ops(1)[3]
    compare(tmp_path, "onnx", [op], with_random_bn(build_op(op), 0), op_input(op, batch=3))


@pytest.mark.slow
def test_tflite_operators_match_litert_torch(tmp_path) -> None:
    for i, op in enumerate(sample_ops(1)):
        compare(tmp_path, "tflite", [op], with_random_bn(build_op(op), i), op_input(op))


@pytest.mark.slow
@pytest.mark.parametrize("seed,width", [(0, 1.0), (1, 1.2)])
def test_tflite_subnets_match_litert_torch(tmp_path, seed: int, width: float) -> None:
    arch = sample_arch(np.random.default_rng(seed), space_for_width(width))
    net = with_random_bn(build_subnet(arch), seed)
    compare(tmp_path, "tflite", subnet_ops(arch), net, torch.randn(1, 3, arch.r, arch.r))


def test_random_weights_are_seeded_like_a_fresh_module(tmp_path) -> None:
    arch = sample_arch(np.random.default_rng(3), space_for_width(1.0))
    ops = subnet_ops(arch)
    w = random_weights(ops, 7)
    fresh = module_weights(build_subnet(arch).eval())
    assert sorted(w) == sorted(fresh)  # the same names and shapes as the folded torch module
    assert all(w[k].shape == fresh[k].shape for k in w)
    assert all(np.abs(w[k]).max() <= np.abs(fresh[k]).max() * 1.5 + 1e-6 for k in w if "weight" in k)
    for fmt, build in (("onnx", build_onnx), ("tflite", build_tflite)):
        a, b, c = (tmp_path / f"{n}.{fmt}" for n in "abc")
        build(ops, a, seed=7)
        build(ops, b, seed=7)
        build(ops, c, seed=8)
        assert a.read_bytes() == b.read_bytes() != c.read_bytes()
        x = np.random.default_rng(0).standard_normal((1, 3, arch.r, arch.r)).astype(np.float32)
        out = run_file(a, x)
        assert out.shape == (1, 1000) and np.isfinite(out).all() and out.std() > 0


@pytest.mark.parametrize("backend", ["onnxruntime", "tflite"])
def test_backend_builds_directly_and_fast(tmp_path, backend: str) -> None:
    be = get_backend(backend)
    assert be.direct and "direct" in be.build_tag()
    spec = space_for_width(1.0)
    items = [Item.op(op) for op in list(enumerate_ops(spec, [128]).values())[:20]]
    items.append(Item.subnet(sample_arch(np.random.default_rng(0), spec)))
    t0 = time.perf_counter()
    res = Builder(be, tmp_path, jobs=2).build(items)
    assert time.perf_counter() - t0 < 20  # in-process, milliseconds per file (a pool of exporters takes minutes)
    assert all(r.ok and os.path.getsize(r.path) > 0 for r in res.values())
    op = items[3].opspec()
    x = op_input(op).numpy()
    assert run_file(res[items[3].id].path, x).shape == (1, op.out_shape[2], *op.out_shape[:2])


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_packed_file_expands_on_the_board_side(tmp_path, fmt: str) -> None:
    """The packed form compresses to almost nothing; the agent's expansion gives a file of the same size and
    graph whose weights are redrawn from the same ranges (only weight bytes differ)."""
    from ofakit.ofa_core.direct import BUILDERS, PACKED_SUFFIX
    from ofakit.profiler.agent.ofakit_agent import AgentError, _read_items, expand_packed

    op = OpSpec.from_key("Conv_1-input:7x7x160-output:7x7x960")
    model, packed = tmp_path / f"m.{fmt}", tmp_path / f"m.{fmt}{PACKED_SUFFIX}"
    BUILDERS[fmt]([op], model, seed=5, pack_to=packed)
    assert packed.stat().st_size < model.stat().st_size / 100
    out = tmp_path / f"board.{fmt}"
    expand_packed(str(packed), str(out))
    a, b = np.frombuffer(model.read_bytes(), np.uint8), np.frombuffer(out.read_bytes(), np.uint8)
    assert a.size == b.size and 0.9 * 160 * 960 * 4 < np.count_nonzero(a != b) <= 161 * 960 * 4
    graph = onnx_ops if fmt == "onnx" else tflite_ops
    assert graph(out) == graph(model)
    x = op_input(op).numpy()
    ya, yb = run_file(model, x), run_file(out, x)
    assert ya.shape == yb.shape and np.isfinite(yb).all() and 0.5 < yb.std() / ya.std() < 2
    # the agent's ops file: a "packed" entry is expanded when the model is missing, then reused
    ops_file = tmp_path / "ops.jsonl"
    ops_file.write_text(f'{{"id": "x", "model": "e.{fmt}", "packed": "{packed.name}"}}\n')
    assert _read_items(str(ops_file), str(tmp_path)) == [("x", str(tmp_path / f"e.{fmt}"))]
    assert (tmp_path / f"e.{fmt}").read_bytes() == out.read_bytes()
    packed.write_bytes(b"not gzip")
    os.utime(packed, (time.time() + 5, time.time() + 5))
    with pytest.raises(AgentError, match="cannot expand"):
        _read_items(str(ops_file), str(tmp_path))
