"""The float model an INT8 QDQ model stands for: weights dequantized, Q/DQ pairs removed.

An ensemble bundle ships only ``model.int8.onnx`` (its FP32 file would be several MB).
The FP32 graph it approximates is still well defined — every weight is ``(q - zero
point) * scale`` and every activation Q/DQ pair is an identity up to rounding — so a
check that needs a float reference (the INT8 gate's tests, a debugging session) can
rebuild it from the bundle instead of the bundle carrying it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int
                 ) -> np.ndarray:
    q = q.astype(np.float32)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:  # per-channel along ``axis``
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def float_model_from_qdq(int8_path: Path, out_path: Path) -> Path:
    proto = onnx.load(str(int8_path))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    produced_by = {out: n for n in graph.node for out in n.output}
    rename: dict[str, str] = {}
    drop: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:  # a weight (or bias) stored quantized
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else None
            value = _dequantized(numpy_helper.to_array(inits[source]),
                                 numpy_helper.to_array(inits[node.input[1]]), zero, axis)
            new_inits.append(numpy_helper.from_array(value, node.output[0]))
            drop.append(node)
        elif source in produced_by and produced_by[source].op_type == "QuantizeLinear":
            quant = produced_by[source]
            rename[node.output[0]] = quant.input[0]  # Q then DQ: the float it started as
            drop += [node, quant]
    kept = [n for n in graph.node if all(n is not d for d in drop)]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for output in graph.output:
        output.name = rename.get(output.name, output.name)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for n in kept for name in n.input}
    initializers = [i for i in graph.initializer if i.name in used] + \
        [i for i in new_inits if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    return Path(out_path)
