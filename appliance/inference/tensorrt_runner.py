"""TensorRT backend: the bundle's INT8 model compiled to an engine for this GPU.

    with TensorRTRunner(bundle, engine_dir=data_dir / "engines") as runner:
        outputs = runner.infer({"input": batch})

Loading and building are separate steps (as in Polygraphy): ``activate`` looks for the
engine named after the model's sha256, the TensorRT version, the GPU's compute
capability and the precision (``tensorrt_build.engine_filename``), and only builds it
through ``tensorrt_build.build_engine`` when it is absent (minutes on a Jetson; progress
goes to ``log``). ``tensorrt`` and ``pycuda.driver`` are imported inside ``activate`` —
importing this module never needs CUDA — and both can be injected (``trt=``, ``cuda=``)
so the logic is tested against a stand-in where there is no GPU.

CUDA contexts are per thread, and the screening worker calls ``infer`` from its own
threads, so the runner retains the device's *primary* context (the one TensorRT and the
CUDA runtime use) in ``activate`` and pushes/pops it around every call. One execution
context is not thread-safe: a lock serialises ``infer``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.bundle import Bundle
from appliance.inference.runner import Runner
from appliance.inference.tensorrt_build import (
    PROFILE_BATCH,
    EngineBuildError,
    EngineSpec,
    TensorRTUnavailableError,
    build_engine,
    import_tensorrt,
    shared_logger,
)

# int8 compiles the QDQ model (scales baked in); fp16/fp32 compile the float model.
PRECISION_FILES = {"int8": "model.int8.onnx", "fp16": "model.onnx", "fp32": "model.onnx"}


def import_pycuda_driver() -> Any:
    """``pycuda.driver``, or a clear error naming what to install."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise TensorRTUnavailableError(
            "pycuda is not installed: `pip install pycuda` (on a Jetson, after JetPack's "
            "CUDA toolkit), or install the [tensorrt] extra"
        ) from exc
    return cuda


def engine_spec(
    trt_version: str, compute_capability: tuple[int, int], bundle: Bundle, precision: str
) -> EngineSpec:
    """What decides which engine file serves ``bundle`` on this GPU."""
    model_sha256 = bundle.sha256(PRECISION_FILES[precision])
    return EngineSpec(model_sha256, trt_version, tuple(compute_capability), precision)


@dataclass
class _Binding:
    """One IO tensor: page-locked host buffer and device buffer for the max batch."""

    name: str
    is_input: bool
    dtype: np.dtype
    item_shape: tuple[int, ...]  # shape without the batch dimension
    host: np.ndarray  # flat, page-locked
    device: Any  # pycuda DeviceAllocation (int() gives the device pointer)


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        *,
        engine_dir: Path,
        precision: str = "int8",
        build_if_missing: bool = True,
        timing_cache: Path | None = None,
        log: Callable[[str], None] = print,
        trt: Any = None,
        cuda: Any = None,
        device: int = 0,
    ) -> None:
        super().__init__(bundle)
        if precision not in PRECISION_FILES:
            raise ValueError(f"precision must be one of {sorted(PRECISION_FILES)}")
        self.bundle.file(PRECISION_FILES[precision])  # fail now if the bundle lacks it
        self.precision = precision
        self.engine_dir = Path(engine_dir)
        self.build_if_missing = build_if_missing
        self.timing_cache = timing_cache
        self.log = log
        self.device = device
        self._trt_injected, self._cuda_injected = trt, cuda
        self.engine_path: Path | None = None
        self.max_batch = PROFILE_BATCH[2]
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._trt: Any = None
        self._cuda: Any = None
        self._cuda_context: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._bindings: dict[str, _Binding] = {}

    @property
    def model_file(self) -> str:
        return PRECISION_FILES[self.precision]

    # -- loading -------------------------------------------------------------------

    def activate(self) -> None:
        self._trt = self._trt_injected or import_tensorrt()
        self._cuda = cuda = self._cuda_injected or import_pycuda_driver()
        cuda_error = getattr(cuda, "Error", RuntimeError)  # pycuda's errors are not ours
        try:
            cuda.init()
            gpu = cuda.Device(self.device)
            capability = tuple(gpu.compute_capability())
            self._cuda_context = gpu.retain_primary_context()
        except cuda_error as exc:
            raise TensorRTUnavailableError(f"no usable NVIDIA GPU (CUDA: {exc})") from exc
        self._cuda_context.push()
        try:
            self.engine_path = self._find_or_build(capability)
            self._load_engine(self.engine_path)
        except cuda_error as exc:
            self._release()
            raise EngineBuildError(
                f"CUDA failed while loading {self.bundle.name} on the GPU: {exc}"
            ) from exc
        except BaseException:
            self._release()  # frees what was made and lets the context go
            raise
        cuda.Context.pop()

    def _find_or_build(self, compute_capability: tuple[int, int]) -> Path:
        spec = engine_spec(
            str(self._trt.__version__), compute_capability, self.bundle, self.precision
        )
        path = self.engine_dir / spec.filename()
        if path.is_file():
            return path
        if not self.build_if_missing:
            raise EngineBuildError(
                f"no TensorRT engine {path.name} in {self.engine_dir} for "
                f"{self.bundle.name} {self.bundle.version}; build it with "
                f"build/compile_tensorrt.py or allow building on first use"
            )
        self.log(f"[trt] no engine for {self.bundle.name} {self.bundle.version} on this GPU yet")
        return build_engine(
            self.bundle.file(self.model_file),
            spec.model_sha256,
            self.engine_dir,
            precision=self.precision,
            batch=PROFILE_BATCH,
            timing_cache=self.timing_cache,
            compute_capability=compute_capability,
            trt=self._trt,
            log=self.log,
        )

    def _load_engine(self, path: Path) -> None:
        trt, cuda = self._trt, self._cuda
        self._runtime = trt.Runtime(shared_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise EngineBuildError(
                f"TensorRT cannot load {path} (see its log above); delete the file to rebuild it"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineBuildError(f"TensorRT cannot create an execution context for {path}")
        self._stream = cuda.Stream()
        self.max_batch = self._profile_max_batch()
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            item_shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))[1:]
            if any(d < 0 for d in item_shape):
                raise EngineBuildError(f"{path.name}: {name} has dynamic non-batch dims")
            host = cuda.pagelocked_empty(self.max_batch * int(np.prod(item_shape)), dtype)
            self._bindings[name] = _Binding(
                name, is_input, dtype, item_shape, host, cuda.mem_alloc(host.nbytes)
            )
        self._check_matches_manifest(path)

    def _profile_max_batch(self) -> int:
        """The max batch of profile 0 (every input shares it; we build them that way)."""
        trt, engine = self._trt, self._engine
        batches = [
            int(engine.get_tensor_profile_shape(name, 0)[2][0])
            for name in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        ]
        return min(batches)

    def _check_matches_manifest(self, path: Path) -> None:
        """An engine that does not serve this bundle's declared tensors is refused."""
        spec = self.bundle.manifest["input"]
        inputs = [b for b in self._bindings.values() if b.is_input]
        want = tuple(spec["shape"][1:])
        if (
            [b.name for b in inputs] != [spec["name"]]
            or inputs[0].item_shape != want
            or (inputs[0].dtype != np.dtype(spec["dtype"]))
        ):
            raise EngineBuildError(
                f"{path.name} takes {[(b.name, b.item_shape, str(b.dtype)) for b in inputs]}, "
                f"the bundle declares {spec['name']} {want} {spec['dtype']}"
            )
        missing = [n for n in self.output_names if n not in self._bindings]
        if missing:
            raise EngineBuildError(f"{path.name} has no output {', '.join(missing)}")

    # -- running -------------------------------------------------------------------

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = feed[self.input_name]
        with self._lock:
            self._cuda_context.push()
            try:
                parts = [
                    self._run_chunk(batch[start : start + self.max_batch])
                    for start in range(0, len(batch), self.max_batch)
                ]
            finally:
                self._cuda.Context.pop()
        if not parts:  # an empty batch: nothing to run, shapes still honest
            return {
                b.name: np.empty((0, *b.item_shape), b.dtype)
                for b in self._bindings.values()
                if not b.is_input
            }
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        """One batch of at most ``max_batch`` on the engine (lock held, context current)."""
        cuda, context, stream = self._cuda, self._context, self._stream
        source = self._bindings[self.input_name]
        if not context.set_input_shape(source.name, chunk.shape):
            raise RuntimeError(f"TensorRT refused input shape {chunk.shape} for {source.name}")
        staged = source.host[: chunk.size]
        staged.reshape(chunk.shape)[...] = chunk  # into page-locked memory: async-safe
        cuda.memcpy_htod_async(source.device, staged, stream)
        for binding in self._bindings.values():
            context.set_tensor_address(binding.name, int(binding.device))
        if not context.execute_async_v3(stream.handle):
            raise RuntimeError(f"TensorRT failed to run {self.bundle.name} (see its log)")
        shapes: dict[str, tuple[int, ...]] = {}
        for binding in self._bindings.values():
            if binding.is_input:
                continue
            shape = tuple(int(d) for d in context.get_tensor_shape(binding.name))
            if any(d < 0 for d in shape) or shape[1:] != binding.item_shape:
                raise RuntimeError(f"TensorRT gives {binding.name} the unresolved shape {shape}")
            shapes[binding.name] = shape
            size = int(np.prod(shape))
            cuda.memcpy_dtoh_async(binding.host[:size], binding.device, stream)
        stream.synchronize()
        # copies: the page-locked buffers are overwritten by the next call
        return {
            name: self._bindings[name].host[: int(np.prod(shape))].reshape(shape).copy()
            for name, shape in shapes.items()
        }

    # -- releasing -----------------------------------------------------------------

    def deactivate(self) -> None:
        if self._cuda_context is None:
            return
        self._cuda_context.push()
        self._release()

    def _release(self) -> None:
        """Free everything with the primary context current, then let go of the context.

        Called with the context pushed. pycuda frees memory in destructors through
        "scoped activation", which fails (with a warning) from a thread that did not
        create the context, so buffers and the stream are freed here, explicitly; and
        TensorRT frees device memory in its destructors, which need the context current.
        """
        try:
            for binding in self._bindings.values():
                binding.device.free()
                pinned = getattr(binding.host, "base", None)
                if hasattr(pinned, "free"):  # pycuda's PagelockedHostAllocation
                    pinned.free()
            self._bindings.clear()
            self._context = None  # the execution context before its engine
            self._engine = None
            self._runtime = None
            self._stream = None
        finally:
            # why detach while current: pycuda then releases the primary context from any
            # thread (cuDevicePrimaryCtxRelease) and drops it from its context stack, so
            # no Context.pop() follows. CUDA keeps the handle current on this thread (the
            # release never pops), which is harmless: the primary context lives on for
            # the CUDA runtime that TensorRT uses.
            self._cuda_context.detach()
            self._reset()
