"""``/healthz``: is the box alive, and is each part of it working.

Anyone may ask whether the box is up (the kiosk does, before it shows the page; a
monitor may): without a login or the device token the answer says only ``status``,
``database`` and ``disk`` as ok or not. Queue, components, engines, models (whose
errors can name folders and files) and the drift and health warnings are for a
signed-in user or the device token."""

from __future__ import annotations

import shutil

from flask import Blueprint, current_app, jsonify

from appliance.inference.engines.status import read_status
from appliance.store import jobs
from appliance.web.auth import signed_in

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    store = current_app.extensions["appliance_store"]
    config = current_app.config["APPLIANCE"]
    body: dict = {"status": "ok", "decision_support": "decision support, not a diagnosis"}
    try:
        body["queue"] = jobs.counts(store)
        body["database"] = "ok"
    except Exception as exc:  # report, never crash the probe
        body["database"] = f"error: {exc}"
        body["status"] = "degraded"
    free_mb = shutil.disk_usage(store.data_dir).free // (1024 * 1024)
    body["disk_free_mb"] = free_mb
    body["disk"] = "ok"
    if free_mb < config.min_free_mb:
        body["status"] = "degraded"
        body["disk"] = "full: new images are refused"
    body["components"] = dict(current_app.extensions.get("appliance_status", {}))
    # TensorRT engine builds report progress here; a build in progress is not a fault
    # (screening runs on ONNX Runtime meanwhile).
    engines = read_status(config.data_dir)
    body["engines"] = {"state": engines.get("state"), "progress": engines.get("progress")}
    full = signed_in()
    # Drift and health warnings say where to look; they never make the box "degraded"
    # (it still screens), so a probe that restarts services is not set off by them.
    # Only worked out for those who see them: an anonymous probe costs no monitoring.
    if full:
        try:
            body["warnings"] = current_app.extensions["appliance_monitor"].current()["warnings"]
        except Exception as exc:  # report, never crash the probe
            body["warnings"] = [
                {"code": "monitoring_error", "message": f"monitoring failed: {exc}"}
            ]
    models = current_app.extensions.get("appliance_models")
    if models is not None:  # set by `appliance serve`, which runs the workers
        body["models"] = models.status()
        if models.errors:
            body["status"] = "degraded"
    if not full:
        body = {
            "status": body["status"],
            "decision_support": body["decision_support"],
            "database": "ok" if body["database"] == "ok" else "error",
            "disk": "ok" if body["disk"] == "ok" else "full",
        }
    return jsonify(body), 200 if body["status"] == "ok" else 503
