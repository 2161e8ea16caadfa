"""Model files built straight from :class:`~ofakit.ofa_core.ops.OpSpec` lists: ONNX graphs with ``onnx.helper`` and
TFLite flatbuffers with the TFLite schema, in milliseconds and without torch.

Each file has the graph the torch exporters of :mod:`ofakit.ofa_core.export` write for the same module (BatchNorm folded
into the convs; for TFLite the same op codes, fused activations, explicit padding and NCHW<->NHWC transposes
that litert-torch emits), so a runtime executes the same kernels. Weights are given by name, as the folded torch
module's ``state_dict`` names them (:func:`module_weights`), or drawn from a seed with the distributions of a
freshly initialised module (:func:`random_weights`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .fileio import atomic_write_bytes
from .ops import BLOCK, CLASSIFIER, FEATURE_MIX, FINAL_EXPAND, POOL, STEM, OpSpec

Weights = dict[str, np.ndarray]
ONNX_INPUT, ONNX_OUTPUT = "input", "output"
ONNX_OPSET = 17
BUILD_VERSION = "v1"  # bump whenever a directly built file changes (names the model cache folder)
RELU, HSWISH = "relu", "hswish"


def op_prefixes(ops: Sequence[OpSpec]) -> list[str]:
    """State-dict prefixes of ``ops``: "" for a single op, ``layers.<i>.`` for the ops of a subnet."""
    return [""] if len(ops) == 1 else [f"layers.{i}." for i in range(len(ops))]


@dataclass
class Tensor:
    """A tensor of the graph being built: its name and its NCHW shape."""

    name: str
    shape: tuple[int, ...]


class Emitter:
    """Graph primitives the op walker (:func:`emit_ops`) calls; subclasses write ONNX or TFLite.

    The base class only does shapes and weight bookkeeping: ``weights`` are looked up by name, or drawn from
    ``rng`` (freshly-initialised torch distributions, BN folded: conv biases zero) when missing.
    """

    def __init__(self, weights: Weights | None = None, rng: np.random.Generator | None = None):
        self.weights: Weights = dict(weights or {})
        self.rng = rng
        self.stored: list[np.ndarray] = []  # float constants as written into the file (for :func:`pack`)

    def locate(self, data: bytes) -> list[tuple[int, np.ndarray]]:
        """(offset in the written file ``data``, array) of each large float constant, found in the order they
        were stored (the order both formats write them in)."""
        out, start = [], 0
        for arr in self.stored:
            raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            if len(raw) < PACK_MIN_BYTES or arr.min() == arr.max():
                continue
            at = data.find(raw, start)
            at = at if at >= 0 else data.find(raw)
            if at < 0:
                raise RuntimeError(f"packing: a constant of shape {arr.shape} not found in the file")
            out.append((at, arr))
            start = at + len(raw)
        return out

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int, zero: bool = False) -> np.ndarray:
        if name not in self.weights:
            if self.rng is None:
                raise KeyError(f"weight {name!r} missing")
            bound = 1.0 / np.sqrt(fan_in)
            self.weights[name] = (np.zeros(shape, np.float32) if zero else
                                  self.rng.uniform(-bound, bound, shape).astype(np.float32))
        w = np.asarray(self.weights[name], dtype=np.float32)
        if w.shape != shape:
            raise ValueError(f"weight {name!r} has shape {w.shape}, expected {shape}")
        return w

    def conv(self, x: Tensor, name: str, cout: int, kernel: int, stride: int, groups: int, act: str | None,
             bias: bool = True, folded: bool = True) -> Tensor:
        """kxk conv with 'same' padding (``folded``: a BN was folded into it, so a fresh bias is zero)."""
        cin = x.shape[1]
        fan_in = cin // groups * kernel * kernel
        w = self.weight(name + ".weight", (cout, cin // groups, kernel, kernel), fan_in)
        b = self.weight(name + ".bias", (cout,), fan_in, zero=folded) if bias else None
        h = (x.shape[2] - 1) // stride + 1
        return self._conv(x, name, w, b, stride, groups, act, (x.shape[0], cout, h, h))

    def linear(self, x: Tensor, name: str, cout: int) -> Tensor:
        cin = int(np.prod(x.shape[1:]))
        w = self.weight(name + ".weight", (cout, cin), cin)
        b = self.weight(name + ".bias", (cout,), cin)
        return self._linear(x, name, w, b, (x.shape[0], cout))

    def se(self, x: Tensor, name: str, mid: int) -> Tensor:
        """Squeeze-excite: mean -> 1x1 reduce + ReLU -> 1x1 expand -> h-sigmoid -> scale ``x``."""
        c = x.shape[1]
        s = self.mean(x, name)
        wr = self.weight(name + ".reduce.weight", (mid, c, 1, 1), c)
        br = self.weight(name + ".reduce.bias", (mid,), c)
        s = self._conv(s, name + ".reduce", wr, br, 1, 1, RELU, (x.shape[0], mid, 1, 1))
        we = self.weight(name + ".expand.weight", (c, mid, 1, 1), mid)
        be = self.weight(name + ".expand.bias", (c,), mid)
        return self._gate(x, s, name, we, be)

    # -- what subclasses write ------------------------------------------------------------------------------
    def begin(self, x: Tensor) -> None:
        """Called once with the graph input."""

    def end(self, y: Tensor) -> Tensor:
        """Called once with the last tensor; returns the graph output."""
        return y

    def _conv(self, x: Tensor, name: str, w: np.ndarray, b: np.ndarray | None, stride: int, groups: int,
              act: str | None, shape: tuple[int, ...]) -> Tensor:
        return Tensor(name, shape)

    def _linear(self, x: Tensor, name: str, w: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> Tensor:
        return Tensor(name, shape)

    def _gate(self, x: Tensor, s: Tensor, name: str, w: np.ndarray, b: np.ndarray) -> Tensor:
        return Tensor(name, x.shape)

    def mean(self, x: Tensor, name: str) -> Tensor:
        """Mean over H and W, dims kept."""
        return Tensor(name + ".mean", x.shape[:2] + (1, 1))

    def add(self, a: Tensor, b: Tensor, name: str) -> Tensor:
        return Tensor(name + ".add", a.shape)


def emit_op(e: Emitter, op: OpSpec, p: str, x: Tensor) -> Tensor:
    """Emit one operator (state-dict prefix ``p``) on ``x``; mirrors :mod:`ofakit.ofa_core.static`'s modules."""
    cout = op.out_shape[2]
    if op.kind in (STEM, FINAL_EXPAND):
        return e.conv(x, p + "conv", cout, 3 if op.kind == STEM else 1, 2 if op.kind == STEM else 1, 1, HSWISH)
    if op.kind == FEATURE_MIX:
        return e.conv(x, p + "conv", cout, 1, 1, 1, HSWISH, bias=False)
    if op.kind == POOL:
        return e.mean(x, p + "pool")
    if op.kind == CLASSIFIER:
        return e.linear(x, p + "linear", cout)
    if op.kind != BLOCK:
        raise ValueError(f"unknown operator kind {op.kind!r}")
    act = HSWISH if op.hswish else RELU
    y = e.conv(x, p + "expand.conv", op.mid, 1, 1, 1, act) if op.has_expand_conv else x
    y = e.conv(y, p + "depthwise.conv", op.mid, op.kernel, op.stride, op.mid, act)
    if op.se:
        y = e.se(y, p + "se", op.se_mid)
    y = e.conv(y, p + "project.conv", cout, 1, 1, 1, None)
    return e.add(x, y, p + "residual") if op.idskip else y


def emit_ops(e: Emitter, ops: Sequence[OpSpec], batch: int = 1) -> Tensor:
    """Emit ``ops`` in order on an NCHW input named ``input``; returns the output tensor."""
    h, w, c = ops[0].in_shape
    x = Tensor(ONNX_INPUT, (batch, c, h, w))
    e.begin(x)
    for op, p in zip(ops, op_prefixes(ops)):
        x = emit_op(e, op, p, x)
    return e.end(x)


def random_weights(ops: Sequence[OpSpec], seed: int) -> Weights:
    """Weights for ``ops`` drawn from ``seed`` like a freshly initialised, BN-folded torch module's."""
    e = Emitter(rng=np.random.default_rng(seed))
    emit_ops(e, ops)
    return e.weights


def module_weights(module: Any) -> Weights:
    """The BN-folded float32 weights of a torch module of :mod:`ofakit.ofa_core.static`, by state-dict name."""
    from .bn import fold_bn

    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in fold_bn(module).state_dict().items()
            if v.dtype.is_floating_point}


# -- ONNX ---------------------------------------------------------------------------------------------------
class OnnxEmitter(Emitter):
    """Writes the graph torch's TorchScript ONNX exporter writes (opset 17, initializers by state-dict name)."""

    def __init__(self, weights: Weights | None = None, rng: np.random.Generator | None = None):
        super().__init__(weights, rng)
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.inputs: list[Tensor] = []

    def _node(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        out = f"/{name}/{op_type}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"/{name}/{op_type}", **attrs))
        return out

    def _init(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = value
        self.stored.append(value)
        return name

    def begin(self, x: Tensor) -> None:
        self.inputs.append(x)

    def _act(self, y: str, act: str | None, name: str) -> str:
        if act is None:
            return y
        return self._node("HardSwish" if act == HSWISH else "Relu", [y], name + ".act")

    def _conv(self, x, name, w, b, stride, groups, act, shape):
        k = w.shape[2]
        ins = [x.name, self._init(name + ".weight", w)] + ([self._init(name + ".bias", b)] if b is not None else [])
        y = self._node("Conv", ins, name, dilations=[1, 1], group=groups, kernel_shape=[k, k],
                       pads=[k // 2] * 4, strides=[stride, stride])
        return Tensor(self._act(y, act, name), shape)

    def _linear(self, x, name, w, b, shape):
        flat = self._node("Flatten", [x.name], name, axis=1)
        y = self._node("Gemm", [flat, self._init(name + ".weight", w), self._init(name + ".bias", b)], name,
                       alpha=1.0, beta=1.0, transB=1)
        return Tensor(y, shape)

    def _gate(self, x, s, name, w, b):
        g = self._conv(s, name + ".expand", w, b, 1, 1, None, x.shape[:2] + (1, 1))
        g = self._node("HardSigmoid", [g.name], name + ".gate", alpha=1.0 / 6)
        return Tensor(self._node("Mul", [x.name, g], name), x.shape)

    def mean(self, x, name):
        return Tensor(self._node("ReduceMean", [x.name], name, axes=[2, 3], keepdims=1), x.shape[:2] + (1, 1))

    def add(self, a, b, name):
        return Tensor(self._node("Add", [a.name, b.name], name), a.shape)

    def model(self, y: Tensor) -> Any:
        from onnx import TensorProto, helper, numpy_helper

        # the graph output is named "output": rename the last node's output
        last = self.nodes[-1]
        last.output[0] = ONNX_OUTPUT
        x = self.inputs[0]
        graph = helper.make_graph(
            self.nodes, "main_graph",
            [helper.make_tensor_value_info(x.name, TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, list(y.shape))],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=8,
                                 producer_name="ofakit")


def build_onnx(ops: Sequence[OpSpec], path: str | os.PathLike, weights: Weights | None = None,
               seed: int = 0, batch: int = 1, pack_to: str | os.PathLike | None = None) -> None:
    """Write ``ops`` (one op, or a whole subnet's ops) as an ONNX file at ``path`` (atomically); weights by
    name, missing ones drawn from ``seed``; ``pack_to``: also write its packed form there (:func:`pack`)."""
    e = OnnxEmitter(weights, np.random.default_rng(seed))
    y = emit_ops(e, ops, batch)
    if not e.nodes:
        raise ValueError("an ONNX graph needs at least one node")
    _write(e, e.model(y).SerializeToString(), path, seed, pack_to)


def _write(e: Emitter, data: bytes, path: str | os.PathLike, seed: int, pack_to: str | os.PathLike | None) -> None:
    """Write the file (and its packed form first: a file that exists has one); no fsync: a model file can
    always be built again."""
    if pack_to is not None:
        atomic_write_bytes(pack_to, pack(data, e.locate(data), seed), sync=False)
    atomic_write_bytes(path, data, sync=False)


PACKED_SUFFIX = ".ofz"
PACK_MIN_BYTES = 256  # smaller constants stay in the packed file as they are


def pack(data: bytes, located: Sequence[tuple[int, np.ndarray]], seed: int) -> bytes:
    """A model file in a form that compresses to almost nothing: gzip of a JSON header line and the file with
    every large float constant zeroed; the header lists each zeroed range as ``[offset, bytes, low, high]``. The
    agent (``expand_packed``) refills each range with uniform(low, high) float32 values from the header's seed:
    weights of the same distribution as the file's (uniform, as drawn), so the same latency, without sending
    them."""
    import gzip
    import json

    buf = bytearray(data)
    view = np.frombuffer(buf, np.uint8)
    fill = []
    for at, arr in located:
        n = arr.size * 4
        view[at:at + n] = 0
        fill.append([at, n, float(arr.min()), float(arr.max())])
    del view  # releases the buffer export of ``buf``
    header = json.dumps({"format": "ofakit-packed-1", "size": len(data), "seed": int(seed) % 2**32,
                         "fill": fill}, separators=(",", ":")).encode()
    return gzip.compress(header + b"\n" + buf, compresslevel=1, mtime=0)


BUILDERS: dict[str, Callable[..., None]] = {"onnx": build_onnx}


# -- TFLite -------------------------------------------------------------------------------------------------
def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # the optional 'tflite' extra
        from .errors import UserError

        raise UserError("building .tflite files needs ai-edge-litert (pip install 'ofakit[tflite]')") from None
    return schema_py_generated


def _aligned_buffer(S: Any) -> type:
    """A ``BufferT`` whose data vector is 16-byte aligned (packed straight from a numpy array)."""

    class AlignedBuffer(S.BufferT):
        def Pack(self, builder: Any) -> int:
            data = None
            if self.data is not None:
                payload = self.data.tobytes()
                builder.StartVector(1, len(payload), 16)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                self.from_end = len(builder.Bytes) - builder.head  # the payload's distance from the end
                data = builder.EndVector()
            S.BufferStart(builder)
            if data is not None:
                S.BufferAddData(builder, data)
            return S.BufferEnd(builder)

    return AlignedBuffer


_NCHW_TO_NHWC, _NHWC_TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


class TfliteEmitter(Emitter):
    """Writes the graph litert-torch writes for the same module: NHWC inside (one TRANSPOSE, or a RESHAPE for
    1x1 maps, at the input and at the output), explicit PAD before strided convs, ReLU fused into convs,
    HARD_SWISH as its own op, h-sigmoid as a RELU6-fused conv (bias + 3) times a 1/6 constant."""

    def __init__(self, weights: Weights | None = None, rng: np.random.Generator | None = None):
        super().__init__(weights, rng)
        self.S = _schema()
        self._buffer = _aligned_buffer(self.S)
        self.tensors: list = []
        self.buffers: list = [self.S.BufferT()]
        self.operators: list = []
        self.codes: dict[int, int] = {}
        self.index: dict[str, int] = {}  # tensor name -> tensor index
        self.layout: dict[str, str] = {}  # tensor name -> "nchw" | "nhwc" | "2d"
        self.as_nhwc: dict[str, Tensor] = {}  # NCHW tensor name -> its NHWC copy
        self.inputs: list[int] = []

    # low level
    def _tensor(self, name: str, shape: Sequence[int], data: np.ndarray | None = None,
                dtype: int | None = None) -> int:
        S = self.S
        t = S.TensorT()
        t.name, t.shape = name.encode(), np.asarray(shape, np.int32)
        t.type = dtype if dtype is not None else S.TensorType.FLOAT32
        t.buffer = 0
        if data is not None:
            buf = self._buffer()
            buf.data = np.ascontiguousarray(data)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def _const(self, name: str, value: np.ndarray) -> int:
        value = np.asarray(value)
        dtype = self.S.TensorType.INT32 if value.dtype.kind == "i" else self.S.TensorType.FLOAT32
        value = value.astype(np.int32 if value.dtype.kind == "i" else np.float32)
        return self._tensor(name, value.shape, value, dtype)

    def _op(self, code: str, inputs: list[int], out: Tensor, layout: str, options: Any = None,
            options_type: str = "NONE") -> Tensor:
        S = self.S
        builtin = getattr(S.BuiltinOperator, code)
        self.codes.setdefault(builtin, len(self.codes))
        o = S.OperatorT()
        o.opcodeIndex = self.codes[builtin]
        o.inputs = np.asarray(inputs, np.int32)
        shape = out.shape if layout != "nhwc" else tuple(out.shape[i] for i in _NCHW_TO_NHWC)
        o.outputs = np.asarray([self._tensor(out.name, shape)], np.int32)
        o.builtinOptionsType = getattr(S.BuiltinOptions, options_type)
        o.builtinOptions = options
        self.operators.append(o)
        self.layout[out.name] = layout
        return out

    def _options(self, kind: str, **fields: Any) -> Any:
        opts = getattr(self.S, kind + "T")()
        for k, v in fields.items():
            setattr(opts, k, v)
        return opts

    def _nhwc(self, x: Tensor) -> Tensor:
        """``x`` in NHWC: itself, or a TRANSPOSE (RESHAPE for 1x1 maps) of an NCHW tensor, made once."""
        if self.layout[x.name] == "nhwc":
            return x
        if x.name not in self.as_nhwc:
            self.as_nhwc[x.name] = self._relayout(x, _NCHW_TO_NHWC, "nhwc", x.shape)
        return self.as_nhwc[x.name]

    def _relayout(self, x: Tensor, perm: tuple[int, ...], layout: str, nchw_shape: tuple[int, ...]) -> Tensor:
        out = Tensor(x.name + f".{layout}", nchw_shape)
        target = nchw_shape if layout == "nchw" else tuple(nchw_shape[i] for i in _NCHW_TO_NHWC)
        if x.shape[2] == x.shape[3] == 1:
            return self._op("RESHAPE", [self.index[x.name], self._const(out.name + ".shape", target)], out, layout)
        return self._op("TRANSPOSE", [self.index[x.name], self._const(out.name + ".perm", perm)], out, layout)

    # primitives
    def begin(self, x: Tensor) -> None:
        self.inputs.append(self._tensor(x.name, x.shape))
        self.layout[x.name] = "nchw"

    def end(self, y: Tensor) -> Tensor:
        return self._relayout(y, _NHWC_TO_NCHW, "nchw", y.shape) if self.layout[y.name] == "nhwc" else y

    def _conv(self, x, name, w, b, stride, groups, act, shape):
        S = self.S
        x = self._nhwc(x)
        k, cout = w.shape[2], w.shape[0]
        src = self.index[x.name]
        padding = S.Padding.VALID if k == 1 else S.Padding.SAME
        p, size = k // 2, x.shape[2]
        if k > 1 and max(((size - 1) // stride) * stride + k - size, 0) != 2 * p:  # TF's SAME is not symmetric
            padded = Tensor(name + ".pad", (x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p))
            pads = np.array([[0, 0], [p, p], [p, p], [0, 0]], np.int32)
            src = self.index[self._op("PAD", [src, self._const(name + ".pads", pads)], padded, "nhwc").name]
            padding = S.Padding.VALID
        fused = {RELU: S.ActivationFunctionType.RELU, "relu6": S.ActivationFunctionType.RELU6}.get(
            act, S.ActivationFunctionType.NONE)
        bias = np.zeros(cout, np.float32) if b is None else b
        common = dict(padding=padding, strideW=stride, strideH=stride, fusedActivationFunction=fused,
                      dilationWFactor=1, dilationHFactor=1)
        if groups > 1:
            kernel = w[:, 0].transpose(1, 2, 0)[None]  # (1, k, k, C)
            code, opts = "DEPTHWISE_CONV_2D", self._options("DepthwiseConv2DOptions", depthMultiplier=1, **common)
        else:
            kernel = w.transpose(0, 2, 3, 1)  # OHWI
            code, opts = "CONV_2D", self._options("Conv2DOptions", **common)
        ins = [src, self._const(name + ".weight", kernel), self._const(name + ".bias", bias)]
        y = self._op(code, ins, Tensor(name + ".out", shape), "nhwc", opts, type(opts).__name__[:-1])
        if act == HSWISH:
            y = self._op("HARD_SWISH", [self.index[y.name]], Tensor(name + ".act", shape), "nhwc")
        return y

    def _linear(self, x, name, w, b, shape):
        keep = self.layout[x.name] == "nchw"
        src = self.index[x.name]
        if keep:  # a lone classifier: NCHW (N, C, 1, 1) -> (N, C)
            flat = Tensor(name + ".flat", (x.shape[0], x.shape[1]))
            src = self.index[self._op("RESHAPE", [src, self._const(name + ".shape", flat.shape)], flat, "2d").name]
        opts = self._options("FullyConnectedOptions", keepNumDims=keep)
        ins = [src, self._const(name + ".weight", w), self._const(name + ".bias", b)]
        return self._op("FULLY_CONNECTED", ins, Tensor(name + ".out", shape), "2d", opts, "FullyConnectedOptions")

    def _gate(self, x, s, name, w, b):
        g = self._conv(s, name + ".expand", w, b + 3.0, 1, 1, "relu6", x.shape[:2] + (1, 1))
        g = self._op("MUL", [self.index[g.name], self._const(name + ".sixth", np.float32(1.0 / 6))],
                     Tensor(name + ".gate", g.shape), "nhwc", self._options("MulOptions"), "MulOptions")
        x = self._nhwc(x)
        return self._op("MUL", [self.index[x.name], self.index[g.name]], Tensor(name + ".scaled", x.shape), "nhwc",
                        self._options("MulOptions"), "MulOptions")

    def mean(self, x, name):
        layout = self.layout[x.name]
        axes = np.array([2, 3] if layout == "nchw" else [1, 2], np.int32)
        return self._op("MEAN", [self.index[x.name], self._const(name + ".axes", axes)],
                        Tensor(name + ".mean", x.shape[:2] + (1, 1)), layout,
                        self._options("ReducerOptions", keepDims=True), "ReducerOptions")

    def add(self, a, b, name):
        """In ``a``'s layout: a lone block adds in NCHW after turning its output back, a subnet in NHWC."""
        layout = self.layout[a.name]
        if self.layout[b.name] != layout:
            b = self._relayout(b, _NHWC_TO_NCHW, "nchw", b.shape)
        return self._op("ADD", [self.index[a.name], self.index[b.name]], Tensor(name + ".add", a.shape), layout,
                        self._options("AddOptions", potScaleInt16=True), "AddOptions")

    def locate(self, data: bytes) -> list[tuple[int, np.ndarray]]:
        """Where each large float buffer landed, as recorded while packing (no search)."""
        return [(len(data) - b.from_end, b.data) for b in self.buffers[1:]
                if b.data.dtype == np.float32 and b.data.nbytes >= PACK_MIN_BYTES and b.data.min() != b.data.max()]

    def flatbuffer(self, y: Tensor) -> bytes:
        import flatbuffers

        S = self.S
        sg = S.SubGraphT()
        sg.tensors, sg.operators, sg.name = self.tensors, self.operators, b"main"
        sg.inputs = np.asarray(self.inputs, np.int32)
        sg.outputs = np.asarray([self.index[y.name]], np.int32)
        m = S.ModelT()
        m.version, m.description, m.subgraphs, m.buffers = 3, b"ofakit direct build", [sg], self.buffers
        m.operatorCodes = [None] * len(self.codes)
        for builtin, i in self.codes.items():
            oc = S.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 1
            m.operatorCodes[i] = oc
        size = sum(b.data.nbytes for b in self.buffers if b.data is not None)
        builder = flatbuffers.Builder(size + 65536)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def build_tflite(ops: Sequence[OpSpec], path: str | os.PathLike, weights: Weights | None = None,
                 seed: int = 0, batch: int = 1, pack_to: str | os.PathLike | None = None) -> None:
    """Write ``ops`` (one op, or a whole subnet's ops) as a TFLite file at ``path`` (atomically); weights by
    name, missing ones drawn from ``seed``; ``pack_to``: also write its packed form there (:func:`pack`)."""
    e = TfliteEmitter(weights, np.random.default_rng(seed))
    y = emit_ops(e, ops, batch)
    _write(e, e.flatbuffer(y), path, seed, pack_to)


BUILDERS["tflite"] = build_tflite
