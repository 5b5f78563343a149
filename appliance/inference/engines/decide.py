"""Which engine a bundle needs here, and what to do about it: facts in, action out.

``decide`` is pure (no I/O): the refresher and the start-up path gather the facts
(``probe_device``, the engine directory's listing, status.json) and act on its answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.inference.bundle import Bundle
from appliance.inference.engines.status import read_status
from appliance.inference.tensorrt_runner import PRECISION_FILES, engine_spec

REJECTED = ".rejected"
MAX_BUILD_ATTEMPTS = 3  # a build that keeps failing is not retried at every boot


@dataclass(frozen=True)
class Device:
    """What TensorRT can build for here; ``reason`` says why not when it cannot."""

    trt_version: str | None = None
    compute_capability: tuple[int, int] | None = None
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.trt_version is not None and self.compute_capability is not None


@dataclass(frozen=True)
class Decision:
    bundle: str
    action: str  # use | check | build | skip
    engine: str | None  # the engine file name this device needs (None: cannot have one)
    reason: str


def decide(
    bundle: Bundle,
    precision: str,
    device: Device,
    engine_files: set[str],
    record: Mapping[str, Any],
) -> Decision:
    """What to do about ``bundle``'s engine, from facts only (no I/O).

    ``engine_files``: names in the engine directory; ``record``: this bundle's entry in
    status.json from earlier runs (``verified`` engine name, ``failed_builds`` counts).
    """
    name = bundle.name
    if not device.usable:
        return Decision(name, "skip", None, f"TensorRT not usable here: {device.reason}")
    if PRECISION_FILES.get(precision) not in bundle.manifest["files"]:
        return Decision(name, "skip", None, f"the bundle has no {precision} model to compile")
    assert device.trt_version is not None and device.compute_capability is not None
    engine = engine_spec(device.trt_version, device.compute_capability, bundle, precision)
    filename = engine.filename()
    if filename + REJECTED in engine_files:
        return Decision(
            name,
            "skip",
            filename,
            f"{filename} did not match ONNX Runtime on the check images; "
            f"delete {filename}{REJECTED} to build it again",
        )
    if filename in engine_files:
        if record.get("verified") == filename:
            return Decision(name, "use", filename, "engine present and checked")
        return Decision(name, "check", filename, "engine present but not yet checked")
    attempts = int(dict(record.get("failed_builds") or {}).get(filename, 0))
    if attempts >= MAX_BUILD_ATTEMPTS:
        return Decision(
            name,
            "skip",
            filename,
            f"building {filename} failed {attempts} times ({record.get('error')}); "
            "see `journalctl -u appliance`",
        )
    return Decision(name, "build", filename, "no engine for this model, TensorRT and GPU yet")


def probe_device(trt: Any = None, cuda: Any = None) -> Device:
    """This machine's TensorRT version and GPU, or why there is none. Never raises."""
    if trt is not None and cuda is not None:  # injected (tests: the stand-ins)
        try:
            cuda.init()
            major, minor = cuda.Device(0).compute_capability()
        except Exception as exc:  # noqa: BLE001
            return Device(reason=f"no usable GPU ({exc})")
        return Device(str(trt.__version__), (int(major), int(minor)))
    from appliance.inference.backends import probe_tensorrt

    probe = probe_tensorrt()
    if not probe.usable:
        return Device(reason="; ".join(probe.missing))
    return Device(probe.version, probe.compute_capability)


def startup_backend(config: Any, bundle: Bundle, device: Device | None = None) -> str:
    """The backend ``ModelSet`` should open ``bundle`` on now, without building anything.

    ``auto`` becomes ``tensorrt`` only when this device's engine is present and has
    passed its check; otherwise ``onnxruntime`` (the refresher takes it from there).
    An explicit ``onnxruntime`` or ``tensorrt`` setting is returned unchanged.
    """
    if config.inference_backend != "auto":
        return str(config.inference_backend)
    device = device or probe_device()
    engine_dir = Path(config.data_dir) / "engines"
    record = read_status(config.data_dir).get("bundles", {}).get(bundle.name, {})
    decision = decide(bundle, config.model_precision, device, listing(engine_dir), record)
    return "tensorrt" if decision.action == "use" else "onnxruntime"


def listing(folder: Path) -> set[str]:
    """Names of the files in the engine directory (none before it exists)."""
    try:
        return {p.name for p in folder.iterdir() if p.is_file()}
    except OSError:
        return set()
