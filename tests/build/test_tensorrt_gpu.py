"""Real TensorRT on a real GPU (Jetson / CUDA box). Skips cleanly anywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.inference.bundle import find_bundles, load_bundle
from appliance.inference.tensorrt_build import build_engine

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (no GPU here)")
cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed")

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("path", find_bundles(MODELS), ids=lambda p: p.parent.name)
def test_int8_engine_builds_and_deserialises(path: Path, tmp_path: Path) -> None:
    bundle = load_bundle(path)
    engine_path = build_engine(
        bundle.file("model.int8.onnx"),
        bundle.sha256("model.int8.onnx"),
        tmp_path,
        timing_cache=tmp_path / "timing.cache",
    )
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    assert engine is not None
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    assert names == {"input", "logits", "cam"}
