"""A small stand-in for the TensorRT 10 Python API — NOT TensorRT.

TensorRT's libraries cannot be installed in CI or on a laptop without an NVIDIA GPU, so
the engine-build *logic* (flags, optimisation profile, timing cache, file naming,
atomic write, progress monitor, error paths) is tested against this object, which
mimics the subset of the API that ``appliance.inference.tensorrt_build`` calls. Its
parser reads the real ONNX file with ``onnx`` so input names and shapes are genuine.
The real thing is exercised by the ``gpu``-marked test, which skips without TensorRT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import onnx


@dataclass
class Recorder:
    """What the code under test asked of the stand-in."""

    builds: int = 0
    flags: set[str] = field(default_factory=set)
    strongly_typed: bool | None = None  # of the last network created
    loggers: list[Any] = field(default_factory=list)  # every trt.Logger made
    build_errors: list[str] = field(default_factory=list)  # what TensorRT would log
    profiles: list[dict[str, tuple]] = field(default_factory=list)
    timing_cache_in: bytes | None = None
    fail_build: bool = False
    # what the parser says when it refuses the model (real TensorRT: one per bad node)
    parser_errors: list[str] = field(default_factory=list)


class _Tensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


class _Network:
    def __init__(self, strongly_typed: bool = False) -> None:
        self.inputs: list[_Tensor] = []
        self.strongly_typed = strongly_typed

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data or b""

    def serialize(self) -> bytes:
        return self.data + b"+timings"


class _Config:
    def __init__(self, rec: Recorder) -> None:
        self._rec = rec
        self.profiles: list[_Profile] = []
        self.progress_monitor: Any = None
        self._cache: _TimingCache | None = None
        self.pool_limits: dict[str, int] = {}
        self.flags: set[str] = set()

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)
        self._rec.flags.add(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pool_limits[pool] = size

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        self._rec.profiles.append(profile.shapes)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> _TimingCache:
        self._rec.timing_cache_in = bytes(data)
        return _TimingCache(bytes(data))

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        self._cache = cache
        return True

    def get_timing_cache(self) -> _TimingCache:
        assert self._cache is not None
        return self._cache


def make_standin(version: str = "10.3.0") -> tuple[Any, Recorder]:
    """A fresh ``tensorrt``-like namespace and the recorder it reports to."""
    rec = Recorder()

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity
            rec.loggers.append(self)

    class BuilderFlag:
        INT8, FP16 = "INT8", "FP16"

    class NetworkDefinitionCreationFlag:
        # TensorRT 10's values; EXPLICIT_BATCH is deprecated (explicit batch is implied)
        EXPLICIT_BATCH, STRONGLY_TYPED = 0, 1

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class OnnxParser:
        def __init__(self, network: _Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            try:
                model = onnx.load(path)
            except Exception as exc:  # noqa: BLE001 — mimic TRT: report, don't raise
                self.errors.append(f"ModelImporter: failed to parse: {exc}")
                return False
            if rec.parser_errors:
                self.errors.extend(rec.parser_errors)
                return False
            for inp in model.graph.input:
                dims = tuple(
                    d.dim_value if d.HasField("dim_value") else -1
                    for d in inp.type.tensor_type.shape.dim
                )
                self.network.inputs.append(_Tensor(inp.name, dims))
            return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> _Network:
            strongly = 1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED
            assert flags in (0, strongly), "TensorRT 10: explicit batch is implied"
            rec.strongly_typed = flags == strongly
            return _Network(strongly_typed=rec.strongly_typed)

        def create_builder_config(self) -> _Config:
            return _Config(rec)

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
            rec.builds += 1
            missing = [
                t.name
                for t in network.inputs
                if not any(t.name in p.shapes for p in config.profiles)
            ]
            if network.strongly_typed and config.flags & {"INT8", "FP16"}:
                # TensorRT: precision flags on a strongly typed network are an error
                rec.build_errors.append("kSTRONGLY_TYPED network with precision flags")
                return None
            if rec.fail_build or missing:
                return None
            mon = config.progress_monitor
            if mon is not None:
                # TensorRT 10's order: phase_start(phase_name, parent_phase, num_steps)
                mon.phase_start("Building engine", None, 2)
                mon.phase_start("Tactic selection", "Building engine", 1)
                assert mon.step_complete("Tactic selection", 0) is True
                mon.phase_finish("Tactic selection")
                for step in range(2):
                    assert mon.step_complete("Building engine", step) is True
                mon.phase_finish("Building engine")
            return json.dumps(
                {
                    "flags": sorted(rec.flags),
                    "strongly_typed": network.strongly_typed,
                    "inputs": [t.name for t in network.inputs],
                }
            ).encode()

    trt = type(
        "tensorrt_standin",
        (),
        {
            "__version__": version,
            "Logger": Logger,
            "Builder": Builder,
            "OnnxParser": OnnxParser,
            "BuilderFlag": BuilderFlag,
            "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
            "MemoryPoolType": MemoryPoolType,
            "IProgressMonitor": IProgressMonitor,
        },
    )
    return trt, rec
