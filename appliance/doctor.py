"""``appliance doctor``: what works on this box, what does not, and what to do about it."""

from __future__ import annotations

import os
import shutil
from typing import Any

from appliance.config import Config
from appliance.inference.backends import backend_report
from appliance.inference.bundle import load_bundle
from appliance.inference.engines.status import read_status
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
    return {
        "ok": all(item["ok"] for item in essential),
        "backends": backends,
        "models": models,
        "storage": storage,
        "engines": _engine_checks(config),
    }


def _engine_checks(config: Config) -> list[dict[str, Any]]:
    """TensorRT engines as the last `appliance serve` left them (informative: screening
    runs on ONNX Runtime whenever an engine is missing, so none of this fails the check)."""
    status = read_status(config.data_dir)
    checks = [{"name": "engine builds", "ok": True,
               "detail": f"{status.get('state', 'unknown')}: {status.get('detail') or '-'}"}]
    for name, bundle in sorted(status.get("bundles", {}).items()):
        detail = f"{bundle.get('state')}, serving on {bundle.get('serving') or '-'}"
        if bundle.get("error"):
            detail += f" ({bundle['error']})"
        checks.append({"name": name, "ok": True, "detail": detail})
    return checks


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
