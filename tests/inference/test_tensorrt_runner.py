"""The TensorRT runner, run against a stand-in of TensorRT's runtime and pycuda
(trt_runtime_standin.py: NOT TensorRT — its "engine" runs the real ONNX model with
onnxruntime on the bytes the runner put in stand-in device memory), and, where a GPU
with TensorRT exists, against the real thing (``gpu`` mark; skipped elsewhere)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inference.cuda_standin import CudaError
from inference.trt_runtime_standin import make_standins, serialize_engine

from appliance.inference.backends import probe_tensorrt
from appliance.inference.bundle import Bundle, BundleIntegrityError, find_bundles, load_bundle
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.runner import InferenceInputError
from appliance.inference.tensorrt_build import (
    EngineBuildError,
    TensorRTUnavailableError,
    engine_filename,
)
from appliance.inference.tensorrt_runner import TensorRTRunner

REPO = Path(__file__).resolve().parents[2]
BUNDLE_DIRS = {p.parent.name: p for p in find_bundles(REPO / "models")}
TRT_VERSION = "10.3.0"


@pytest.fixture(scope="module")
def bundles() -> dict[str, Bundle]:
    return {name: load_bundle(path) for name, path in BUNDLE_DIRS.items()}


@pytest.fixture
def standins() -> tuple[Any, Any, Any]:
    return make_standins(TRT_VERSION, compute_capability=(8, 7))


def batch_for(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    shape = bundle.manifest["input"]["shape"][1:]
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def reference(bundle: Bundle, x: np.ndarray) -> dict[str, np.ndarray]:
    with OnnxRuntimeRunner(bundle, precision="int8") as runner:
        return runner.infer({"input": x})


def place_engine(bundle: Bundle, engine_dir: Path, capability: tuple[int, int] = (8, 7)) -> Path:
    """Write the stand-in engine where the runner looks for it (as if built earlier)."""
    name = engine_filename(bundle.sha256("model.int8.onnx"), TRT_VERSION, capability, "int8")
    path = engine_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(serialize_engine(bundle.file("model.int8.onnx"), TRT_VERSION))
    return path


def runner_for(bundle: Bundle, engine_dir: Path, standins: tuple, **kw: Any) -> TensorRTRunner:
    trt, cuda, _ = standins
    return TensorRTRunner(bundle, engine_dir=engine_dir, trt=trt, cuda=cuda, **kw)


def assert_gpu_released(cuda: Any) -> None:
    state = cuda.state
    assert state.memory == {} and state.live_pinned() == 0 and len(state.streams) == 0
    assert state.retained == 0 and state.stack() == []


@pytest.mark.parametrize("name", sorted(BUNDLE_DIRS))
def test_outputs_equal_onnxruntime_at_batch_1_3_8_and_split_11(
    name: str, bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    bundle = bundles[name]
    place_engine(bundle, tmp_path)
    trt, cuda, recorder = standins
    logs: list[str] = []
    with runner_for(bundle, tmp_path, standins, log=logs.append) as runner:
        for n in (1, 3, 8, 11):
            x = batch_for(bundle, n, seed=n)
            got, want = runner.infer({"input": x}), reference(bundle, x)
            assert list(got) == ["logits", "cam"]
            for key in want:
                assert got[key].shape == want[key].shape and got[key].dtype == np.float32
                np.testing.assert_allclose(got[key], want[key], atol=1e-5, rtol=0)
    assert recorder.builds == 0 and logs == []  # found, not built
    assert cuda.state.executions == 1 + 1 + 1 + 2  # 11 = 8 + 3
    assert_gpu_released(cuda)


def test_engine_built_on_first_use_with_progress_logged(
    bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    bundle = bundles["cxr-pneumonia"]
    trt, cuda, recorder = standins
    engines = tmp_path / "engines"
    logs: list[str] = []
    kw = {"log": logs.append, "timing_cache": engines / "timing.cache"}
    with runner_for(bundle, engines, standins, **kw) as runner:
        x = batch_for(bundle, 5)
        np.testing.assert_allclose(
            runner.infer({"input": x})["cam"], reference(bundle, x)["cam"], atol=1e-5
        )
    assert recorder.builds == 1 and recorder.strongly_typed and recorder.flags == set()
    assert recorder.profiles == [{"input": ((1, 1, 64, 64), (1, 1, 64, 64), (8, 1, 64, 64))}]
    assert len(recorder.loggers) == 1  # builder, parser and runtime share one trt.Logger
    text = "\n".join(logs)
    assert f"no engine for cxr-pneumonia {bundle.version}" in text and "[trt] building" in text
    assert "[trt] Building engine (2 steps)" in text and "[trt] wrote" in text
    assert runner.engine_path is not None and runner.engine_path.parent == engines
    assert (engines / "timing.cache").is_file()

    logs.clear()  # a second start finds the engine: no rebuild, nothing to say
    with runner_for(bundle, engines, standins, log=logs.append):
        pass
    assert recorder.builds == 1 and logs == []
    assert_gpu_released(cuda)


def test_engine_name_has_model_sha_trt_version_and_sm(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    bundle = bundles["modality-router"]
    sha = bundle.sha256("model.int8.onnx")
    standins = make_standins("10.7.0", compute_capability=(7, 2))
    with runner_for(bundle, tmp_path, standins, log=lambda _: None) as runner:
        assert runner.model_file == "model.int8.onnx" and runner.model_sha256 == sha
        name = runner.engine_path.name
    assert name == f"{sha[:16]}_trt10.7.0_sm72_int8_b2.engine"


def test_missing_engine_is_an_error_when_building_is_not_allowed(
    bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    runner = runner_for(bundles["cxr-pneumonia"], tmp_path, standins, build_if_missing=False)
    with pytest.raises(EngineBuildError, match="compile_tensorrt.py"):
        runner.__enter__()
    assert not runner.active and standins[2].builds == 0
    assert_gpu_released(standins[1])


def test_cuda_errors_become_appliance_errors(bundles: dict[str, Bundle], tmp_path: Path) -> None:
    standins = make_standins(init_error="no CUDA-capable device is detected")
    with pytest.raises(TensorRTUnavailableError, match="no usable NVIDIA GPU"):
        runner_for(bundles["cxr-pneumonia"], tmp_path, standins).__enter__()
    assert_gpu_released(standins[1])


def test_unloadable_engine_is_refused_and_nothing_leaks(
    bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    bundle = bundles["cxr-pneumonia"]
    place_engine(bundle, tmp_path).write_bytes(b"not an engine")
    with pytest.raises(EngineBuildError, match="delete the file to rebuild"):
        runner_for(bundle, tmp_path, standins).__enter__()
    assert_gpu_released(standins[1])


def test_engine_for_another_model_is_refused(
    bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    """A file named for the CXR model that holds the router's graph (3x64x64 input)."""
    cxr, router = bundles["cxr-pneumonia"], bundles["modality-router"]
    place_engine(cxr, tmp_path).write_bytes(
        serialize_engine(router.file("model.int8.onnx"), TRT_VERSION)
    )
    with pytest.raises(EngineBuildError, match="the bundle declares input"):
        runner_for(cxr, tmp_path, standins).__enter__()
    assert_gpu_released(standins[1])


@pytest.mark.parametrize(
    ("feed", "match"),
    [
        ({"input": np.zeros((2, 1, 64, 64), np.float64)}, "dtype"),
        ({"input": np.zeros((2, 3, 64, 64), np.float32)}, "shape"),
        ({"input": np.zeros((1, 64, 64), np.float32)}, "shape"),
        ({"image": np.zeros((1, 1, 64, 64), np.float32)}, "do not match"),
    ],
)
def test_feed_is_checked_before_the_engine_runs(
    feed: dict, match: str, bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    bundle = bundles["cxr-pneumonia"]
    place_engine(bundle, tmp_path)
    cuda = standins[1]
    with runner_for(bundle, tmp_path, standins) as runner:
        with pytest.raises(InferenceInputError, match=match):
            runner.infer(feed)
        assert cuda.state.copies_htod == 0 and cuda.state.executions == 0


def test_empty_batch_gives_empty_outputs(
    bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    bundle = bundles["modality-router"]
    place_engine(bundle, tmp_path)
    with runner_for(bundle, tmp_path, standins) as runner:
        out = runner.infer({"input": batch_for(bundle, 0)})
    assert out["logits"].shape == (0, 3) and out["cam"].shape == (0, 3, 8, 8)
    assert standins[1].state.executions == 0


def test_two_threads_share_one_runner(
    bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    """Each worker thread pushes the context itself and the lock keeps the single
    execution context to one caller at a time (the stand-in raises on overlap)."""
    bundle = bundles["cxr-pneumonia"]
    place_engine(bundle, tmp_path)
    cuda = standins[1]
    inputs = {seed: batch_for(bundle, 1 + seed % 4, seed) for seed in range(2)}
    expected = {seed: reference(bundle, x) for seed, x in inputs.items()}
    failures: list[BaseException] = []

    with runner_for(bundle, tmp_path, standins) as runner:

        def work(seed: int) -> None:
            try:
                for _ in range(15):
                    got = runner.infer({"input": inputs[seed]})
                    for key, want in expected[seed].items():
                        np.testing.assert_allclose(got[key], want, atol=1e-5)
                    assert cuda.state.current() is None  # popped again after each call
            except BaseException as exc:  # noqa: BLE001 — reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(s,), name=f"w{s}") for s in inputs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert cuda.state.executions == 30
    assert_gpu_released(cuda)


def test_deactivate_in_another_thread_frees_everything(
    bundles: dict[str, Bundle], standins: tuple, tmp_path: Path
) -> None:
    bundle = bundles["cxr-pneumonia"]
    place_engine(bundle, tmp_path)
    cuda = standins[1]
    runner = runner_for(bundle, tmp_path, standins).__enter__()
    runner.infer({"input": batch_for(bundle, 2)})
    closer = threading.Thread(target=runner.__exit__, args=(None, None, None))
    closer.start()
    closer.join()
    assert not runner.active
    assert_gpu_released(cuda)
    with runner:  # and it can be opened again
        runner.infer({"input": batch_for(bundle, 1)})
    assert_gpu_released(cuda)


def test_standin_catches_the_mistakes_it_exists_for(standins: tuple, tmp_path: Path) -> None:
    """Guards the guard: forgotten address, unpinned memory, no current context."""
    trt, cuda, _ = standins
    onnx_path = BUNDLE_DIRS["cxr-pneumonia"] / "model.int8.onnx"
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:
        engine = trt.Runtime(None).deserialize_cuda_engine(serialize_engine(onnx_path, "10.3.0"))
        context = engine.create_execution_context()
        stream = cuda.Stream()
        assert context.set_input_shape("input", (1, 1, 64, 64))
        assert not context.set_input_shape("input", (9, 1, 64, 64))  # beyond the profile
        buffer = cuda.mem_alloc(64 * 64 * 4)
        context.set_tensor_address("input", int(buffer))
        assert context.execute_async_v3(stream.handle) is False  # outputs have no address
        with pytest.raises(CudaError, match="not page-locked"):
            cuda.memcpy_htod_async(buffer, np.zeros(4096, np.float32), stream)
        assert trt.Runtime(None).deserialize_cuda_engine(b"junk") is None
        buffer.free()
    finally:
        ctx.detach()
    with pytest.raises(CudaError, match="no context is current"):
        cuda.mem_alloc(16)


def test_tampered_bundle_is_refused_at_load(tmp_path: Path) -> None:
    copy = tmp_path / "cxr-pneumonia" / BUNDLE_DIRS["cxr-pneumonia"].name
    shutil.copytree(BUNDLE_DIRS["cxr-pneumonia"], copy)
    model = copy / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="model.int8.onnx sha256 mismatch"):
        load_bundle(copy)


def test_importing_the_runner_needs_neither_tensorrt_nor_pycuda() -> None:
    code = (
        "import sys; import appliance.inference.tensorrt_runner, appliance.inference.backends;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'pycuda')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(BUNDLE_DIRS))
def test_real_tensorrt_matches_onnxruntime(
    name: str, bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    pytest.importorskip("tensorrt", exc_type=ImportError)
    pytest.importorskip("pycuda.driver", exc_type=ImportError)
    probe = probe_tensorrt()
    if not probe.usable:
        pytest.skip("TensorRT cannot run here: " + "; ".join(probe.missing))
    bundle = bundles[name]
    with TensorRTRunner(bundle, engine_dir=tmp_path, timing_cache=tmp_path / "timing.cache") as r:
        results: dict[int, dict[str, np.ndarray]] = {}

        def work(n: int) -> None:  # from a worker thread, as the screening worker does
            results[n] = r.infer({"input": batch_for(bundle, n, seed=n)})

        for n in (1, 3, 8, 11):
            thread = threading.Thread(target=work, args=(n,))
            thread.start()
            thread.join()
    for n, got in results.items():
        want = reference(bundle, batch_for(bundle, n, seed=n))
        # INT8/FP16 kernels differ from ONNX Runtime's CPU ones: close, not bit-equal
        np.testing.assert_allclose(got["logits"], want["logits"], atol=0.05, rtol=0.05)
        np.testing.assert_allclose(got["cam"], want["cam"], atol=0.1, rtol=0.05)
