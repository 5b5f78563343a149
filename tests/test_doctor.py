"""``appliance doctor`` on engine builds that failed or were given up: the status the real
refresher writes, with stand-in TensorRT/pycuda (tests/inference/cuda_standin.py and
trt_runtime_standin.py, tests/build/trt_standin.py: NOT TensorRT — TensorRT cannot be
installed without an NVIDIA GPU) whose ONNX parser refuses the model as TensorRT 10
refuses an int32 DequantizeLinear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from inference.engines.enginekit import BUNDLES, CXR, ROUTER, Models
from inference.trt_runtime_standin import make_standins

from appliance.cli import main
from appliance.config import load_config
from appliance.inference.bundle import load_bundle
from appliance.inference.engines.decide import MAX_BUILD_ATTEMPTS
from appliance.inference.engines.refresh import EngineRefresher
from appliance.inference.engines.status import read_status

# TensorRT 10's parser message for a bias-quantized graph (the 1.0.0 bundles), as
# onnx-tensorrt words it: node, operator, importer, error code, assertion.
PARSER_ERROR = (
    "In node 3 with name: classifier.bias_DequantizeLinear and operator: DequantizeLinear "
    "(importDequantizeLinear): UNSUPPORTED_NODE_DATATYPE: Assertion failed: "
    "inputs.at(0).getType() == DataType::kINT8"
)


@pytest.fixture
def models():
    bundles = {name: load_bundle(path) for name, path in BUNDLES.items()}
    loaded = Models(bundles, (CXR, ROUTER))
    yield loaded
    loaded.close()


def refresh_with_refusing_parser(models: Models, data: Path, boots: int) -> dict:
    config = load_config(data, environ={}, inference_backend="auto")
    for _ in range(boots):
        trt, cuda, recorder = make_standins("10.3.0", compute_capability=(8, 7))
        recorder.parser_errors = [PARSER_ERROR]
        EngineRefresher(models, config, trt=trt, cuda=cuda).run()
    return read_status(data)


def doctor(data: Path, *flags: str):
    return CliRunner().invoke(main, ["doctor", "--data-dir", str(data), *flags])


def test_a_failed_build_is_a_problem_with_the_parsers_message(
    tmp_path: Path, models: Models
) -> None:
    data = tmp_path / "data"
    status = refresh_with_refusing_parser(models, data, boots=1)
    assert status["bundles"][CXR]["state"] == "failed"

    result = doctor(data, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert not report["ok"]
    engines = {e["name"]: e for e in report["engines"]}
    for name in (CXR, ROUTER):
        assert not engines[name]["ok"]
        assert PARSER_ERROR in engines[name]["error"]
        assert "TensorRT cannot parse" in engines[name]["error"]
    assert all(m["ok"] for m in report["models"])  # screening itself is fine

    text = doctor(data).output
    assert f"!! {CXR}: failed, serving on onnxruntime" in text
    assert "UNSUPPORTED_NODE_DATATYPE" in text and "problems found" in text


def test_a_build_given_up_after_repeated_failures_stays_a_problem(
    tmp_path: Path, models: Models
) -> None:
    data = tmp_path / "data"
    status = refresh_with_refusing_parser(models, data, boots=MAX_BUILD_ATTEMPTS + 1)
    assert status["bundles"][CXR]["state"] == "skipped"  # the refresher no longer tries

    result = doctor(data, "--json")
    assert result.exit_code == 1
    cxr = next(e for e in json.loads(result.output)["engines"] if e["name"] == CXR)
    assert not cxr["ok"] and PARSER_ERROR in cxr["error"]
    assert f"abandoned after {MAX_BUILD_ATTEMPTS} failed attempts" in cxr["detail"]
