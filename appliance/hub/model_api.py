"""The device API's model endpoints (on ``api.bp``, so device-token auth and the one
JSON error shape apply): what this box should have, the signed files themselves (HTTP
Range: a box resumes a cut download where it stopped), and what the box runs now.

A file is served only to a box it was rolled out to (404 otherwise), straight from
disk in 64 KB blocks (never read whole into memory); one byte range per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from flask import Response, g, jsonify, request

from appliance.hub import distribution, records, schemas
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
    size = path.stat().st_size
    start, end = _range(request.headers.get("Range"), size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "ETag": f'"{sha}"',  # the content of a sha never changes
    }
    status = 200
    if request.headers.get("Range"):
        status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
    return Response(
        _blocks(path, start, end - start + 1),
        status=status,
        headers=headers,
        mimetype="application/octet-stream",
        direct_passthrough=True,
    )


RANGE = re.compile(r"^bytes=(\d{1,19})-(\d{0,19})$")
BLOCK = 64 * 1024


def _range(header: str | None, size: int) -> tuple[int, int]:
    """The first and last byte asked for (one range: what the box asks); 416 otherwise."""
    if not header:
        return 0, size - 1
    found = RANGE.match(header.strip())
    start = int(found.group(1)) if found else size
    end = min(int(found.group(2)), size - 1) if found and found.group(2) else size - 1
    if start >= size or end < start:
        raise ApiError(416, "range_not_satisfiable", f"the file has {size} bytes")
    return start, end


def _blocks(path: Path, start: int, length: int) -> Iterator[bytes]:
    """The file's bytes in blocks; closed when the box goes away mid-file."""
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            block = fh.read(min(BLOCK, length))
            if not block:
                return
            length -= len(block)
            yield block


@bp.post("/models/status")
def model_status():
    try:
        reported = schemas.model_report(json_body())  # one declared schema (schemas.py)
    except ValueError as exc:
        raise ApiError(400, "bad_payload", str(exc)) from exc
    conn = db()
    with conn.transaction():
        distribution.record_device_models(conn, g.device["id"], reported)
        records.touch_device(conn, g.device["id"], request.headers.get("User-Agent", ""))
    return jsonify({"recorded": len(reported)})
