"""Every committed ONNX held to TensorRT 10's documented ONNX support (onnx-tensorrt's
docs/operators.md, see appliance/inference/engines/trt_support.py), so a graph TensorRT
would refuse fails here, on a CPU, before a Jetson spends minutes finding out.

No TensorRT here: these check the graphs against the document, not against TensorRT.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from appliance.inference.bundle import find_bundles
from appliance.inference.engines.trt_support import OPERATORS, check_file, problems
from build.quantize_int8 import ArrayCalibrationReader, quantize_int8

REPO = Path(__file__).resolve().parents[3]
COMMITTED = sorted(
    onnx_file
    for bundle in find_bundles(REPO / "models")
    for onnx_file in (bundle / "model.onnx", bundle / "model.int8.onnx")
    if onnx_file.is_file()
)
# A 1.0.0 bundle from before QuantizeBias=False: its conv biases go into DequantizeLinear
# as int32, which TensorRT 10's parser refuses (onnx/onnx-tensorrt#850).
OLD_BUNDLE = ("2eaabfc", "models/cxr-pneumonia/1.0.0/model.int8.onnx")


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO / "models")))
def test_every_committed_model_is_within_tensorrt_10_support(path: Path) -> None:
    assert check_file(path) == []


def test_every_bundle_has_a_model_checked() -> None:
    assert {p.parent for p in COMMITTED} == set(find_bundles(REPO / "models"))


# -- a tiny graph through ONNX Runtime's quantizer, with and without int8 biases --------


def conv_model(folder: Path) -> Path:
    """Conv (with bias) -> Relu -> GlobalAveragePool -> Flatten -> Gemm, FP32."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(2, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    path = folder / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


CALIBRATION = np.random.default_rng(1).random((8, 1, 8, 8)).astype(np.float32)


def test_the_build_pipelines_quantizer_writes_a_graph_tensorrt_takes(tmp_path: Path) -> None:
    int8 = tmp_path / "int8.onnx"
    quantize_int8(conv_model(tmp_path), int8, CALIBRATION)
    assert check_file(int8) == []
    assert check_file(tmp_path / "fp32.onnx") == []


def test_int32_biases_fail_as_the_old_bundles_did(tmp_path: Path) -> None:
    """The 1.0.0 bundles' settings: ONNX Runtime's default QuantizeBias=True."""
    int8 = tmp_path / "int8.onnx"
    quantize_static(
        str(conv_model(tmp_path)),
        str(int8),
        ArrayCalibrationReader(CALIBRATION, "input"),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    found = check_file(int8)
    assert found and all("input type INT32 is not supported" in p for p in found)


@pytest.mark.parametrize(
    ("activations", "phrase"),
    [(QuantType.QUInt8, "quantizes to UINT8"), (QuantType.QInt8, "zero point must be zero")],
    ids=["uint8", "asymmetric int8"],
)
def test_onnxruntime_default_asymmetric_quantization_fails(
    tmp_path: Path, activations: QuantType, phrase: str
) -> None:
    int8 = tmp_path / "int8.onnx"
    quantize_static(
        str(conv_model(tmp_path)),
        str(int8),
        ArrayCalibrationReader(CALIBRATION - 0.3, "input"),  # negative and positive
        quant_format=QuantFormat.QDQ,
        activation_type=activations,
        extra_options={"QuantizeBias": False},
    )
    assert any(phrase in p for p in check_file(int8))


def test_an_old_bundle_from_git_history_fails(tmp_path: Path) -> None:
    commit, path = OLD_BUNDLE
    git = shutil.which("git")
    shown = (
        subprocess.run(
            [git, "show", f"{commit}:{path}"], cwd=REPO, capture_output=True, check=False
        )
        if git
        else None
    )
    if shown is None or shown.returncode != 0:
        pytest.skip(f"no git history here to take {path} from")
    old = tmp_path / "old.int8.onnx"
    old.write_bytes(shown.stdout)
    found = check_file(old)
    assert len(found) == 8 and all("INT32" in p for p in found)  # 8 convolutions


# -- one rule at a time, on hand-made graphs ----------------------------------------------


def graph_with(
    nodes, inits, opset: int = 17, out_shape=("batch", 2, 8, 8), domain: str = ""
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def quantized_conv(axis: int = 0, zero: int = 0) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "wq"),
        numpy_helper.from_array(np.full(2, 0.1, np.float32), "ws"),
        numpy_helper.from_array(np.full(2, zero, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=axis),
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    return graph_with(nodes, inits)


def test_a_symmetric_per_channel_quantized_conv_passes() -> None:
    assert problems(quantized_conv()) == []


BROKEN = [  # (what, model, a phrase of the problem)
    ("weights per channel along axis 1", lambda: quantized_conv(axis=1), "axis 1 into Conv"),
    ("a non-zero weight zero point", lambda: quantized_conv(zero=3), "must be zero"),
    (
        "opset 21",
        lambda: graph_with([helper.make_node("Relu", ["input"], ["y"])], [], 21, (1, 1, 8, 8)),
        "outside TensorRT 10.3's opset 9 to 20",
    ),
    (
        "an operator TensorRT does not have",
        lambda: graph_with(
            [helper.make_node("Hardmax", ["input"], ["y"])], [], 17, ("batch", 1, 8, 8)
        ),
        "not in the table",
    ),
    (
        "a com.microsoft operator",
        lambda: graph_with(
            [helper.make_node("Gelu", ["input"], ["y"], domain="com.microsoft")],
            [],
            17,
            ("batch", 1, 8, 8),
            "com.microsoft",
        ),
        "needs a TensorRT plugin",
    ),
    (
        "MaxPool with dilations",
        lambda: graph_with(
            [helper.make_node("MaxPool", ["input"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])],
            [],
            17,
            ("batch", 1, 6, 6),
        ),
        "dilations",
    ),
]


@pytest.mark.parametrize(("what", "make", "phrase"), BROKEN, ids=[b[0] for b in BROKEN])
def test_what_the_document_rules_out_is_reported(what: str, make, phrase: str) -> None:
    found = problems(make())
    assert any(phrase in p for p in found), (what, found)


def test_the_table_covers_every_operator_our_graphs_use() -> None:
    used = {n.op_type for p in COMMITTED for n in onnx.load(str(p)).graph.node}
    assert used <= set(OPERATORS)
