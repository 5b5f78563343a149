"""``appliance doctor`` on engine builds that failed or were given up: the status the real
refresher writes, with stand-in TensorRT/pycuda (tests/inference/cuda_standin.py and
trt_runtime_standin.py, tests/build/trt_standin.py: NOT TensorRT — TensorRT cannot be
installed without an NVIDIA GPU) whose ONNX parser refuses the model as TensorRT 10
refuses an int32 DequantizeLinear."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

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


# -- appliance doctor --gpu-selftest ---------------------------------------------------


def install_standins(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import tensorrt` and `import pycuda.driver` give the stand-ins (as a GPU box's
    imports would give the real ones): the command runs exactly as a technician's does."""
    trt, cuda, _ = make_standins("10.3.0", compute_capability=(8, 7))
    pycuda = ModuleType("pycuda")
    pycuda.driver = cuda  # type: ignore[attr-defined]
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", cuda)):
        monkeypatch.setitem(sys.modules, name, module)


def test_gpu_selftest_prints_one_table_for_every_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_standins(monkeypatch)
    data = tmp_path / "data"

    result = doctor(data, "--gpu-selftest")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("GPU self-test: TensorRT 10.3.0, sm87, int8")
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in BUNDLES]
    assert sorted(r.split()[0] for r in rows) == sorted(BUNDLES)
    assert all("PASS" in r for r in rows) and lines[-1] == "all engines match ONNX Runtime"
    assert "[selftest]" in result.stderr  # progress apart from the table
    assert not (data / "engines").exists()  # the live engines are never touched

    report = json.loads(doctor(data, "--gpu-selftest", "--json").stdout)
    assert report["ok"] and {r["model"] for r in report["rows"]} == set(BUNDLES)

    # with TensorRT usable, plain doctor also holds every bundle to TensorRT's ONNX
    # support: the committed graphs pass, so nothing is flagged
    plain = doctor(data, "--json")
    assert plain.exit_code == 0, plain.output
    assert not [e for e in json.loads(plain.stdout)["engines"] if e["name"].endswith(" graph")]


def test_gpu_selftest_without_tensorrt_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` fails as if absent
    result = doctor(tmp_path / "data", "--gpu-selftest")
    assert result.exit_code == 2
    assert "needs TensorRT and an NVIDIA GPU" in result.stderr
    assert "python3-libnvinfer" in result.stderr and "pycuda" in result.stderr
    assert "Traceback" not in result.output


def test_a_graph_tensorrt_would_refuse_is_a_problem_where_tensorrt_is_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old (1.0.0, int32-bias) model from git history in place of a bundle's."""
    import shutil
    import subprocess

    old = subprocess.run(
        ["git", "show", "2eaabfc:models/cxr-pneumonia/1.0.0/model.int8.onnx"],
        cwd=BUNDLES[CXR].parents[2], capture_output=True, check=False,
    )
    if old.returncode != 0:
        pytest.skip("no git history here to take the old model from")
    models = tmp_path / "models"
    copy = Path(shutil.copytree(BUNDLES[CXR], models / CXR / BUNDLES[CXR].name))
    (copy / "model.int8.onnx").write_bytes(old.stdout)
    install_standins(monkeypatch)
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(models))

    result = doctor(tmp_path / "data", "--json")
    assert result.exit_code == 1
    (graph,) = [e for e in json.loads(result.stdout)["engines"] if e["name"] == f"{CXR} graph"]
    assert not graph["ok"] and "TensorRT 10 would refuse it" in graph["detail"]
    assert "input type INT32 is not supported" in graph["detail"] and len(graph["problems"]) == 8
