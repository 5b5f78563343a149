"""Compile a bundle's QDQ INT8 ONNX model into a TensorRT 10 engine (offline step).

Building and loading are separate (as in Polygraphy): this module builds, once per
model x TensorRT version x GPU, and caches the engine under a name that says exactly
what it was built for, so a JetPack upgrade or a new model never loads a stale engine:

    <model sha256[:16]>_trt<version>_sm<major><minor>_<precision>_b<settings>.engine

``<settings>`` is ``BUILD_SETTINGS``: bump it when the way engines are built changes (it
went to 2 with the batch-1 profile and strong typing), so boxes rebuild rather than keep
an engine built the old way.

``tensorrt`` is imported lazily — importing this module never needs CUDA — and every
entry point accepts a ``trt`` module so the logic can be tested against a stand-in.
Explicit quantization: the Q/DQ nodes in the ONNX carry the INT8 scales, so no
calibrator is used (TensorRT 10 deprecated implicit calibration). A QDQ graph is built
as a *strongly typed* network: the graph's own types decide each layer's precision, and
the weakly typed INT8/FP16 builder flags (deprecated from TensorRT 10.12, and refused
together with strong typing) are not set. A graph without Q/DQ (``fp16``/``fp32``, or an
``int8`` model that has none) stays weakly typed with the flags.

Build settings follow how the box runs: it screens one image at a time, so the
optimisation profile is tuned for batch 1 (``opt``) and merely allows up to ``max``.
Builder, parser and runtime share one ``trt.Logger`` per process (``shared_logger``).
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from appliance.errors import BundleError
from appliance.store.files import atomic_write_bytes

PRECISIONS = ("int8", "fp16", "fp32")
BUILD_SETTINGS = 2  # see the module docstring: part of every engine's name
# (min, opt, max) batch: the box screens one image at a time; up to 8 for a backlog
PROFILE_BATCH = (1, 1, 8)

_loggers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_loggers_lock = threading.Lock()


class EngineBuildError(BundleError):
    """TensorRT could not parse the model or build an engine from it."""


class TensorRTUnavailableError(EngineBuildError):
    """The tensorrt Python package (JetPack's python3-libnvinfer) is not importable."""


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides whether a cached engine may be reused."""

    model_sha256: str
    trt_version: str
    compute_capability: tuple[int, int]
    precision: str

    def filename(self) -> str:
        return engine_filename(
            self.model_sha256, self.trt_version, self.compute_capability, self.precision
        )


def engine_filename(
    model_sha256: str, trt_version: str, compute_capability: tuple[int, int], precision: str
) -> str:
    """Deterministic, filesystem-safe engine name (see module docstring)."""
    if not re.fullmatch(r"[0-9a-f]{64}", model_sha256):
        raise ValueError(f"not a sha256 hex digest: {model_sha256!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    version = re.sub(r"[^0-9A-Za-z.]", "_", trt_version)
    major, minor = compute_capability
    return (f"{model_sha256[:16]}_trt{version}_sm{major}{minor}_{precision}"
            f"_b{BUILD_SETTINGS}.engine")


def import_tensorrt() -> ModuleType:
    """The real ``tensorrt`` module, or a clear error naming what to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            "TensorRT is not installed: on a Jetson install JetPack 6 (python3-libnvinfer); "
            "elsewhere `pip install 'clinic-screening-appliance[tensorrt]'`"
        ) from exc
    return tensorrt


def shared_logger(trt: Any) -> Any:
    """The process's one ``trt.Logger`` (WARNING and worse), made on first use.

    TensorRT expects one logger per process: builders, parsers and runtimes given
    different ones log a warning and only the first is used. One per ``trt`` module, so
    tests passing stand-ins each get their own.
    """
    with _loggers_lock:
        logger = _loggers.get(trt)
        if logger is None:
            logger = _loggers[trt] = trt.Logger(trt.Logger.WARNING)
        return logger


def has_qdq(onnx_path: Path) -> bool:
    """Does the model carry its own quantization (Q/DQ nodes)? Then it can be built
    strongly typed. A file ``onnx`` cannot read is left to TensorRT's parser to refuse."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 — the parser says what is wrong with it
        return False
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


def create_network(trt: Any, builder: Any, strongly_typed: bool) -> Any:
    """A network definition; strongly typed when asked (TensorRT 10: explicit batch is
    the only mode, so that is the one flag there is to give)."""
    if not strongly_typed:
        return builder.create_network(0)
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def gpu_compute_capability(device: int = 0) -> tuple[int, int]:
    """(major, minor) of a CUDA device via pycuda (shipped with the tensorrt extra)."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise TensorRTUnavailableError(
            "pycuda is needed to query the GPU; install the "
            "[tensorrt] extra or pass compute_capability"
        ) from exc
    cuda.init()
    return tuple(cuda.Device(device).compute_capability())  # type: ignore[return-value]


def make_progress_monitor(trt: Any, log: Callable[[str], None]) -> Any | None:
    """An IProgressMonitor that prints phases as they run (TensorRT >= 10 has it;
    without one a Jetson build looks hung for minutes). None where unavailable."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class PrintingMonitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._started: dict[str, float] = {}

        # argument order as TensorRT 10 calls it: (phase_name, parent_phase, num_steps)
        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._started[phase_name] = time.monotonic()
            indent = "  " if parent_phase else ""
            log(f"{indent}[trt] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            took = time.monotonic() - self._started.pop(phase_name, time.monotonic())
            log(f"[trt] {phase_name} done in {took:.1f}s")

    return PrintingMonitor()


def build_engine(
    onnx_path: Path,
    model_sha256: str,
    engine_dir: Path,
    *,
    precision: str = "int8",
    batch: tuple[int, int, int] = PROFILE_BATCH,
    timing_cache: Path | None = None,
    compute_capability: tuple[int, int] | None = None,
    workspace_bytes: int = 1 << 30,
    trt: Any = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Build (or reuse) the engine for ``onnx_path``; return its path.

    ``batch`` is the optimisation profile's (min, opt, max) batch for every input.
    An INT8 QDQ model is built strongly typed (no precision flags); otherwise INT8
    builds also allow FP16 so layers left un-quantized don't fall back to FP32.
    """
    trt = trt or import_tensorrt()
    if compute_capability is None:
        compute_capability = gpu_compute_capability()
    spec = EngineSpec(model_sha256, str(trt.__version__), tuple(compute_capability), precision)
    engine_path = Path(engine_dir) / spec.filename()
    if engine_path.exists() and not force:
        log(f"[trt] reusing {engine_path.name}")
        return engine_path

    logger = shared_logger(trt)
    builder = trt.Builder(logger)
    strongly_typed = precision == "int8" and has_qdq(Path(onnx_path))
    network = create_network(trt, builder, strongly_typed)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if strongly_typed:
        pass  # the graph's Q/DQ decide: precision flags are an error on such a network
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)

    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)[1:]
        if any(d < 0 for d in dims):
            raise EngineBuildError(f"input {tensor.name} has dynamic non-batch dims {dims}")
        lo, opt, hi = batch
        profile.set_shape(tensor.name, (lo, *dims), (opt, *dims), (hi, *dims))
    config.add_optimization_profile(profile)

    # why: the timing cache makes a rebuild (new model version, same GPU) much faster
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)

    monitor = make_progress_monitor(trt, log)
    if monitor is not None:
        config.progress_monitor = monitor
    log(
        f"[trt] building {engine_path.name} from {Path(onnx_path).name} "
        f"(batch {batch[0]}..{batch[2]}, tuned for {batch[1]}"
        f"{', strongly typed' if strongly_typed else ''}); this can take minutes on a Jetson"
    )
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)"
        )
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    log(f"[trt] wrote {engine_path} in {time.monotonic() - started:.0f}s")
    return engine_path
