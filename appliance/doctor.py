"""``appliance doctor``: what works on this box, what does not, and what to do about it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from appliance.config import Config
from appliance.inference.backends import backend_report
from appliance.inference.bundle import load_bundle
from appliance.inference.engines.decide import MAX_BUILD_ATTEMPTS
from appliance.inference.engines.status import read_status
from appliance.inference.engines.trt_support import check_file
from appliance.screening.models import REQUIRED, ModelSet, active_bundle_dirs, models_dir


def run_checks(config: Config) -> dict[str, Any]:
    backends = [
        {
            "name": b["name"],
            "ok": b["usable"],
            "usable": b["usable"],
            "version": b.get("version"),
            "detail": b["detail"] if b["usable"] else f"not usable: {', '.join(b['missing'])}",
        }
        for b in backend_report()
    ]
    models = _model_checks(config)
    storage = _storage_checks(config)
    # TensorRT missing on a CPU box is normal: only ONNX Runtime must work.
    essential = [b for b in backends if b["name"] == "onnxruntime"] + models + storage
    tensorrt_usable = any(b["usable"] for b in backends if b["name"] == "tensorrt")
    engines = _engine_checks(config, tensorrt_usable)
    return {
        "ok": all(item["ok"] for item in essential + engines),
        "backends": backends,
        "models": models,
        "storage": storage,
        "engines": engines,
    }


def gpu_selftest(
    config: Config, *, trt: Any = None, cuda: Any = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """``appliance doctor --gpu-selftest``: every installed bundle's engine built afresh,
    compared with ONNX Runtime and timed (``inference.engines.selftest``)."""
    from appliance.inference.engines.selftest import run_selftest

    bundles = [load_bundle(path) for _, path in sorted(active_bundle_dirs(config).items())]
    return run_selftest(bundles, precision=config.model_precision, trt=trt, cuda=cuda, log=log)


def _engine_checks(config: Config, tensorrt_usable: bool) -> list[dict[str, Any]]:
    """TensorRT engines as the last `appliance serve` left them. Screening runs on ONNX
    Runtime whenever an engine is missing, so a build in progress or no TensorRT is not a
    problem; a build that failed, or that the refresher gave up on, is (the box stays
    slow until someone reads the error), and so is a graph TensorRT would refuse on a box
    that has TensorRT."""
    status = read_status(config.data_dir)
    checks = [{"name": "engine builds", "ok": True,
               "detail": f"{status.get('state', 'unknown')}: {status.get('detail') or '-'}"}]
    for name, bundle in sorted(status.get("bundles", {}).items()):
        checks.append(_engine_record_check(name, bundle))
    if tensorrt_usable:
        for name, path in sorted(active_bundle_dirs(config).items()):
            onnx_file = path / "model.int8.onnx"
            found = check_file(onnx_file) if onnx_file.is_file() else []
            if found:
                more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
                checks.append({"name": f"{name} graph", "ok": False, "problems": found,
                               "detail": "TensorRT 10 would refuse it: "
                               + "; ".join(found[:3]) + more})
    return checks


def _engine_record_check(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """One bundle's entry in status.json: failed, or given up after repeated failures
    (``decide`` skips an engine whose build failed MAX_BUILD_ATTEMPTS times), is a problem."""
    state = record.get("state")
    serving = record.get("serving") or "-"
    detail = f"{state}, serving on {serving}"
    attempts = int(dict(record.get("failed_builds") or {}).get(str(record.get("engine")), 0))
    given_up = state == "skipped" and attempts >= MAX_BUILD_ATTEMPTS
    rejected = state == "skipped" and str(record.get("detail", "")).startswith(
        f"{record.get('engine')} did not match")
    problem = state == "failed" or given_up or rejected
    if given_up:
        detail = f"build abandoned after {attempts} failed attempts, serving on {serving}"
    if record.get("error"):
        detail += f" ({record['error']})"
    check = {"name": name, "ok": not problem, "detail": detail}
    if problem:
        check["error"] = record.get("error") or record.get("detail")
        check["engine"] = record.get("engine")
        check["detail"] += "; screening uses ONNX Runtime: " + (
            f"delete {record.get('engine')}.rejected in the engines folder to build it again"
            if rejected else "see `journalctl -u appliance`"
        )
    return check


def _model_checks(config: Config) -> list[dict[str, Any]]:
    folder = models_dir(config)
    found = active_bundle_dirs(config)  # the versions that screen (activated, or shipped)
    checks = []
    for name in REQUIRED:
        if name not in found:
            checks.append({"name": name, "ok": False, "detail": f"no bundle in {folder}"})
            continue
        try:
            bundle = load_bundle(found[name])  # verifies every file's sha256
        except Exception as exc:  # report every failure, never stop the check
            checks.append({"name": name, "ok": False, "detail": f"refused: {exc}"})
            continue
        checks.append(
            {
                "name": name,
                "ok": True,
                "version": bundle.version,
                "detail": f"{bundle.version} at {found[name]}, sha256 verified",
            }
        )
    if all(c["ok"] for c in checks):
        loaded = ModelSet(config, log_progress=lambda line: None).load()
        try:
            for check in checks:
                status = loaded.status()[check["name"]]
                if status["loaded"]:
                    check["detail"] += f", runs on {status['backend']}"
                    check["backend"] = status["backend"]
                else:
                    check["ok"] = False
                    check["detail"] = f"does not load: {status['error']}"
        finally:
            loaded.close()
    return checks


def _storage_checks(config: Config) -> list[dict[str, Any]]:
    data_dir = config.data_dir
    checks = []
    existing = data_dir if data_dir.exists() else data_dir.parent
    writable = os.access(existing, os.W_OK)
    checks.append(
        {
            "name": "data directory",
            "ok": writable,
            "detail": f"{data_dir} ({'exists' if data_dir.exists() else 'will be created'})"
            if writable
            else f"{existing} is not writable",
        }
    )
    free_mb = shutil.disk_usage(existing).free // (1024 * 1024)
    checks.append(
        {
            "name": "disk",
            "ok": free_mb >= config.min_free_mb,
            "detail": f"{free_mb} MB free, {config.min_free_mb} MB kept in reserve",
        }
    )
    return checks
