"""Backend report and choice. Here (no TensorRT, no pycuda, no GPU) the report must say
what is missing and ``auto`` must pick ONNX Runtime; with the TensorRT/pycuda stand-ins
(trt_runtime_standin.py, NOT TensorRT) installed as modules, TensorRT is chosen."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from helpers import bundle_dir
from inference.trt_runtime_standin import make_standins

from appliance.errors import ApplianceError
from appliance.inference import backends
from appliance.inference.backends import (
    BackendUnavailableError,
    backend_report,
    open_runner,
)
from appliance.inference.bundle import Bundle, load_bundle
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.tensorrt_runner import TensorRTRunner

CXR = bundle_dir("cxr-pneumonia")


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(CXR)


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The situation on this machine, made certain on any machine."""
    for name in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` now fails as if absent
    monkeypatch.setattr(backends, "gpu_device_nodes", lambda: [])


def install_standins(monkeypatch: pytest.MonkeyPatch, **options: Any) -> tuple[Any, Any, Any]:
    """Make `import tensorrt` and `import pycuda.driver` give the stand-ins."""
    trt, cuda, recorder = make_standins(**options)
    pycuda = ModuleType("pycuda")
    pycuda.driver = cuda  # type: ignore[attr-defined]
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", cuda)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt, cuda, recorder


def tensorrt_entry() -> dict[str, Any]:
    (entry,) = [e for e in backend_report() if e["name"] == "tensorrt"]
    return entry


def test_report_here_names_every_missing_piece(nothing_installed: None) -> None:
    report = backend_report()
    assert [e["name"] for e in report] == ["onnxruntime", "tensorrt"]
    ort, trt = report
    assert ort["usable"] and ort["version"] and ort["missing"] == []
    assert "CPUExecutionProvider" in ort["detail"]
    assert trt["usable"] is False and trt["version"] is None
    assert len(trt["missing"]) == 3
    tensorrt, pycuda, gpu = trt["missing"]
    assert "python3-libnvinfer from JetPack" in tensorrt
    assert "pip install pycuda" in pycuda
    assert gpu.startswith("no NVIDIA GPU found")
    assert trt["detail"].startswith("missing: ")


def test_report_matches_this_machine_and_never_raises() -> None:
    entry = tensorrt_entry()
    if importlib.util.find_spec("tensorrt") is None:
        assert entry["usable"] is False and any("JetPack" in m for m in entry["missing"])
    assert set(entry) == {"name", "usable", "version", "detail", "missing"}


def test_report_with_tensorrt_pycuda_and_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    install_standins(monkeypatch, version="10.3.0", compute_capability=(8, 7))
    entry = tensorrt_entry()
    assert entry["usable"] and entry["version"] == "10.3.0" and entry["missing"] == []
    assert "sm87" in entry["detail"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"devices": 0}, "no NVIDIA GPU found"),
        ({"init_error": "no CUDA-capable device is detected"}, "no NVIDIA GPU found (CUDA: "),
        ({"compute_capability": (6, 1)}, "needs compute capability 7.0"),
    ],
)
def test_report_without_a_usable_gpu(
    monkeypatch: pytest.MonkeyPatch, options: dict, says: str
) -> None:
    install_standins(monkeypatch, **options)
    entry = tensorrt_entry()
    assert entry["usable"] is False and entry["version"] == "10.3.0"
    assert [m for m in entry["missing"] if says in m], entry["missing"]


def test_report_tells_a_broken_install_from_an_absent_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class BrokenTensorRT(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name == "tensorrt":
                raise ImportError("libnvinfer.so.10: cannot open shared object file", name=name)

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenTensorRT(), *sys.meta_path])
    missing = tensorrt_entry()["missing"]
    assert "installed but does not load (libnvinfer.so.10" in missing[0]


def test_auto_picks_onnxruntime_here(
    nothing_installed: None, bundle: Bundle, tmp_path: Path
) -> None:
    for engine_dir in (None, tmp_path):
        runner = open_runner(bundle, engine_dir=engine_dir, threads=1)
        assert isinstance(runner, OnnxRuntimeRunner) and not runner.active
        assert runner.model_file == "model.int8.onnx" and runner.threads == 1
    assert isinstance(open_runner(bundle, backend="onnxruntime"), OnnxRuntimeRunner)


def test_forced_tensorrt_says_what_is_missing(
    nothing_installed: None, bundle: Bundle, tmp_path: Path
) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        open_runner(bundle, backend="tensorrt", engine_dir=tmp_path)
    message = str(info.value)
    assert "python3-libnvinfer" in message and "pip install pycuda" in message
    assert "no NVIDIA GPU found" in message
    assert isinstance(info.value, ApplianceError)


def test_unknown_backend_is_a_value_error(bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="auto, onnxruntime or tensorrt"):
        open_runner(bundle, backend="openvino")


def test_forced_tensorrt_with_standins_builds_and_runs(
    monkeypatch: pytest.MonkeyPatch, bundle: Bundle, tmp_path: Path
) -> None:
    _, cuda, recorder = install_standins(monkeypatch)
    logs: list[str] = []
    runner = open_runner(bundle, backend="tensorrt", engine_dir=tmp_path / "e", log=logs.append)
    assert isinstance(runner, TensorRTRunner) and not runner.active
    x = np.random.default_rng(1).random((2, 1, 64, 64), dtype=np.float32)
    with runner:
        got = runner.infer({"input": x})
    with OnnxRuntimeRunner(bundle) as reference:
        want = reference.infer({"input": x})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)
    assert recorder.builds == 1 and any("[trt] building" in line for line in logs)
    assert (tmp_path / "e" / "timing.cache").is_file() and cuda.state.retained == 0


def test_forced_tensorrt_needs_an_engine_dir(
    monkeypatch: pytest.MonkeyPatch, bundle: Bundle
) -> None:
    install_standins(monkeypatch)
    with pytest.raises(BackendUnavailableError, match="engine directory"):
        open_runner(bundle, backend="tensorrt")


def test_auto_takes_tensorrt_only_when_the_engine_can_be_had(
    monkeypatch: pytest.MonkeyPatch, bundle: Bundle, tmp_path: Path
) -> None:
    install_standins(monkeypatch)
    assert isinstance(open_runner(bundle, engine_dir=tmp_path / "new"), TensorRTRunner)
    assert isinstance(open_runner(bundle), OnnxRuntimeRunner)  # nowhere to keep engines
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert isinstance(open_runner(bundle, engine_dir=blocked / "engines"), OnnxRuntimeRunner)


def test_auto_uses_an_existing_engine_where_none_could_be_written(
    monkeypatch: pytest.MonkeyPatch, bundle: Bundle, tmp_path: Path
) -> None:
    install_standins(monkeypatch)
    engines = tmp_path / "engines"
    with open_runner(bundle, backend="tensorrt", engine_dir=engines, log=lambda _: None):
        pass  # builds the engine
    # why not chmod: tests may run as root, for whom every folder is writable
    monkeypatch.setattr(backends, "_writable", lambda folder: False)
    assert isinstance(open_runner(bundle, engine_dir=engines), TensorRTRunner)
    assert isinstance(open_runner(bundle, engine_dir=tmp_path / "empty"), OnnxRuntimeRunner)
