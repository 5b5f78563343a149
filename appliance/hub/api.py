"""The hub's device API (``/api/v1``): enrolment, probe, entries, images.

Every error has the one JSON shape ``{"error": {"code": ..., "message": ...}}``: 400 for
a malformed payload, 401 for an unknown token, 403 for a revoked device. A batch is
acknowledged only after its transaction has committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zlib
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from appliance.errors import EnrolmentError
from appliance.hub import records
from appliance.hub.db import Connection

bp = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_INFLATED = 64 * 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(exc.code or 500, code, exc.description or exc.name)


def db() -> Connection:
    from appliance.hub import get_db

    return get_db()


def json_body() -> Any:
    raw = request.get_data(cache=False)
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, MAX_INFLATED)
        except zlib.error as exc:
            raise ApiError(400, "bad_encoding", f"the gzip body is corrupt: {exc}") from exc
        if inflater.unconsumed_tail:
            raise ApiError(413, "too_large", "the request inflates to more than 64 MB")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from exc


@bp.before_request
def authenticate():
    if request.endpoint == "api.enrol":
        return None
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.startswith("Bearer ") else ""
    device = records.device_for_token(db(), token) if token else None
    if device is None:
        raise ApiError(401, "unknown_device", "Unknown device token: enrol this box again.")
    if device["revoked_at"]:
        raise ApiError(403, "revoked", "This device was revoked by the hub's administrator.")
    g.device = device
    return None


@bp.post("/enrol")
def enrol():
    body = json_body()
    fields = ("code", "name", "public_key")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        raise ApiError(400, "bad_payload", 'expected {"code", "name", "public_key"} as text')
    try:
        enrolled = records.enrol_device(db(), body["code"], body["name"], body["public_key"])
    except EnrolmentError as exc:
        raise ApiError(403, "enrolment_refused", str(exc)) from exc
    return jsonify(enrolled)


@bp.get("/ping")
def ping():
    conn = db()
    with conn.transaction():
        records.touch_device(conn, g.device["id"], request.headers.get("User-Agent", ""))
    return jsonify({"device_id": g.device["id"], "site": g.device["site"], "time": time.time()})


@bp.post("/entries")
def entries():
    try:
        batch = records.validate_entries(json_body())
    except ValueError as exc:
        raise ApiError(400, "bad_payload", str(exc)) from exc
    conn = db()
    delay = current_app.config.get("HUB_TEST_WRITE_DELAY", 0.0)
    with conn.transaction():
        acked = records.store_entries(conn, g.device["id"], batch)
        records.touch_device(conn, g.device["id"], request.headers.get("User-Agent", ""))
        if delay:  # tests only: widen the window in which the hub is killed mid-write
            time.sleep(delay)
    # Only now, after COMMIT, is the batch durable: acknowledge it.
    return jsonify({"acked": [list(k) for k in acked]})


@bp.post("/known")
def known():
    body = json_body()
    try:
        keys = [(str(e), int(r)) for e, r in body["entries"]]
    except (TypeError, ValueError, KeyError) as exc:
        raise ApiError(400, "bad_payload", 'expected {"entries": [[id, rev], ...]}') from exc
    acked = records.known_entries(db(), g.device["id"], keys)
    return jsonify({"acked": [list(k) for k in acked]})


# -- images: resumable, chunked, sha256 per chunk -----------------------------------
def _image_dir(sha: str) -> Path:
    if not SHA256.match(sha):
        raise ApiError(400, "bad_sha256", "the image id must be a lower-case sha256")
    return Path(current_app.config["HUB_DATA_DIR"]) / "images" / g.device["id"]


def _parts(sha: str) -> Path:
    return _image_dir(sha) / f"{sha}.parts"


def _fsync_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@bp.get("/images/<sha>")
def image_status(sha: str):
    parts = _parts(sha)
    held = db().one(
        "SELECT sha256 FROM images WHERE device_id = ? AND sha256 = ?", (g.device["id"], sha)
    )
    chunks = sorted(int(p.name) for p in parts.glob("*") if p.name.isdigit()) if not held else []
    return jsonify({"complete": held is not None, "chunks": chunks})


@bp.put("/images/<sha>/chunks/<int:index>")
def image_chunk(sha: str, index: int):
    data = request.get_data(cache=False)
    digest = request.headers.get("X-Chunk-Sha256", "")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ApiError(400, "chunk_checksum", f"chunk {index} does not match its sha256")
    _fsync_write(_parts(sha) / str(index), data)
    return jsonify({"stored": index})


@bp.post("/images/<sha>/complete")
def image_complete(sha: str):
    body = json_body()
    try:
        size, count = int(body["size"]), int(body["chunks"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ApiError(400, "bad_payload", 'expected {"size", "chunks"}') from exc
    parts = _parts(sha)
    missing = [i for i in range(count) if not (parts / str(i)).exists()]
    if missing:
        raise ApiError(400, "chunks_missing", f"chunks not received: {missing[:20]}")
    whole = hashlib.sha256()
    target = _image_dir(sha) / sha[:2] / sha
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(sha + ".tmp")
    with open(tmp, "wb") as out:
        for index in range(count):
            data = (parts / str(index)).read_bytes()
            whole.update(data)
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    if whole.hexdigest() != sha or tmp.stat().st_size != size:
        tmp.unlink()
        for part in parts.glob("*"):
            part.unlink()
        raise ApiError(400, "image_checksum", "the assembled image does not match its sha256")
    os.replace(tmp, target)
    conn = db()
    with conn.transaction():
        conn.execute(
            "INSERT INTO images (device_id, sha256, size_bytes, stored_path, completed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, sha256) DO NOTHING",
            (g.device["id"], sha, size, str(target), records.now()),
        )
    for part in parts.glob("*"):
        part.unlink()
    parts.rmdir()
    return jsonify({"complete": True})
