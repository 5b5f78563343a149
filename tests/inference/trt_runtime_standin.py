"""A stand-in for the TensorRT 10 *runtime* API and for ``pycuda.driver`` — NOT TensorRT,
NOT CUDA.

Why it exists: TensorRT and pycuda need an NVIDIA GPU and its driver, which CI and
laptops do not have, yet the TensorRT runner's own logic — finding or building the
engine, sizing buffers, copying between page-locked host memory and the device, input
shapes, tensor addresses, stream order, CUDA context push/pop in worker threads, freeing
— must be tested everywhere. The real thing is exercised by the ``gpu``-marked test.

To make those tests mean something, the stand-in "engine" carries the real ONNX model
and runs it with onnxruntime on the bytes the runner copied into stand-in "device"
memory (a dict from fake device pointers to byte buffers), with the shape given to
``set_input_shape``, writing results to the addresses given to ``set_tensor_address``.
So a runner that copies the wrong bytes, sets the wrong shape, forgets an address,
reads outputs before ``stream.synchronize()`` or calls from a thread without the CUDA
context pushed gets wrong numbers or an error, as it would on a GPU.

Where it differs from the real thing: stream work (copies, execution) runs at
``synchronize()`` in the calling thread (no real asynchrony); async copies insist on
page-locked host memory (CUDA would silently copy synchronously); an execution context
used by two threads at once raises (TensorRT would silently corrupt); one CUDA context
stack per thread, modelled on pycuda's.

The builder half comes from ``tests/build/trt_standin.py`` and is extended so that
``build_engine`` writes an engine this runtime can load.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

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


class CudaError(RuntimeError):
    """What the stand-in raises where pycuda would raise ``pycuda.driver.Error``."""


def serialize_engine(
    onnx_path: Path, trt_version: str, batch: tuple[int, int, int] = (1, 4, 8)
) -> bytes:
    """Bytes of a stand-in engine: a header (version, profile) and the ONNX model."""
    header = {"trt_version": trt_version, "batch": list(batch)}
    return MAGIC + json.dumps(header).encode() + b"\n" + Path(onnx_path).read_bytes()


# -- pycuda.driver ------------------------------------------------------------------


@dataclass
class GpuState:
    """Everything the stand-in GPU holds, for tests to inspect."""

    devices: int = 1
    compute_capability: tuple[int, int] = (8, 7)
    init_error: str | None = None
    memory: dict[int, bytearray] = field(default_factory=dict)
    pinned: list[Any] = field(default_factory=list)
    # weak: a stream lives while someone holds it, as a pycuda Stream does
    streams: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    retained: int = 0
    pushes: int = 0
    copies_htod: int = 0
    executions: int = 0
    _local: threading.local = field(default_factory=threading.local)

    def stack(self) -> list[Any]:
        """This thread's context stack (pycuda keeps one per thread)."""
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def current(self) -> Any:
        stack = self.stack()
        return stack[-1] if stack else None

    def require_context(self, what: str) -> Any:
        ctx = self.current()
        if ctx is None or not ctx.valid:
            raise CudaError(
                f"{what} failed: invalid device context (no context is current "
                f"on thread {threading.current_thread().name})"
            )
        return ctx

    def live_pinned(self) -> int:
        return sum(1 for block in self.pinned if not block.freed)

    def resolve(self, pointer: Any, nbytes: int, what: str) -> bytearray:
        address = int(pointer)
        if address not in self.memory:
            raise CudaError(f"{what}: {address:#x} is not a live device allocation")
        block = self.memory[address]
        if nbytes > len(block):
            raise CudaError(
                f"{what}: {nbytes} bytes do not fit the {len(block)}-byte "
                f"allocation at {address:#x}"
            )
        return block


def _host_address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def make_cuda(
    devices: int = 1, compute_capability: tuple[int, int] = (8, 7), init_error: str | None = None
) -> Any:
    """A ``pycuda.driver``-like namespace; its ``state`` is the stand-in GPU."""
    state = GpuState(devices, tuple(compute_capability), init_error)
    pointers = itertools.count(0x7F00_0000_0000, 0x1_0000_0000)
    handles = itertools.count(0x5000)

    def init(flags: int = 0) -> None:
        if state.init_error:
            raise CudaError(f"cuInit failed: {state.init_error}")

    class Context:
        def __init__(self) -> None:
            self.valid, self.thread = True, threading.get_ident()

        def push(self) -> None:
            state.stack().append(self)
            state.pushes += 1

        @staticmethod
        def pop() -> None:
            stack = state.stack()
            if not stack:
                raise CudaError("context::pop failed: cannot pop non-current context")
            stack.pop()

        def detach(self) -> None:
            """pycuda: a primary context is released (cuDevicePrimaryCtxRelease) if it is
            current or was made on this thread; from another thread nothing happens."""
            if not self.valid:
                raise CudaError("context::detach failed: cannot detach from invalid context")
            stack = state.stack()
            if stack and stack[-1] is self:
                stack.pop()
                state.retained -= 1
            elif self.thread == threading.get_ident():
                state.retained -= 1
            self.valid = False

    class Device:
        def __init__(self, ordinal: int) -> None:
            if not 0 <= ordinal < state.devices:
                raise CudaError(f"cuDeviceGet failed: invalid device ordinal {ordinal}")
            self.ordinal = ordinal

        @staticmethod
        def count() -> int:
            return state.devices

        def compute_capability(self) -> tuple[int, int]:
            return state.compute_capability

        def name(self) -> str:
            return "Stand-in GPU (not CUDA)"

        def retain_primary_context(self) -> Context:
            state.retained += 1
            return Context()

    class DeviceAllocation:
        """Usable as an int (the device pointer), like pycuda's."""

        def __init__(self, nbytes: int) -> None:
            self.context = state.require_context("cuMemAlloc")
            self.pointer = next(pointers)
            state.memory[self.pointer] = bytearray(b"\xff" * nbytes)  # garbage: NaN floats

        def __int__(self) -> int:
            return self.pointer

        __index__ = __int__

        def free(self) -> None:
            if state.current() is not self.context and self.context.thread != threading.get_ident():
                raise CudaError("cannot activate out-of-thread context")
            if state.memory.pop(self.pointer, None) is None:
                raise CudaError("device allocation freed twice")

    class PagelockedHostAllocation:
        """The ``.base`` of a page-locked array (numpy keeps it alive)."""

        def __init__(self, shape: Any, dtype: Any) -> None:
            state.require_context("cuMemHostAlloc")
            self._array = np.full(np.empty(shape, dtype).nbytes, 0xFF, np.uint8).view(dtype)
            self._array = self._array.reshape(shape)
            self.start = _host_address(self._array)
            self.end = self.start + self._array.nbytes
            self.freed = False
            state.pinned.append(self)

        @property
        def __array_interface__(self) -> dict[str, Any]:
            return self._array.__array_interface__

        def free(self) -> None:
            self.freed = True

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> Any:
        return np.asarray(PagelockedHostAllocation(shape, dtype))

    def _require_pinned(array: np.ndarray, what: str) -> None:
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise CudaError(f"{what}: host memory must be a contiguous numpy array")
        start, end = _host_address(array), _host_address(array) + array.nbytes
        for block in state.pinned:
            if block.start <= start and end <= block.end:
                if block.freed:
                    raise CudaError(f"{what}: page-locked host memory used after free")
                return
        raise CudaError(f"{what}: host memory is not page-locked (use pagelocked_empty)")

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            state.require_context("cuStreamCreate")
            self.handle = next(handles)
            self.pending: list[Callable[[], None]] = []
            state.streams[self.handle] = self

        def enqueue(self, work: Callable[[], None]) -> None:
            self.pending.append(work)

        def synchronize(self) -> None:
            state.require_context("cuStreamSynchronize")
            while self.pending:
                self.pending.pop(0)()

    def _submit(stream: Stream | None, work: Callable[[], None]) -> None:
        if stream is None:
            work()
        else:
            stream.enqueue(work)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Stream | None = None) -> None:
        state.require_context("cuMemcpyHtoDAsync")
        _require_pinned(src, "cuMemcpyHtoDAsync")
        block = state.resolve(dest, src.nbytes, "cuMemcpyHtoDAsync")

        def copy() -> None:  # reads the host memory when the copy runs, as CUDA does
            block[: src.nbytes] = src.tobytes()
            state.copies_htod += 1

        _submit(stream, copy)

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream | None = None) -> None:
        state.require_context("cuMemcpyDtoHAsync")
        _require_pinned(dest, "cuMemcpyDtoHAsync")
        block = state.resolve(src, dest.nbytes, "cuMemcpyDtoHAsync")

        def copy() -> None:
            dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(block, np.uint8, dest.nbytes)

        _submit(stream, copy)

    return SimpleNamespace(
        state=state,
        Error=CudaError,
        init=init,
        Device=Device,
        Context=Context,
        Stream=Stream,
        mem_alloc=DeviceAllocation,
        pagelocked_empty=pagelocked_empty,
        memcpy_htod_async=memcpy_htod_async,
        memcpy_dtoh_async=memcpy_dtoh_async,
    )


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
