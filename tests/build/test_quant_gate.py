"""INT8 quantization and the accuracy gate, on real radiographs (tests/data/cxr64)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from helpers import bundle_dir
from onnx import TensorProto, numpy_helper

from appliance.inference.preprocess import cxr_preprocess
from build.dequantize import float_model_from_qdq
from build.gate import AccuracyGateError, check_accuracy_gate, gate_models
from build.quantize_int8 import quantize_int8

ROOT = Path(__file__).resolve().parents[2]
CXR = bundle_dir("cxr-pneumonia")
DATA = ROOT / "tests" / "data" / "cxr64"


@pytest.fixture(scope="module")
def cxr_val() -> tuple[np.ndarray, np.ndarray]:
    """60 real validation radiographs (never trained on), preprocessed as served."""
    with open(DATA / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    x = np.stack(
        [
            cxr_preprocess(
                cv2.imread(str(DATA / r["file"]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
            )
            for r in rows
        ]
    )
    return x, np.array([int(r["pneumonia"]) for r in rows])


def test_gate_arithmetic_and_message() -> None:
    assert check_accuracy_gate(0.950, 0.945) == pytest.approx(-0.005)
    with pytest.raises(AccuracyGateError, match=r"differs by 0\.0200, 0\.0100 more than"):
        check_accuracy_gate(0.95, 0.93)


@pytest.fixture(scope="module")
def cxr_float(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The float model the committed INT8 ensemble stands for (the bundle ships INT8
    only): weights dequantized, activation Q/DQ pairs removed."""
    return float_model_from_qdq(CXR / "model.int8.onnx",
                                tmp_path_factory.mktemp("float") / "model.onnx")


def test_the_float_model_is_the_int8_model_without_rounding(cxr_float: Path) -> None:
    ops = {n.op_type for n in onnx.load(str(cxr_float)).graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"} and "Conv" in ops


def test_committed_int8_passes_the_gate(cxr_val: tuple, cxr_float: Path) -> None:
    fp32, int8, delta = gate_models(cxr_float, CXR / "model.int8.onnx", *cxr_val)
    assert fp32 > 0.9 and abs(delta) <= 0.01


def test_gate_fails_on_a_broken_int8_model(cxr_val: tuple, cxr_float: Path,
                                           tmp_path: Path) -> None:
    """Negating the quantized weights of every member's first convolution keeps a valid
    model that runs — only the gate can tell it is wrong."""
    proto = onnx.load(str(CXR / "model.int8.onnx"))
    firsts = [  # a first convolution takes the one grey channel: 16 x 1 x 3 x 3
        i for i in proto.graph.initializer
        if i.data_type == TensorProto.INT8 and len(i.dims) == 4 and i.dims[1] == 1
    ]
    assert firsts
    for weight in firsts:
        weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    broken = tmp_path / "broken.int8.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(AccuracyGateError, match="accuracy gate failed"):
        gate_models(cxr_float, broken, *cxr_val)


def test_quantize_writes_symmetric_qdq_for_tensorrt(cxr_val: tuple, cxr_float: Path,
                                                     tmp_path: Path) -> None:
    x, y = cxr_val
    out = tmp_path / "q.onnx"
    quantize_int8(cxr_float, out, x[:32])
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # QDQ, not QOperator
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    zero_points = [
        inits[n.input[2]]
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    # TensorRT 10 parses DequantizeLinear of INT8/FP8/INT4 only: biases stay float
    dq_inputs = [inits[n.input[0]].dtype for n in proto.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert dq_inputs and {str(d) for d in dq_inputs} == {"int8"}
    _, _, delta = gate_models(cxr_float, out, x, y)
    assert abs(delta) <= 0.01
