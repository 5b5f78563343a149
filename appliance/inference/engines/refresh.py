"""``EngineRefresher``: builds, checks and swaps in engines in a background thread.

After the first boot, a JetPack upgrade or a new model the engine for this device is
missing: the box serves on ONNX Runtime while this thread builds the engine into
``engines/staging/``, checks it (``checks``) and only then moves it into ``engines/``
and swaps it in under the model's lock. The engine it replaces is deleted only then; one
that disagrees is renamed ``*.rejected`` and the box stays on ONNX Runtime.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.inference.bundle import Bundle
from appliance.inference.engines.checks import CheckResult, check_engine
from appliance.inference.engines.decide import (
    REJECTED,
    Decision,
    Device,
    decide,
    listing,
    probe_device,
)
from appliance.inference.engines.status import read_status, status_path, utc_now, write_status
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.runner import Runner
from appliance.inference.tensorrt_build import PROFILE_BATCH, build_engine
from appliance.inference.tensorrt_runner import PRECISION_FILES, TensorRTRunner

log = logging.getLogger(__name__)

STAGING = "staging"
STATUS_WRITE_EVERY_S = 1.0


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
        files = listing(self.engine_dir)
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
