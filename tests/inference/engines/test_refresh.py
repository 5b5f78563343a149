"""The background refresher end to end against the TensorRT/pycuda stand-ins (see
enginekit.py: NOT TensorRT). A real Jetson run is not part of these tests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from inference.engines.enginekit import (
    CXR,
    JETPACK_61,
    ROUTER,
    Models,
    engine_name,
    perturbed_model,
    refresher,
)
from inference.trt_runtime_standin import make_standins, serialize_engine

from appliance.inference.bundle import Bundle
from appliance.inference.engines.checks import check_batch
from appliance.inference.engines.decide import REJECTED, Device, startup_backend
from appliance.inference.engines.refresh import EngineRefresher
from appliance.inference.engines.status import read_status
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.tensorrt_build import build_engine, engine_filename
from appliance.inference.tensorrt_runner import TensorRTRunner


def test_first_boot_builds_checks_and_switches_to_tensorrt(models: Models, config) -> None:
    cxr = models.models[CXR]
    x = check_batch(cxr.bundle)
    expected = cxr.infer(x)

    status = refresher(models, config).run()

    engine_dir = config.data_dir / "engines"
    for name, model in models.models.items():
        assert model.runner.backend == "tensorrt"
        record = status["bundles"][name]
        assert record["state"] == "ready" and record["serving"] == "tensorrt"
        assert record["verified"] == engine_name(model.bundle)
        assert record["check"]["passed"] and record["check"]["images"] == 4
        assert (engine_dir / record["verified"]).is_file()
    assert list((engine_dir / "staging").iterdir()) == []
    assert status["state"] == "done" and status["progress"] == {"done": 2, "total": 2}
    assert status["tensorrt"] == {"version": "10.3.0", "compute_capability": "8.7"}
    assert read_status(config.data_dir) == status  # what the System page reads
    np.testing.assert_allclose(cxr.infer(x)["logits"], expected["logits"], atol=1e-5)

    # next boot: ModelSet may open the engine directly; nothing is rebuilt or rechecked
    assert startup_backend(config, cxr.bundle, JETPACK_61) == "tensorrt"
    assert startup_backend(config, cxr.bundle, Device(reason="no GPU")) == "onnxruntime"
    built = []
    again = refresher(models, config, build=lambda *a, **k: built.append(a)).run()
    assert built == [] and again["bundles"][CXR]["state"] == "ready"


def test_screening_keeps_running_on_onnxruntime_while_the_engine_builds(
    models: Models, config
) -> None:
    building, release = threading.Event(), threading.Event()

    def slow_build(*args: Any, **kwargs: Any) -> Path:
        kwargs["log"]("[trt] Building engine (2 steps)")
        building.set()
        assert release.wait(10)
        return build_engine(*args, **kwargs)

    worker = refresher(models, config, build=slow_build)
    thread = worker.start()
    assert building.wait(10)
    cxr = models.models[CXR]
    with cxr.lock:  # as the screening pipeline calls it
        logits = cxr.infer(check_batch(cxr.bundle))["logits"]
    assert cxr.runner.backend == "onnxruntime" and logits.shape == (4, 1)
    during = read_status(config.data_dir)
    assert during["state"] == "working"
    building_now = [r for r in during["bundles"].values() if r["state"] == "building"]
    assert len(building_now) == 1
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert read_status(config.data_dir)["state"] == "done"
    assert cxr.runner.backend == "tensorrt"


def test_an_engine_that_disagrees_is_rejected_and_not_rebuilt(
    models: Models, config, tmp_path: Path
) -> None:
    def wrong_build(onnx_path, sha, engine_dir, *, compute_capability, trt, **kw) -> Path:
        bundle = next(
            m.bundle for m in models.models.values() if m.bundle.path in onnx_path.parents
        )
        name = engine_filename(sha, trt.__version__, compute_capability, "int8")
        path = Path(engine_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(serialize_engine(perturbed_model(bundle, tmp_path), trt.__version__))
        return path

    status = refresher(models, config, build=wrong_build).run()

    engine_dir = config.data_dir / "engines"
    for name, model in models.models.items():
        record = status["bundles"][name]
        assert model.runner.backend == "onnxruntime"
        assert record["state"] == "failed" and "logits differ by 2.000" in record["error"]
        assert not record["check"]["passed"] and record.get("verified") is None
        assert not (engine_dir / engine_name(model.bundle)).exists()
        assert (engine_dir / (engine_name(model.bundle) + REJECTED)).is_file()
    assert startup_backend(config, models.models[CXR].bundle, JETPACK_61) == "onnxruntime"
    builds = []
    again = refresher(models, config, build=lambda *a, **k: builds.append(a)).run()
    assert builds == [] and again["bundles"][CXR]["state"] == "skipped"
    assert "delete" in again["bundles"][CXR]["detail"]


def test_failed_builds_are_retried_at_most_three_boots(models: Models, config) -> None:
    def failing_build(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("out of memory")

    for boot in range(1, 4):
        status = refresher(models, config, build=failing_build).run()
        record = status["bundles"][CXR]
        assert record["state"] == "failed" and record["error"] == "out of memory"
        assert record["failed_builds"] == {engine_name(models.models[CXR].bundle): boot}
    fourth = refresher(models, config, build=failing_build).run()
    assert fourth["bundles"][CXR]["state"] == "skipped"
    assert models.models[CXR].runner.backend == "onnxruntime"


def test_jetpack_upgrade_keeps_the_old_engine_until_the_new_one_passes(
    models: Models, config
) -> None:
    refresher(models, config, "10.3.0").run()
    engine_dir = config.data_dir / "engines"
    old = {m.bundle.path: engine_dir / engine_name(m.bundle) for m in models.models.values()}
    models.close()  # reboot after the upgrade: ModelSet starts on ONNX Runtime again
    for model in models.models.values():
        model.runner = OnnxRuntimeRunner(model.bundle, precision="int8", threads=1).__enter__()

    old_present_during_build = []

    def build_watching_old(onnx_path: Path, *args: Any, **kwargs: Any) -> Path:
        old_present_during_build.append(old[onnx_path.parent].is_file())
        return build_engine(onnx_path, *args, **kwargs)

    status = refresher(models, config, "10.7.0", build=build_watching_old).run()

    assert old_present_during_build == [True, True]
    for model in models.models.values():
        new = engine_name(model.bundle, Device("10.7.0", (8, 7)))
        assert status["bundles"][model.bundle.name]["verified"] == new
        assert (engine_dir / new).is_file()
        assert not old[model.bundle.path].exists()  # removed only once the new one passed
    assert models.models[CXR].runner.backend == "tensorrt"


def test_an_engine_found_unchecked_is_checked_in_place(
    models: Models, config, bundles: dict[str, Bundle]
) -> None:
    engine_dir = config.data_dir / "engines"
    engine_dir.mkdir(parents=True)
    cxr = bundles[CXR]
    (engine_dir / engine_name(cxr)).write_bytes(  # e.g. from build/compile_tensorrt.py
        serialize_engine(cxr.file("model.int8.onnx"), "10.3.0")
    )
    (engine_dir / "staging").mkdir()
    (engine_dir / "staging" / "half-written.engine").write_bytes(b"power cut")
    built = []

    def counting_build(*args: Any, **kwargs: Any) -> Path:
        built.append(Path(args[0]).parent.parent.name)
        return build_engine(*args, **kwargs)

    status = refresher(models, config, build=counting_build).run()

    assert built == [ROUTER]  # the CXR engine was checked, not rebuilt
    assert status["bundles"][CXR]["state"] == "ready" and status["bundles"][CXR]["check"]
    assert not (engine_dir / "staging" / "half-written.engine").exists()


def test_no_gpu_or_onnxruntime_setting_leaves_everything_on_onnxruntime(
    models: Models, config
) -> None:
    trt, cuda, _ = make_standins(init_error="CUDA_ERROR_NO_DEVICE")
    status = EngineRefresher(models, config, trt=trt, cuda=cuda).run()
    assert status["state"] == "unavailable" and "NO_DEVICE" in status["detail"]
    assert {r["state"] for r in status["bundles"].values()} == {"skipped"}
    assert all(m.runner.backend == "onnxruntime" for m in models.models.values())

    ort_only = config.with_overrides(inference_backend="onnxruntime")
    assert refresher(models, ort_only).run()["state"] == "off"
    assert startup_backend(ort_only, models.models[CXR].bundle, JETPACK_61) == "onnxruntime"


def test_a_stopping_service_gets_no_new_runner(models: Models, config) -> None:
    stop = threading.Event()

    def build_then_stop(*args: Any, **kwargs: Any) -> Path:
        path = build_engine(*args, **kwargs)
        stop.set()  # SIGTERM arrives while the first engine is being checked
        return path

    status = refresher(models, config, stop_event=stop, build=build_then_stop).run()
    assert all(m.runner.backend == "onnxruntime" for m in models.models.values())
    assert status["state"] == "stopped"


def test_a_serving_engine_that_fails_its_check_is_replaced_by_onnxruntime(
    models: Models, config, tmp_path: Path
) -> None:
    """An engine built before the refresher existed (ModelSet built it at start-up) is
    checked like any other, and taken out of service if it disagrees."""
    cxr = models.models[CXR]
    engine_dir = config.data_dir / "engines"
    engine_dir.mkdir(parents=True)
    name = engine_name(cxr.bundle)
    (engine_dir / name).write_bytes(
        serialize_engine(perturbed_model(cxr.bundle, tmp_path), "10.3.0")
    )
    trt, cuda, _ = make_standins("10.3.0", compute_capability=(8, 7))
    serving = TensorRTRunner(cxr.bundle, engine_dir=engine_dir, trt=trt, cuda=cuda)
    cxr.runner.__exit__(None, None, None)
    cxr.runner = serving.__enter__()

    status = EngineRefresher(models, config, trt=trt, cuda=cuda).run()

    assert status["bundles"][CXR]["state"] == "failed"
    assert cxr.runner.backend == "onnxruntime" and not serving.active
    assert (engine_dir / (name + REJECTED)).is_file()
    # the router's new engine is the only one left holding the (stand-in) GPU
    assert models.models[ROUTER].runner.backend == "tensorrt" and cuda.state.retained == 1
