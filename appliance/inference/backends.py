"""Which inference backend can run here, and opening a runner on the chosen one.

    for entry in backend_report():          # what `appliance doctor` prints
        print(entry["name"], entry["usable"], entry["missing"])
    with open_runner(bundle, backend="auto", engine_dir=data_dir / "engines") as runner:
        runner.infer({"input": batch})

Like pydicom's pixel-data handlers, each backend is probed for its dependencies and
every missing piece is named with what to install. ``auto`` takes TensorRT where the
library, pycuda and a GPU are present and the engine exists or can be built; otherwise
ONNX Runtime on the CPU, which is always there. Probing never raises.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.inference.bundle import Bundle
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.runner import Runner
from appliance.inference.tensorrt_runner import PRECISION_FILES, TensorRTRunner, engine_spec

BACKENDS = ("onnxruntime", "tensorrt")
# TensorRT 10's support matrix starts at SM 7.0 (later 10.x releases at 7.5: the engine
# build then says so). Jetson Orin is 8.7.
MIN_COMPUTE_CAPABILITY = (7, 0)

INSTALL_TENSORRT = (
    "TensorRT Python bindings: install python3-libnvinfer from JetPack (on a CUDA PC: "
    "pip install 'clinic-screening-appliance[tensorrt]')"
)
INSTALL_PYCUDA = "pycuda: pip install pycuda (on a Jetson, after JetPack's CUDA toolkit)"


class BackendUnavailableError(ApplianceError):
    """The inference backend that was asked for cannot run here; says what is missing."""


@dataclass
class Probe:
    """What one backend needs and whether it is all present."""

    name: str
    version: str | None = None
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compute_capability: tuple[int, int] | None = None

    @property
    def usable(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        detail = "; ".join(self.notes) if self.usable else "missing: " + "; ".join(self.missing)
        return {
            "name": self.name,
            "usable": self.usable,
            "version": self.version,
            "detail": detail,
            "missing": list(self.missing),
        }


def _not_installed(exc: ImportError, *names: str) -> bool:
    """True when the package itself is absent, not when it fails to load its libraries."""
    return isinstance(exc, ModuleNotFoundError) and exc.name in names


def probe_onnxruntime() -> Probe:
    probe = Probe("onnxruntime")
    try:
        import onnxruntime as ort

        probe.version = str(ort.__version__)
        probe.notes.append(f"CPU; providers {', '.join(ort.get_available_providers())}")
    except Exception as exc:  # noqa: BLE001 — a report must never raise
        probe.missing.append(f"onnxruntime: pip install onnxruntime ({exc})")
    return probe


def probe_tensorrt() -> Probe:
    """Check tensorrt, pycuda, a CUDA GPU and its compute capability, in that order."""
    probe = Probe("tensorrt")
    try:
        import tensorrt

        probe.version = str(tensorrt.__version__)
    except ImportError as exc:
        if _not_installed(exc, "tensorrt"):
            probe.missing.append(INSTALL_TENSORRT)
        else:
            probe.missing.append(
                f"TensorRT is installed but does not load ({exc}); "
                "reinstall python3-libnvinfer from JetPack"
            )
    except Exception as exc:  # noqa: BLE001 — e.g. OSError from a broken libnvinfer
        probe.missing.append(f"TensorRT does not load ({exc}); reinstall it from JetPack")
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        if _not_installed(exc, "pycuda", "pycuda.driver"):
            probe.missing.append(INSTALL_PYCUDA)
            if not gpu_device_nodes():  # without pycuda, the device nodes tell
                probe.missing.append("no NVIDIA GPU found (no /dev/nvidia* or Jetson GPU device)")
        else:  # pycuda is there but libcuda is not: no NVIDIA driver
            probe.missing.append(f"no NVIDIA GPU driver found (pycuda: {exc})")
        return probe
    except Exception as exc:  # noqa: BLE001
        probe.missing.append(f"pycuda does not load ({exc}); reinstall pycuda")
        return probe
    _probe_gpu(probe, cuda)
    return probe


def gpu_device_nodes() -> list[str]:
    """Device files an NVIDIA GPU driver creates (desktop/server, or Jetson's nvgpu)."""
    patterns = (
        "/dev/nvidia[0-9]*",
        "/dev/nvhost-ctrl-gpu",
        "/dev/nvgpu/*",
        "/proc/driver/nvidia/gpus/*",
    )
    return sorted(path for pattern in patterns for path in glob.glob(pattern))


def _probe_gpu(probe: Probe, cuda: Any) -> None:
    try:
        cuda.init()
        count = int(cuda.Device.count())
    except Exception as exc:  # noqa: BLE001 — pycuda raises its own Error types
        probe.missing.append(f"no NVIDIA GPU found (CUDA: {exc})")
        return
    if count == 0:
        probe.missing.append("no NVIDIA GPU found")
        return
    try:
        device = cuda.Device(0)
        capability = tuple(int(v) for v in device.compute_capability())
        name = str(device.name())
    except Exception as exc:  # noqa: BLE001
        probe.missing.append(f"the GPU's compute capability cannot be read ({exc})")
        return
    probe.compute_capability = (capability[0], capability[1])
    sm = f"sm{capability[0]}{capability[1]}"
    if probe.compute_capability < MIN_COMPUTE_CAPABILITY:
        probe.missing.append(
            f"GPU {name} is {sm}; TensorRT 10 needs compute capability "
            f"{MIN_COMPUTE_CAPABILITY[0]}.{MIN_COMPUTE_CAPABILITY[1]} or newer"
        )
        return
    probe.notes.append(f"GPU 0: {name} ({sm})")


def backend_report() -> list[dict[str, Any]]:
    """One entry per backend: name, usable, version, detail, missing. Never raises."""
    return [probe.as_dict() for probe in (probe_onnxruntime(), probe_tensorrt())]


def _writable(folder: Path) -> bool:
    """Whether engines can be written in ``folder`` (created on first build if absent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def tensorrt_engine_obtainable(
    bundle: Bundle, engine_dir: Path, precision: str, probe: Probe
) -> bool:
    """The engine for this bundle/GPU/TensorRT exists, or it can be built into engine_dir."""
    if not probe.usable or probe.version is None or probe.compute_capability is None:
        return False
    if PRECISION_FILES.get(precision) not in bundle.manifest["files"]:
        return False
    spec = engine_spec(probe.version, probe.compute_capability, bundle, precision)
    return (engine_dir / spec.filename()).is_file() or _writable(engine_dir)


def open_runner(
    bundle: Bundle,
    *,
    backend: str = "auto",
    precision: str = "int8",
    threads: int = 0,
    engine_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> Runner:
    """A runner (not yet activated: use it as a context manager) on the chosen backend."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be auto, {' or '.join(BACKENDS)}, not {backend!r}")
    if backend in ("auto", "tensorrt"):
        probe = probe_tensorrt()
        if backend == "tensorrt":
            if not probe.usable:
                raise BackendUnavailableError(
                    "the TensorRT backend cannot run here; missing: " + "; ".join(probe.missing)
                )
            if engine_dir is None:
                raise BackendUnavailableError(
                    "the TensorRT backend needs an engine directory to find or build engines in"
                )
            return _tensorrt_runner(bundle, engine_dir, precision, log)
        if engine_dir is not None and tensorrt_engine_obtainable(
            bundle, Path(engine_dir), precision, probe
        ):
            return _tensorrt_runner(bundle, engine_dir, precision, log)
    return OnnxRuntimeRunner(bundle, precision=precision, threads=threads)


def _tensorrt_runner(
    bundle: Bundle, engine_dir: Path, precision: str, log: Callable[[str], None]
) -> Runner:
    engine_dir = Path(engine_dir)
    return TensorRTRunner(
        bundle,
        engine_dir=engine_dir,
        precision=precision,
        timing_cache=engine_dir / "timing.cache",
        log=log,
    )
