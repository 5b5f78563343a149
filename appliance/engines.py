"""Keep each model's TensorRT engine matched to this device, without ever stopping screening.

    backend = startup_backend(config, bundle)          # ModelSet.load: never builds
    EngineRefresher(models, config, stop_event).start()  # background thread
    read_status(config.data_dir)                       # System page, /healthz

An engine is valid for one (model sha256, TensorRT version, GPU compute capability,
precision) — the four parts of its file name (``tensorrt_build.engine_filename``). After
the first boot, a JetPack upgrade or a new model, the engine for this device is missing:
the box starts on ONNX Runtime, and a low-priority thread builds the engine into
``engines/staging/``, runs the bundle's check images through it and through ONNX
Runtime, and only when both agree within tolerance moves it into ``engines/`` and swaps
it in under the model's lock. The engine it replaces is deleted only then. An engine
that disagrees is renamed ``*.rejected`` (kept for diagnosis; the box stays on ONNX
Runtime and does not rebuild it at every boot) — delete the file to try again.

``decide`` is the pure part: from the bundle, what TensorRT is here, which files are in
the engine directory and what was recorded before, it says use, check, build or skip.
Everything that touches files, GPUs or threads is in ``EngineRefresher``.

Progress goes to ``engines/status.json`` (one writer: the refresher thread; written
atomically, so a reader never sees half a file). Check inputs are the real images in
``appliance/engine_check/`` (see the LICENSE.md there for why real and which).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.bundle import Bundle
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.postprocess import calibrated_probabilities
from appliance.inference.preprocess import preprocess
from appliance.inference.runner import Runner
from appliance.inference.tensorrt_build import build_engine
from appliance.inference.tensorrt_runner import (
    PRECISION_FILES,
    PROFILE_BATCH,
    TensorRTRunner,
    engine_spec,
)
from appliance.store.files import atomic_write_bytes

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
STAGING = "staging"
REJECTED = ".rejected"
CHECK_IMAGES = Path(__file__).parent / "engine_check"
# A score is round(100 * probability): two points is the most an engine may move it.
PROBABILITY_TOLERANCE = 0.02
# Logits and heat maps (logit units): 10% of the reference's largest value, plus 0.1.
RAW_RELATIVE_TOLERANCE = 0.10
RAW_ABSOLUTE_TOLERANCE = 0.10
MAX_BUILD_ATTEMPTS = 3  # a build that keeps failing is not retried at every boot
STATUS_WRITE_EVERY_S = 1.0


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the pure decision ---------------------------------------------------------------


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


# -- check images --------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    images: int
    max_probability_diff: float
    max_raw_diff: float  # logits or heat map, whichever differs most
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "images": self.images,
            "max_probability_diff": round(self.max_probability_diff, 6),
            "max_raw_diff": round(self.max_raw_diff, 6),
            "probability_tolerance": PROBABILITY_TOLERANCE,
            "reason": self.reason,
        }


def check_batch(bundle: Bundle, folder: Path = CHECK_IMAGES) -> np.ndarray:
    """The check images through the bundle's own preprocessing, as one batch."""
    from appliance.ingest.decode import decode_bytes

    inputs = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg")):
        pixels = decode_bytes(path.read_bytes()).pixels
        inputs.append(preprocess(bundle.manifest["preprocessing"], pixels))
    if not inputs:
        raise FileNotFoundError(f"no check images in {folder}")
    return np.stack(inputs).astype(np.float32)


def _raw_diff(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """Largest difference of a raw output (logits, heat map: logit units) and its limit,
    relative to the reference's range since that differs per model."""
    reference = np.asarray(reference, np.float64)
    diff = float(np.max(np.abs(reference - candidate)))
    return diff, RAW_RELATIVE_TOLERANCE * float(np.max(np.abs(reference))) + RAW_ABSOLUTE_TOLERANCE


def compare_outputs(
    bundle: Bundle, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> CheckResult:
    """Same result as the reference within tolerance? (pure: arrays in, verdict out)

    Calibrated probabilities are what a score is made of; raw logits and heat maps are
    compared too, because saturated probabilities hide a shifted logit.
    """
    images = int(len(reference["logits"]))
    if set(candidate) != set(reference) or any(
        np.shape(candidate[k]) != np.shape(reference[k]) for k in reference
    ):
        return CheckResult(False, images, float("inf"), float("inf"), "outputs differ in shape")
    for name, value in candidate.items():
        if not np.all(np.isfinite(value)):
            return CheckResult(False, images, float("inf"), float("inf"), f"{name} has NaN/inf")
    calibration = bundle.manifest["calibration"]
    p_ref = calibrated_probabilities(reference["logits"], calibration)
    p_diff = float(
        np.max(np.abs(p_ref - calibrated_probabilities(candidate["logits"], calibration)))
    )
    problems = []
    if p_diff > PROBABILITY_TOLERANCE:
        problems.append(f"probabilities differ by {p_diff:.4f} (> {PROBABILITY_TOLERANCE})")
    worst = 0.0
    for name, label in (("logits", "logits"), ("cam", "heat maps")):
        if name in reference:
            diff, limit = _raw_diff(reference[name], candidate[name])
            worst = max(worst, diff)
            if diff > limit:
                problems.append(f"{label} differ by {diff:.3f} (> {limit:.3f})")
    reason = "; ".join(problems) or f"matches ONNX Runtime on {images} check images"
    return CheckResult(not problems, images, p_diff, worst, reason)


def check_engine(bundle: Bundle, candidate: Runner, reference: Runner) -> CheckResult:
    """Run the check images through both (active) runners and compare."""
    batch = check_batch(bundle)
    feed = {candidate.input_name: batch}
    return compare_outputs(bundle, reference.infer(feed), candidate.infer(feed))


# -- status.json ---------------------------------------------------------------------


def status_path(data_dir: Path) -> Path:
    return Path(data_dir) / "engines" / STATUS_FILE


def read_status(data_dir: Path) -> dict[str, Any]:
    """The last written engine status; ``{"state": "unknown"}`` when there is none."""
    try:
        status = json.loads(status_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "unknown", "bundles": {}}
    return status if isinstance(status, dict) else {"state": "unknown", "bundles": {}}


def write_status(data_dir: Path, status: Mapping[str, Any]) -> None:
    """Atomic replace: the System page never reads half a file, a power cut never
    leaves one."""
    text = json.dumps(status, indent=1, sort_keys=True)
    atomic_write_bytes(status_path(data_dir), text.encode("utf-8"))


# -- start-up ------------------------------------------------------------------------


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
    decision = decide(bundle, config.model_precision, device, _listing(engine_dir), record)
    return "tensorrt" if decision.action == "use" else "onnxruntime"


def _listing(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir() if p.is_file()}
    except OSError:
        return set()


# -- the background refresh ----------------------------------------------------------


class EngineRefresher:
    """Builds, checks and swaps in engines for a loaded ``ModelSet``, one bundle at a time.

    ``trt``/``cuda`` inject TensorRT and pycuda (tests pass the stand-ins); ``build``
    is ``tensorrt_build.build_engine`` or a test double with its signature.
    """

    def __init__(
        self,
        models: Any,
        config: Any,
        stop_event: threading.Event | None = None,
        *,
        trt: Any = None,
        cuda: Any = None,
        build: Callable[..., Path] = build_engine,
    ) -> None:
        self.models = models
        self.config = config
        self.stop_event = stop_event or threading.Event()
        self.trt, self.cuda, self.build = trt, cuda, build
        self.data_dir = Path(config.data_dir)
        self.engine_dir = self.data_dir / "engines"
        self.staging = self.engine_dir / STAGING
        self.precision = str(config.model_precision)
        self.status: dict[str, Any] = {}
        self.device = Device(reason="not probed yet")
        self.thread: threading.Thread | None = None
        self._last_write = 0.0

    def start(self) -> threading.Thread:
        self.thread = threading.Thread(target=self._run_in_background, name="engines", daemon=True)
        self.thread.start()
        return self.thread

    def _run_in_background(self) -> None:
        # why: Linux nice values are per thread; a build takes minutes of CPU on a
        # Jetson and must not slow the screening workers or the web page.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        try:
            self.run()
        except Exception:  # noqa: BLE001 — the box keeps screening on ONNX Runtime
            log.exception("engine refresh failed; screening continues on ONNX Runtime")
            self._set(state="failed", detail="engine refresh crashed; see the service log")

    def run(self) -> dict[str, Any]:
        """Refresh every loaded model's engine; returns the final status."""
        previous = read_status(self.data_dir)
        self.status = {
            "schema": 1,
            "state": "starting",
            "detail": "",
            "tensorrt": None,
            "bundles": {},
            "progress": {"done": 0, "total": 0},
            "updated": utc_now(),
        }
        if self.config.inference_backend != "auto":
            return self._set(
                state="off",
                detail=f"inference_backend is {self.config.inference_backend}: "
                "engines are not refreshed in the background",
            )
        self.device = device = probe_device(self.trt, self.cuda)
        if device.usable:
            assert device.compute_capability is not None
            major, minor = device.compute_capability
            self.status["tensorrt"] = {
                "version": device.trt_version,
                "compute_capability": f"{major}.{minor}",
            }
        self._clear_staging()
        files = _listing(self.engine_dir)
        loaded = dict(self.models.models)
        decisions = [
            decide(
                model.bundle,
                self.precision,
                device,
                files,
                previous.get("bundles", {}).get(name, {}),
            )
            for name, model in loaded.items()
        ]
        for decision in decisions:
            record = dict(previous.get("bundles", {}).get(decision.bundle, {}))
            record.update(
                version=loaded[decision.bundle].bundle.version,
                precision=self.precision,
                engine=decision.engine,
                state="waiting" if decision.action != "skip" else "skipped",
                serving=loaded[decision.bundle].runner.backend,
                detail=decision.reason,
                error=record.get("error"),
            )
            self.status["bundles"][decision.bundle] = record
        self.status["progress"]["total"] = len(decisions)
        self._set(
            state="working" if device.usable else "unavailable",
            detail="" if device.usable else f"screening uses ONNX Runtime: {device.reason}",
        )
        for decision in decisions:
            if self.stop_event.is_set():
                return self._set(state="stopped", detail="the service is stopping")
            self._refresh(loaded[decision.bundle], decision)
            self.status["progress"]["done"] += 1
        if device.usable:
            serving = [r["serving"] for r in self.status["bundles"].values()]
            self._set(
                state="done",
                detail=f"{serving.count('tensorrt')} of {len(serving)} models on TensorRT",
            )
        return self._set()

    # -- one bundle ------------------------------------------------------------------

    def _refresh(self, model: Any, decision: Decision) -> None:
        if decision.action == "skip":
            return
        record = self.status["bundles"][decision.bundle]
        record["started"] = utc_now()
        started = time.monotonic()
        try:
            if self._checked_engine(model, decision, record) is not None:
                self._switch(model, decision, record)
        finally:
            record["finished"] = utc_now()
            record["elapsed_s"] = round(time.monotonic() - started, 1)
            self._set()

    def _checked_engine(self, model: Any, decision: Decision, record: dict) -> Path | None:
        """The engine in ``engines/`` once it has passed its check, else None."""
        assert decision.engine is not None
        final = self.engine_dir / decision.engine
        if decision.action == "use":
            return final
        candidate = final if decision.action == "check" else self._try_build(model, decision)
        if candidate is None:
            return None
        self._update(record, state="checking", detail="comparing with ONNX Runtime")
        result = self._check(model.bundle, candidate)
        record["check"] = result.as_dict()
        if not result.passed:
            candidate.replace(final.with_name(final.name + REJECTED))
            self._fall_back(model)
            self._update(
                record,
                state="failed",
                serving=model.runner.backend,
                error=result.reason,
                detail=f"engine rejected: {result.reason}; screening uses ONNX Runtime",
            )
            log.error("the %s engine was rejected: %s", decision.bundle, result.reason)
            return None
        candidate.replace(final)  # staging -> engines/ (a no-op when checked in place)
        return final

    def _try_build(self, model: Any, decision: Decision) -> Path | None:
        record = self.status["bundles"][decision.bundle]
        self._update(record, state="building", detail="building the TensorRT engine")
        try:
            return self._build(model.bundle, record)
        except Exception as exc:  # noqa: BLE001 — TensorRT fails in many ways; none are fatal
            failed = dict(record.get("failed_builds") or {})
            failed[str(decision.engine)] = int(failed.get(str(decision.engine), 0)) + 1
            self._update(
                record,
                state="failed",
                failed_builds=failed,
                error=str(exc),
                detail=f"build failed: {exc}; screening continues on ONNX Runtime",
            )
            log.error("building the %s engine failed: %s", decision.bundle, exc)
            return None

    def _build(self, bundle: Bundle, record: dict[str, Any]) -> Path:
        def progress(line: str) -> None:
            log.info("%s: %s", bundle.name, line)
            record["detail"] = line
            self._set(throttle=True)

        onnx = PRECISION_FILES[self.precision]
        return self.build(
            bundle.file(onnx),
            bundle.sha256(onnx),
            self.staging,
            precision=self.precision,
            batch=PROFILE_BATCH,
            timing_cache=self.engine_dir / "timing.cache",
            compute_capability=self.device.compute_capability,
            trt=self.trt,
            log=progress,
        )

    def _runner(self, bundle: Bundle, engine_dir: Path) -> TensorRTRunner:
        return TensorRTRunner(
            bundle,
            engine_dir=engine_dir,
            precision=self.precision,
            build_if_missing=False,
            trt=self.trt,
            cuda=self.cuda,
            log=lambda line: log.info("%s: %s", bundle.name, line),
        )

    def _check(self, bundle: Bundle, engine: Path) -> CheckResult:
        """Load the engine from where it lies and compare it with ONNX Runtime."""
        try:
            with self._runner(bundle, engine.parent) as candidate:
                with OnnxRuntimeRunner(bundle, precision=self.precision, threads=1) as reference:
                    return check_engine(bundle, candidate, reference)
        except Exception as exc:  # noqa: BLE001 — an engine that does not load fails
            return CheckResult(False, 0, float("inf"), float("inf"), f"does not load: {exc}")

    def _switch(self, model: Any, decision: Decision, record: dict[str, Any]) -> None:
        """Serve from the checked engine; then the engine it replaces may go."""
        if model.runner.backend != "tensorrt":
            runner = self._runner(model.bundle, self.engine_dir)
            try:
                runner.__enter__()
            except Exception as exc:  # noqa: BLE001
                self._update(
                    record,
                    state="failed",
                    verified=None,
                    error=str(exc),
                    detail=f"engine does not load: {exc}; screening stays on ONNX Runtime",
                )
                return
            if not self._swap(model, runner):
                return
            log.info("%s now screens on TensorRT (%s)", model.bundle.name, decision.engine)
        old = record.get("verified")
        self._update(
            record,
            state="ready",
            serving="tensorrt",
            verified=decision.engine,
            error=None,
            detail="serving on TensorRT",
        )
        if old and old != decision.engine and not self._in_use_elsewhere(old, decision):
            (self.engine_dir / old).unlink(missing_ok=True)

    def _swap(self, model: Any, runner: Runner) -> bool:
        """Replace the model's runner under its lock; close the one it replaced."""
        with model.lock:
            stopping = self.stop_event.is_set()
            if not stopping:
                old, model.runner = model.runner, runner
        if stopping:  # ModelSet.close() may already have run: do not hand it a new runner
            runner.__exit__(None, None, None)
            return False
        old.__exit__(None, None, None)
        return True

    def _fall_back(self, model: Any) -> None:
        """A rejected engine that is already serving (built at start-up by an older
        ModelSet, or a lost status file) is replaced by ONNX Runtime at once."""
        if model.runner.backend != "tensorrt":
            return
        runner = OnnxRuntimeRunner(
            model.bundle, precision=self.precision, threads=int(self.config.inference_threads)
        )
        runner.__enter__()
        self._swap(model, runner)

    def _in_use_elsewhere(self, engine: str, decision: Decision) -> bool:
        return any(
            name != decision.bundle and engine in (r.get("verified"), r.get("engine"))
            for name, r in self.status["bundles"].items()
        )

    def _clear_staging(self) -> None:
        """Half-built engines from a power cut or a kill are never used."""
        if self.staging.is_dir():
            for leftover in self.staging.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)

    # -- status ----------------------------------------------------------------------

    def _update(self, record: dict[str, Any], **fields: Any) -> None:
        record.update(fields)
        self._set()

    def _set(self, *, throttle: bool = False, **fields: Any) -> dict[str, Any]:
        self.status.update(fields)
        now = time.monotonic()
        if throttle and now - self._last_write < STATUS_WRITE_EVERY_S:
            return self.status
        self._last_write = now
        self.status["updated"] = utc_now()
        try:
            write_status(self.data_dir, self.status)
        except OSError as exc:  # a full disk must not stop the refresh itself
            log.warning("cannot write %s: %s", status_path(self.data_dir), exc)
        return self.status
