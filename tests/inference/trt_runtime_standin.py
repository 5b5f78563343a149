"""A stand-in for the TensorRT 10 *runtime* API — NOT TensorRT.

Why it exists: TensorRT needs an NVIDIA GPU, which CI and laptops do not have, yet the
TensorRT runner's own logic — finding or building the engine, input shapes, tensor
addresses, execution contexts — must be tested everywhere. The real thing is exercised
by the ``gpu``-marked test.

To make those tests mean something, the stand-in "engine" carries the real ONNX model
and runs it with onnxruntime on the bytes the runner copied into the stand-in GPU's
memory (``cuda_standin.py``), with the shape given to ``set_input_shape``, writing
results to the addresses given to ``set_tensor_address``. So a runner that sets the
wrong shape or forgets an address gets wrong numbers or an error, as it would on a GPU.
Where it differs: an execution context used by two threads at once raises (TensorRT
would silently corrupt).

The builder half comes from ``tests/build/trt_standin.py`` and is extended so that
``build_engine`` writes an engine this runtime can load.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from inference.cuda_standin import CudaError, make_cuda

# why: the builder stand-in lives beside the pipeline's tests (tests/build is not a
# package, and pytest runs in importlib mode: no implicit sys.path entries)
_BUILD_TESTS = str(Path(__file__).resolve().parents[1] / "build")
if _BUILD_TESTS not in sys.path:
    sys.path.insert(0, _BUILD_TESTS)

from trt_standin import make_standin as make_builder_standin  # noqa: E402

MAGIC = b"TRT-STANDIN-ENGINE\n"
_ORT_DTYPES = {
    "tensor(float)": "FLOAT",
    "tensor(float16)": "HALF",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}
_NP_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


def serialize_engine(
    onnx_path: Path, trt_version: str, batch: tuple[int, int, int] = (1, 4, 8)
) -> bytes:
    """Bytes of a stand-in engine: a header (version, profile) and the ONNX model."""
    header = {"trt_version": trt_version, "batch": list(batch)}
    return MAGIC + json.dumps(header).encode() + b"\n" + Path(onnx_path).read_bytes()


# -- tensorrt ----------------------------------------------------------------------


class TensorIOMode:
    INPUT, OUTPUT = "INPUT", "OUTPUT"


class DataType:
    FLOAT, HALF, INT8, INT32, INT64, UINT8, BOOL = (
        "FLOAT",
        "HALF",
        "INT8",
        "INT32",
        "INT64",
        "UINT8",
        "BOOL",
    )


def nptype(dtype: str) -> type:
    return _NP_DTYPES[dtype]


class _Engine:
    """Tensors in an order that puts outputs first (a runner must not assume index 0)."""

    def __init__(self, onnx_bytes: bytes, batch: tuple[int, int, int], cuda: Any) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.batch, self.cuda = batch, cuda
        self.tensors: dict[str, tuple[str, str, tuple[int, ...]]] = {}
        for mode, items in (
            (TensorIOMode.OUTPUT, self.session.get_outputs()),
            (TensorIOMode.INPUT, self.session.get_inputs()),
        ):
            for item in items:
                shape = tuple(d if isinstance(d, int) else -1 for d in item.shape)
                self.tensors[item.name] = (mode, _ORT_DTYPES[item.type], shape)
        self.names = list(self.tensors)
        self.contexts = 0

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str) -> str:
        return self.tensors[name][1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        mode, _, shape = self.tensors[name]
        if mode != TensorIOMode.INPUT or profile_index != 0:
            raise RuntimeError(f"no profile shape for {name} in profile {profile_index}")
        return [(b, *shape[1:]) for b in self.batch]

    def create_execution_context(self) -> _ExecutionContext:
        self.cuda.state.require_context("createExecutionContext")
        self.contexts += 1
        return _ExecutionContext(self)


class _ExecutionContext:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.errors: list[str] = []
        self._busy: int | None = None  # the thread with work in flight

    def _claim(self) -> None:
        me = threading.get_ident()
        if self._busy not in (None, me):
            raise RuntimeError("one execution context used by two threads at once")
        self._busy = me

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self._claim()
        mode, _, declared = self.engine.tensors.get(name, (None, None, ()))
        lo, _, hi = self.engine.batch
        shape = tuple(int(d) for d in shape)
        if (
            mode != TensorIOMode.INPUT
            or len(shape) != len(declared)
            or any(want not in (-1, got) for want, got in zip(declared, shape, strict=True))
            or not lo <= shape[0] <= hi
        ):
            self.errors.append(f"setInputShape: {name} {shape} outside the profile")
            self._busy = None
            return False
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        mode, _, declared = self.engine.tensors[name]
        if mode == TensorIOMode.INPUT:
            return self.shapes.get(name, declared)
        batch = next(iter(self.shapes.values()), (-1,))[0]
        return (batch, *declared[1:])

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._claim()
        if name not in self.engine.tensors:
            self.errors.append(f"setTensorAddress: no tensor {name}")
            return False
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self._claim()
        state = self.engine.cuda.state
        state.require_context("enqueueV3")
        stream = state.streams.get(stream_handle)
        if stream is None:
            raise CudaError(f"enqueueV3: {stream_handle!r} is not a live stream")
        unset = [n for n in self.engine.names if n not in self.addresses]
        unshaped = [
            n
            for n, (m, _, _) in self.engine.tensors.items()
            if m == TensorIOMode.INPUT and n not in self.shapes
        ]
        if unset or unshaped:
            self.errors.append(f"enqueueV3: no address for {unset}, no shape for {unshaped}")
            return False
        # the state at enqueue time is what runs, as on a GPU
        shapes, addresses = dict(self.shapes), dict(self.addresses)
        outputs = {
            n: self.get_tensor_shape(n)
            for n, (m, _, _) in self.engine.tensors.items()
            if m == TensorIOMode.OUTPUT
        }
        stream.enqueue(lambda: self._run(shapes, addresses, outputs))
        stream.enqueue(self._release)
        return True

    def _run(self, shapes: dict, addresses: dict, outputs: dict) -> None:
        state = self.engine.cuda.state
        feed = {}
        for name, shape in shapes.items():
            dtype = np.dtype(nptype(self.engine.tensors[name][1]))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            block = state.resolve(addresses[name], nbytes, f"engine input {name}")
            feed[name] = np.frombuffer(block, dtype, int(np.prod(shape))).reshape(shape).copy()
        results = self.engine.session.run(list(outputs), feed)
        for (name, shape), value in zip(outputs.items(), results, strict=True):
            assert value.shape == shape, (name, value.shape, shape)
            data = np.ascontiguousarray(value).tobytes()
            state.resolve(addresses[name], len(data), f"engine output {name}")[: len(data)] = data
        state.executions += 1

    def _release(self) -> None:
        self._busy = None


def make_trt(cuda: Any, version: str = "10.3.0") -> tuple[Any, Any]:
    """A ``tensorrt``-like namespace (builder + runtime) bound to the stand-in GPU ``cuda``,
    and the builder's recorder. Engines it builds embed the parsed ONNX model."""
    builder_trt, recorder = make_builder_standin(version)
    trt = ModuleType("tensorrt_standin")
    trt.__dict__.update({k: v for k, v in vars(builder_trt).items() if not k.startswith("__")})
    trt.__version__ = version

    class OnnxParser(builder_trt.OnnxParser):
        def parse_from_file(self, path: str) -> bool:
            self.network.onnx_path = path
            return super().parse_from_file(path)

    class Builder(builder_trt.Builder):
        def build_serialized_network(self, network: Any, config: Any) -> bytes | None:
            if super().build_serialized_network(network, config) is None:
                return None
            (lo, *_), (opt, *_), (hi, *_) = next(iter(config.profiles[0].shapes.values()))
            return serialize_engine(Path(network.onnx_path), version, (lo, opt, hi))

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
            cuda.state.require_context("deserializeCudaEngine")
            if not data.startswith(MAGIC):
                return None  # TensorRT logs an error and returns None
            header, _, onnx_bytes = data[len(MAGIC) :].partition(b"\n")
            meta = json.loads(header)
            if meta["trt_version"] != version:
                return None  # an engine from another TensorRT version does not load
            return _Engine(onnx_bytes, tuple(meta["batch"]), cuda)

    trt.__dict__.update(
        OnnxParser=OnnxParser,
        Builder=Builder,
        Runtime=Runtime,
        TensorIOMode=TensorIOMode,
        DataType=DataType,
        nptype=nptype,
    )
    return trt, recorder


def make_standins(
    version: str = "10.3.0", compute_capability: tuple[int, int] = (8, 7), **cuda_options: Any
) -> tuple[Any, Any, Any]:
    """(tensorrt, pycuda.driver, builder recorder) stand-ins sharing one stand-in GPU."""
    cuda = make_cuda(compute_capability=compute_capability, **cuda_options)
    trt, recorder = make_trt(cuda, version)
    return trt, cuda, recorder
