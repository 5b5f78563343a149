"""Engine-build logic, run against a stand-in of the TensorRT API (trt_standin.py):
TensorRT cannot be installed here, so these tests check what we ask of it, not it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from trt_standin import make_standin

from appliance.inference.tensorrt_build import (
    EngineBuildError,
    TensorRTUnavailableError,
    build_engine,
    engine_filename,
    import_tensorrt,
)
from build.quantize_int8 import quantize_int8

SHA = "ab" * 32


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    """A 1-conv model with a dynamic batch, as our exporter writes them."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["logits"], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2, 8, 8])],
        [w],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_engine_filename_names_model_trt_gpu_and_precision() -> None:
    name = engine_filename(SHA, "10.3.0", (8, 7), "int8")
    assert name == f"{SHA[:16]}_trt10.3.0_sm87_int8_b2.engine"
    assert engine_filename(SHA, "10.3.0", (8, 7), "fp16") != name
    assert engine_filename(SHA, "10.4.0", (8, 7), "int8") != name
    with pytest.raises(ValueError):
        engine_filename("not-a-sha", "10.3.0", (8, 7), "int8")
    with pytest.raises(ValueError):
        engine_filename(SHA, "10.3.0", (8, 7), "int4")


def test_int8_build_sets_flags_profile_cache_and_writes_atomically(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trt, rec = make_standin()
    engines = tmp_path / "engines"
    cache = engines / "timing.cache"
    path = build_engine(
        tiny_onnx, SHA, engines, trt=trt, compute_capability=(8, 7), timing_cache=cache
    )
    assert path.name == f"{SHA[:16]}_trt10.3.0_sm87_int8_b2.engine"
    assert json.loads(path.read_bytes())["inputs"] == ["input"]
    # no Q/DQ in this graph: weakly typed, INT8 with FP16 for what is not quantized
    assert rec.flags == {"INT8", "FP16"} and rec.strongly_typed is False
    assert rec.profiles == [{"input": ((1, 1, 8, 8), (1, 1, 8, 8), (8, 1, 8, 8))}]
    assert rec.timing_cache_in == b""  # first build starts an empty cache...
    assert cache.read_bytes() == b"+timings"  # ...and saves what it learned
    assert sorted(p.name for p in engines.iterdir()) == sorted([path.name, "timing.cache"])
    out = capsys.readouterr().out
    assert "[trt] Building engine (2 steps)" in out and "done in" in out
    assert "  [trt] Tactic selection (1 steps)" in out  # nested phases are indented


def test_a_qdq_model_is_built_strongly_typed_without_precision_flags(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TensorRT refuses INT8/FP16 flags on a strongly typed network (and deprecates them
    from 10.12): the QDQ graph, quantized by the pipeline's own quantizer, decides."""
    int8 = tmp_path / "tiny.int8.onnx"
    calibration = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    quantize_int8(tiny_onnx, int8, calibration)
    trt, rec = make_standin()
    path = build_engine(int8, SHA, tmp_path / "e", trt=trt, compute_capability=(8, 7))
    assert rec.strongly_typed and rec.flags == set() and rec.build_errors == []
    assert json.loads(path.read_bytes())["strongly_typed"] is True
    assert "tuned for 1, strongly typed" in capsys.readouterr().out


def test_one_logger_for_every_build(tiny_onnx: Path, tmp_path: Path) -> None:
    trt, rec = make_standin()
    for precision in ("int8", "fp16"):
        build_engine(tiny_onnx, SHA, tmp_path, trt=trt, compute_capability=(8, 7),
                     precision=precision)
    assert rec.builds == 2 and len(rec.loggers) == 1


def test_existing_engine_is_reused_and_timing_cache_fed_back(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    trt, rec = make_standin()
    cache = tmp_path / "timing.cache"
    first = build_engine(
        tiny_onnx, SHA, tmp_path, trt=trt, compute_capability=(8, 7), timing_cache=cache
    )
    again = build_engine(
        tiny_onnx, SHA, tmp_path, trt=trt, compute_capability=(8, 7), timing_cache=cache
    )
    assert again == first and rec.builds == 1
    build_engine(
        tiny_onnx, SHA, tmp_path, trt=trt, compute_capability=(8, 7), timing_cache=cache, force=True
    )
    assert rec.builds == 2 and rec.timing_cache_in == b"+timings"


def test_fp16_build_does_not_enable_int8(tiny_onnx: Path, tmp_path: Path) -> None:
    trt, rec = make_standin()
    build_engine(tiny_onnx, SHA, tmp_path, trt=trt, compute_capability=(7, 2), precision="fp16")
    assert rec.flags == {"FP16"} and rec.strongly_typed is False


def test_unparseable_model_raises_with_parser_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    trt, _ = make_standin()
    with pytest.raises(EngineBuildError, match="cannot parse"):
        build_engine(bad, SHA, tmp_path / "e", trt=trt, compute_capability=(8, 7))
    assert not (tmp_path / "e").exists()


def test_failed_build_leaves_no_engine(tiny_onnx: Path, tmp_path: Path) -> None:
    trt, rec = make_standin()
    rec.fail_build = True
    engines = tmp_path / "e"
    with pytest.raises(EngineBuildError, match="failed to build"):
        build_engine(tiny_onnx, SHA, engines, trt=trt, compute_capability=(8, 7))
    assert not engines.exists() or not any(engines.iterdir())


def test_missing_tensorrt_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(TensorRTUnavailableError, match="JetPack"):
        import_tensorrt()
