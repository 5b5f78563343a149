"""The device API's model endpoints (on ``api.bp``, so device-token auth and the one
JSON error shape apply): what this box should have, the signed files themselves (HTTP
Range: a box resumes a cut download where it stopped), and what the box runs now.

A file is served only to a box it was rolled out to (404 otherwise), straight from
disk in blocks (never read whole into memory).
"""

from __future__ import annotations

from pathlib import Path

from flask import g, jsonify, request, send_file

from appliance.hub import distribution, records
from appliance.hub.api import SHA256, ApiError, bp, db
from appliance.hub.limits import json_body


@bp.get("/models")
def models():
    return jsonify({"models": distribution.for_device(db(), g.device)})


@bp.get("/models/<sha>")
def model_file(sha: str):
    if not SHA256.match(sha):
        raise ApiError(400, "bad_sha256", "a bundle id must be a lower-case sha256")
    row = distribution.bundle_for_device(db(), g.device, sha)
    path = Path(row["stored_path"]) if row else None
    if path is None or not path.is_file():
        raise ApiError(404, "not_rolled_out", "no such model bundle for this device")
    # Range requests are answered 206 (werkzeug); the content of a sha never changes.
    return send_file(
        path,
        mimetype="application/octet-stream",
        conditional=True,
        etag=sha,
        max_age=0,
        download_name=f"{sha}.tar",
    )


@bp.post("/models/status")
def model_status():
    try:
        reported = distribution.validate_report(json_body())
    except ValueError as exc:
        raise ApiError(400, "bad_payload", str(exc)) from exc
    conn = db()
    with conn.transaction():
        distribution.record_device_models(conn, g.device["id"], reported)
        records.touch_device(conn, g.device["id"], request.headers.get("User-Agent", ""))
    return jsonify({"recorded": len(reported)})
