"""Would TensorRT 10's ONNX parser take this graph? Checked on the CPU, from the file alone.

A graph TensorRT refuses fails only on a Jetson, minutes into an engine build, at a
clinic; this check fails it in CI and in ``appliance doctor`` instead. It holds a model
to what the documents below say, for the operators our bundles use (an operator missing
from ``OPERATORS`` is reported, so whoever adds one reads the document first):

- onnx-tensorrt's operator support matrix, ``docs/operators.md`` in onnx/onnx-tensorrt,
  https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md — the rows below
  are from its TensorRT 10.15 revision; its TensorRT 10.0 revision says "TensorRT 10.0
  supports operators in the inclusive range of opset 9 to opset 20", which is the range
  kept here because JetPack 6.1/6.2 ship TensorRT 10.3 (10.15 allows up to opset 24).
  FP4 into DequantizeLinear is left out for the same reason (added after 10.3).
- TensorRT's "Working with Quantized Types", which operators.md points to for Q/DQ,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html :
  activations are quantized per tensor; weights may be quantized per channel along the
  output-channel axis (axis 0 of a convolution's weights).

``problems(model)`` is pure (a ModelProto in, a list of sentences out); it does not
replace building the engine, it only catches what the documents rule out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

DOCUMENT = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md"
OPSET_RANGE = (9, 20)  # TensorRT 10.0-10.3 (JetPack 6.1/6.2): "opset 9 to opset 20"

T = TensorProto
FLOATS = frozenset({T.FLOAT, T.FLOAT16, T.BFLOAT16})
INTS = frozenset({T.INT32, T.INT64})
QUANTIZED = frozenset({T.INT8, T.FLOAT8E4M3FN, T.INT4})  # into DequantizeLinear


@dataclass(frozen=True)
class Support:
    """One row of operators.md: the types of the operator's data input, its restriction."""

    types: frozenset[int]
    restriction: str = ""


# Rows of operators.md (TensorRT 10.15 revision) for what our graphs use, or may soon.
OPERATORS: dict[str, Support] = {
    "Add": Support(FLOATS | INTS),
    "AveragePool": Support(FLOATS, "2D or 3D Pooling only. `dilations` must be empty or all ones"),
    "Concat": Support(FLOATS | INTS | {T.BOOL}),
    "Conv": Support(FLOATS),
    "DequantizeLinear": Support(QUANTIZED, "`x_zero_point` must be zero"),
    "Flatten": Support(FLOATS | INTS | {T.BOOL}),
    "Gather": Support(FLOATS | INTS | {T.BOOL}),
    "Gemm": Support(FLOATS),
    "GlobalAveragePool": Support(FLOATS),
    "Identity": Support(FLOATS | INTS | {T.BOOL}),
    "MatMul": Support(FLOATS),
    "MaxPool": Support(
        FLOATS,
        "2D or 3D pooling only. `Indices` output tensor unsupported. "
        "`dilations` must be empty or all ones",
    ),
    "Mul": Support(FLOATS | INTS),
    "QuantizeLinear": Support(FLOATS, "`y_zero_point` must be 0"),
    "ReduceMean": Support(FLOATS | INTS, "`axes` must be an initializer"),
    "Relu": Support(FLOATS | INTS),
    "Reshape": Support(FLOATS | INTS | {T.BOOL}),
    "Sigmoid": Support(FLOATS),
    "Softmax": Support(FLOATS),
    "Squeeze": Support(FLOATS | INTS | {T.BOOL}, "`axes` must be resolvable to a constant"),
    "Unsqueeze": Support(FLOATS | INTS | {T.BOOL}, "`axes` must be resolvable to a constant"),
}


def per_channel_axis(consumer: onnx.NodeProto) -> int | None:
    """The output-channel axis of ``consumer``'s weights (its input 1), along which
    TensorRT takes per-channel scales; None where it takes none."""
    if consumer.op_type == "Conv":
        return 0  # (K, C, R, S)
    if consumer.op_type == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if consumer.op_type == "MatMul":
        return 1  # (K, N), 2-D weights
    return None


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


def check_file(path: Path) -> list[str]:
    """``problems`` of the ONNX file at ``path``."""
    return problems(onnx.load(str(path)))


def problems(model: onnx.ModelProto) -> list[str]:
    """Everything in ``model`` the documents say TensorRT 10 refuses (empty: none)."""
    found = list(_opset_problems(model))
    graph = _Graph(model)
    for node in model.graph.node:
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            found.append(f"{where}: custom domain {node.domain!r} needs a TensorRT plugin")
            continue
        support = OPERATORS.get(node.op_type)
        if support is None:
            found.append(f"{where}: not in the table of supported operators ({DOCUMENT})")
            continue
        data_type = graph.types.get(node.input[0]) if node.input else None
        if data_type is not None and data_type not in support.types:
            found.append(f"{where}: input type {type_name(data_type)} is not supported")
        found.extend(f"{where}: {p}" for p in graph.restrictions(node))
    return found


def _opset_problems(model: onnx.ModelProto) -> Iterator[str]:
    lo, hi = OPSET_RANGE
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not lo <= opset.version <= hi:
            yield f"opset {opset.version} is outside TensorRT 10.3's opset {lo} to {hi}"


class _Graph:
    """Element types of every tensor (by ONNX shape inference) and the initializers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.initializers = {i.name: i for i in model.graph.initializer}
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # noqa: BLE001 — an odd graph still gets the other checks
            inferred = model.graph
        self.types: dict[str, int] = {i.name: i.data_type for i in model.graph.initializer}
        for info in (*inferred.input, *inferred.value_info, *inferred.output):
            if info.type.tensor_type.elem_type:
                self.types[info.name] = info.type.tensor_type.elem_type
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def array(self, name: str) -> np.ndarray | None:
        init = self.initializers.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def restrictions(self, node: onnx.NodeProto) -> Iterator[str]:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            yield from self._quantize(node, attrs)
        elif node.op_type in ("MaxPool", "AveragePool"):
            if len(attrs.get("kernel_shape", ())) not in (2, 3):
                yield "2D or 3D pooling only"
            if any(d != 1 for d in attrs.get("dilations", ())):
                yield "`dilations` must be empty or all ones"
            if len(node.output) > 1 and node.output[1]:
                yield "the `Indices` output is unsupported"
        elif node.op_type == "ReduceMean" and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in self.initializers:
                yield "`axes` must be an initializer"
        elif node.op_type in ("Squeeze", "Unsqueeze") and len(node.input) > 1:
            if node.input[1] not in self.initializers:
                yield "`axes` must be resolvable to a constant"

    def _quantize(self, node: onnx.NodeProto, attrs: dict) -> Iterator[str]:
        quantized = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "QuantizeLinear":
            # without a zero point ONNX quantizes to uint8, which TensorRT cannot
            q_type = self.types.get(zero_point, T.UINT8) if zero_point else T.UINT8
            if q_type not in QUANTIZED:
                yield f"quantizes to {type_name(q_type)}: only INT8, FP8 or INT4"
        scale_type = self.types.get(node.input[1])
        if scale_type is not None and scale_type not in FLOATS:
            yield f"scale is {type_name(scale_type)}, not a float type"
        if zero_point is not None:
            values = self.array(zero_point)
            if values is None:
                yield "the zero point must be an initializer (and zero)"
            elif np.any(values != 0):
                yield "the zero point must be zero (TensorRT quantizes symmetrically)"
        scale = self.array(node.input[1])
        if scale is None or scale.size <= 1:
            return
        # per channel: weights only, along the output-channel axis of what uses them
        if quantized not in self.initializers:
            yield "per-channel scales on an activation: TensorRT quantizes those per tensor"
            return
        axis = int(attrs.get("axis", 1))
        rank = len(self.initializers[quantized].dims)
        axis = axis + rank if axis < 0 else axis
        for user in self.consumers.get(node.output[0], []):
            if list(user.input[1:2]) != [node.output[0]]:
                continue  # a bias: INT32, refused above as a type
            want = per_channel_axis(user)
            if want is None:
                yield f"per-channel weights into {user.op_type}: TensorRT takes none"
            elif axis != want:
                yield f"per-channel axis {axis} into {user.op_type}: TensorRT needs {want}"
