"""The GPU self-test against the TensorRT/pycuda stand-ins (see enginekit.py: NOT
TensorRT, whose engine runs the embedded ONNX model with onnxruntime): what it builds,
where, what it compares and how it reports. A real GPU run is the technician's."""

from __future__ import annotations

from pathlib import Path

import pytest
from inference.engines.enginekit import CXR, ROUTER
from inference.trt_runtime_standin import make_standins

from appliance.inference.bundle import Bundle
from appliance.inference.engines.selftest import (
    SelftestUnavailableError,
    run_selftest,
    table,
)


def test_every_engine_is_built_afresh_compared_and_timed(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    trt, cuda, recorder = make_standins("10.3.0", compute_capability=(8, 7))
    lines: list[str] = []
    report = run_selftest([bundles[CXR], bundles[ROUTER]], trt=trt, cuda=cuda, log=lines.append)

    assert report["ok"] and report["tensorrt"] == "10.3.0" and report["gpu"] == "sm87"
    assert [r["model"] for r in report["rows"]] == [CXR, ROUTER]
    for row in report["rows"]:
        assert row["passed"] and row["max_probability_diff"] < 1e-4
        assert row["ort_ms"] > 0 and row["trt_ms"] > 0 and row["build_s"] >= 0
        assert "matches ONNX Runtime on 4 check images" in row["detail"]
    assert recorder.builds == 2 and recorder.strongly_typed
    assert cuda.state.retained == 0  # every engine's GPU context released
    assert any("[trt] building" in line for line in lines)

    text = table(report)
    header, rule, *body = text.splitlines()[1:4]
    assert header.split() == ["model", "version", "ORT", "ms", "TRT", "ms", "max", "|diff|",
                              "p", "result", "build", "s"]
    assert set(rule) <= {"-", " "} and body[0].startswith(CXR) and "PASS" in body[0]
    assert text.endswith("all engines match ONNX Runtime")


def test_a_build_the_parser_refuses_is_a_failed_row_with_its_message(
    bundles: dict[str, Bundle],
) -> None:
    trt, cuda, recorder = make_standins("10.3.0", compute_capability=(8, 7))
    recorder.parser_errors = ["In node 3 (importDequantizeLinear): UNSUPPORTED_NODE_DATATYPE"]
    report = run_selftest([bundles[CXR]], trt=trt, cuda=cuda, log=lambda line: None)

    (row,) = report["rows"]
    assert not report["ok"] and not row["passed"] and row["trt_ms"] is None
    assert "TensorRT cannot parse" in row["detail"] and "UNSUPPORTED_NODE_DATATYPE" in row["detail"]
    text = table(report)
    assert "FAIL" in text and f"{CXR}: build failed" in text and text.endswith("FAILED (see above)")


def test_no_gpu_says_what_is_missing_before_building(bundles: dict[str, Bundle]) -> None:
    trt, cuda, recorder = make_standins(init_error="CUDA_ERROR_NO_DEVICE")
    with pytest.raises(SelftestUnavailableError, match="NO_DEVICE"):
        run_selftest([bundles[CXR]], trt=trt, cuda=cuda)
    assert recorder.builds == 0
