"""Shared by the engine tests: the committed bundles, a ModelSet-like holder, stand-in
TensorRT/pycuda (tests/inference/cuda_standin.py, trt_runtime_standin.py and
tests/build/trt_standin.py: NOT TensorRT; their "engine" runs the embedded ONNX model
with onnxruntime on the bytes the runner put in stand-in GPU memory)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from inference.trt_runtime_standin import make_standins
from onnx import helper, numpy_helper

from appliance.inference.bundle import Bundle, find_bundles
from appliance.inference.engines.decide import Device
from appliance.inference.engines.refresh import EngineRefresher
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.tensorrt_build import engine_filename
from appliance.screening.models import LoadedModel

REPO = Path(__file__).resolve().parents[3]
BUNDLES = {p.parent.name: p for p in find_bundles(REPO / "models")}
CXR, ROUTER = "cxr-pneumonia", "modality-router"
JETPACK_61 = Device("10.3.0", (8, 7))


def engine_name(bundle: Bundle, device: Device = JETPACK_61) -> str:
    assert device.trt_version and device.compute_capability
    sha = bundle.sha256("model.int8.onnx")
    return engine_filename(sha, device.trt_version, device.compute_capability, "int8")


class Models:
    """What EngineRefresher uses of a ModelSet: ``models`` of LoadedModel, ORT-backed."""

    def __init__(self, bundles: dict[str, Bundle], names: tuple[str, ...]) -> None:
        self.models = {}
        for name in names:
            runner = OnnxRuntimeRunner(bundles[name], precision="int8", threads=1)
            runner.__enter__()
            self.models[name] = LoadedModel(bundles[name], runner, threading.Lock())

    def close(self) -> None:
        for model in self.models.values():
            model.runner.__exit__(None, None, None)


def refresher(models: Models, config, version: str = "10.3.0", **kw: Any) -> EngineRefresher:
    trt, cuda, _ = make_standins(version, compute_capability=(8, 7))
    return EngineRefresher(models, config, trt=trt, cuda=cuda, **kw)


def perturbed_model(bundle: Bundle, folder: Path) -> Path:
    """The bundle's INT8 model with +2 added to its first logit: loads, runs, disagrees
    (on every logit, a softmax would not notice)."""
    model = onnx.load(bundle.file("model.int8.onnx"))
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    classes = int(bundle.manifest["outputs"]["logits"]["shape"][1])
    shift = np.zeros(classes, np.float32)
    shift[0] = 2.0
    model.graph.initializer.append(numpy_helper.from_array(shift, "shift"))
    model.graph.node.append(helper.make_node("Add", ["logits_raw", "shift"], ["logits"]))
    path = folder / "perturbed.onnx"
    onnx.save(model, path)
    return path
