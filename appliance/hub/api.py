"""The hub's device API (``/api/v1``): enrolment, probe, entries, images.

Every error has the one JSON shape ``{"error": {"code": ..., "message": ...}}``: 400 for
a malformed payload, 401 for an unknown token, 403 for a revoked device, 413 for a body
over its endpoint's limit (``limits.py``). A batch is acknowledged only after its
transaction has committed.

``POST /entries`` checks each entry against its kind's schema (``schemas.py``) and
answers ``{"acked": [[id, rev], ...], "refused": [{"id", "rev", "kind", "field",
"message"}, ...]}``: the entries that fit are stored and acknowledged, each one that
does not is refused and named, with the field at fault (a dotted path into its data)
and a message that starts with that field. The status is 200 when at least one entry
was stored (or the batch was empty) and 422 when every entry was refused, the answer
then also carrying the one error shape (code ``entries_refused``). A box that reads only
``acked`` (every box before this) keeps working: what it sent that fits is
acknowledged, what does not stays pending there. A batch whose envelope is wrong (not
``{"entries": [{"id", "rev", "kind", "data"}]}``, a kind this hub does not know) is
still a 400 for the whole batch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from appliance.errors import EnrolmentError
from appliance.hub import records
from appliance.hub.db import Connection
from appliance.hub.limits import (
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_IMAGE_BYTES,
    MAX_PARTIAL_IMAGES,
    PARTS_TTL_SECONDS,
    json_body,
    read_body,
)

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api/v1")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_KNOWN = 5000  # [id, revision] pairs per /known request


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
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    if isinstance(getattr(exc, "retry_after", None), int):  # the box waits as told
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def db() -> Connection:
    from appliance.hub import get_db

    return get_db()


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


def _ed25519_public_key(text: str) -> bool:
    """The box sends the raw 32-byte Ed25519 public key, base64 (wire.public_key_text)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 32:
        return False
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return False
    return True


@bp.post("/enrol")
def enrol():
    body = json_body()
    fields = ("code", "name", "public_key")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        raise ApiError(400, "bad_payload", 'expected {"code", "name", "public_key"} as text')
    if not 1 <= len(body["code"]) <= 40 or not 1 <= len(body["name"]) <= 100:
        raise ApiError(400, "bad_payload", "the code or the box's name is not a plausible one")
    if not _ed25519_public_key(body["public_key"]):
        raise ApiError(400, "bad_public_key", "public_key must be a base64 Ed25519 public key")
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
    """Store what fits its schema, refuse the rest entry by entry (see the module's
    docstring for the answer's shape)."""
    try:
        batch = records.validate_entries(json_body())
    except ValueError as exc:
        raise ApiError(400, "bad_payload", str(exc)) from exc
    taken, refused = records.admit_entries(batch)
    if refused:  # one line per batch: a box resending nonsense cannot flood the log
        log.warning(
            "device %s: %d entries refused, the first %r rev %s: %r",
            g.device["id"],
            len(refused),
            refused[0]["id"],
            refused[0]["rev"],
            refused[0]["message"][:500],
        )
    conn = db()
    delay = current_app.config.get("HUB_TEST_WRITE_DELAY", 0.0)
    with conn.transaction():
        acked = records.store_entries(conn, g.device["id"], taken)
        records.touch_device(conn, g.device["id"], request.headers.get("User-Agent", ""))
        if delay:  # tests only: widen the window in which the hub is killed mid-write
            time.sleep(delay)
    # Only now, after COMMIT, is the batch durable: acknowledge it.
    answer = {"acked": [list(k) for k in acked], "refused": refused}
    if refused and not taken:
        first = refused[0]["message"]
        more = f" (and {len(refused) - 1} more entries)" if len(refused) > 1 else ""
        answer["error"] = {"code": "entries_refused", "message": f"{first}{more}"}
        return jsonify(answer), 422
    return jsonify(answer)


@bp.post("/known")
def known():
    body = json_body()
    try:
        pairs = body["entries"]
        if not isinstance(pairs, list) or len(pairs) > MAX_KNOWN:
            raise ValueError(pairs)
        keys = [(e, r) for e, r in pairs]
        if not all(isinstance(e, str) and type(r) is int for e, r in keys):
            raise ValueError(keys)
    except (TypeError, ValueError, KeyError) as exc:
        raise ApiError(
            400, "bad_payload", f'expected {{"entries": [[id, rev], ...]}}, at most {MAX_KNOWN}'
        ) from exc
    acked = records.known_entries(db(), g.device["id"], keys)
    return jsonify({"acked": [list(k) for k in acked]})


# -- images: resumable, chunked, sha256 per chunk -----------------------------------
# Bounded per chunk (MAX_CHUNK_BYTES), per image (MAX_CHUNKS, MAX_IMAGE_BYTES) and per
# box (MAX_PARTIAL_IMAGES); a partial image untouched for PARTS_TTL_SECONDS is deleted.
def _image_dir(sha: str) -> Path:
    if not SHA256.match(sha):
        raise ApiError(400, "bad_sha256", "the image id must be a lower-case sha256")
    return Path(current_app.config["HUB_DATA_DIR"]) / "images" / g.device["id"]


def _parts(sha: str) -> Path:
    return _image_dir(sha) / f"{sha}.parts"


def remove_abandoned_parts(folder: Path, now: float | None = None) -> int:
    """Delete partial images under ``folder`` (one box's, or every box's with a
    ``*/`` pattern) untouched for PARTS_TTL_SECONDS; returns how many went."""
    now = time.time() if now is None else now
    removed = 0
    for parts in folder.glob("*.parts"):
        try:
            if now - parts.stat().st_mtime > PARTS_TTL_SECONDS:
                shutil.rmtree(parts)
                removed += 1
        except OSError:
            pass  # another request finished or removed it meanwhile
    return removed


def _parts_size(parts: Path) -> int:
    with os.scandir(parts) as entries:
        return sum(e.stat().st_size for e in entries if e.name.isdigit())


def assemble_chunks(parts: Path, count: int, target: Path, size: int, sha: str) -> bool:
    """Chunks ``0..count-1`` of ``parts`` joined into ``target`` (fsynced, renamed into
    place) if they make ``size`` bytes with this ``sha``; else nothing is put in place."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as out:
        for index in range(count):
            data = (parts / str(index)).read_bytes()
            digest.update(data)
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != sha or tmp.stat().st_size != size:
        tmp.unlink()
        return False
    os.replace(tmp, target)
    return True


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
    chunks = []
    if not held and parts.is_dir():
        chunks = sorted(int(p.name) for p in parts.iterdir() if p.name.isdigit())
    return jsonify({"complete": held is not None, "chunks": chunks})


@bp.put("/images/<sha>/chunks/<int:index>")
def image_chunk(sha: str, index: int):
    parts = _parts(sha)
    if index >= MAX_CHUNKS:
        raise ApiError(400, "bad_chunk", f"a chunk index must be below {MAX_CHUNKS}")
    data = read_body(MAX_CHUNK_BYTES)
    digest = request.headers.get("X-Chunk-Sha256", "")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ApiError(400, "chunk_checksum", f"chunk {index} does not match its sha256")
    folder = parts.parent
    remove_abandoned_parts(folder)
    if not parts.is_dir():
        unfinished = list(folder.glob("*.parts")) if folder.is_dir() else []
        if len(unfinished) >= MAX_PARTIAL_IMAGES:
            raise ApiError(
                429, "too_many_partial_images", "finish the images already started first"
            )
    elif _parts_size(parts) + len(data) > MAX_IMAGE_BYTES:
        raise ApiError(413, "image_too_large", f"an image may be at most {MAX_IMAGE_BYTES} bytes")
    _fsync_write(parts / str(index), data)
    return jsonify({"stored": index})


@bp.post("/images/<sha>/complete")
def image_complete(sha: str):
    body = json_body()
    try:
        size, count = body["size"], body["chunks"]
        if type(size) is not int or type(count) is not int:
            raise TypeError(body)
    except (TypeError, KeyError) as exc:
        raise ApiError(400, "bad_payload", 'expected {"size", "chunks"} as integers') from exc
    if not 0 <= size <= MAX_IMAGE_BYTES or not 1 <= count <= MAX_CHUNKS:
        raise ApiError(
            400, "bad_payload", f"at most {MAX_IMAGE_BYTES} bytes in at most {MAX_CHUNKS} chunks"
        )
    parts = _parts(sha)
    missing = [i for i in range(count) if not (parts / str(i)).exists()]
    if missing:
        raise ApiError(400, "chunks_missing", f"chunks not received: {missing[:20]}")
    target = _image_dir(sha) / sha[:2] / sha
    if not assemble_chunks(parts, count, target, size, sha):
        shutil.rmtree(parts, ignore_errors=True)
        raise ApiError(400, "image_checksum", "the assembled image does not match its sha256")
    conn = db()
    with conn.transaction():
        conn.execute(
            "INSERT INTO images (device_id, sha256, size_bytes, stored_path, completed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, sha256) DO NOTHING",
            (g.device["id"], sha, size, str(target), records.now()),
        )
    shutil.rmtree(parts, ignore_errors=True)
    return jsonify({"complete": True})
