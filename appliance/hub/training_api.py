"""Training exports sent with sync (issue 27), on ``api.bp``: the device token, the one
JSON error shape and the body limits apply as for every other device request.

A box whose site allows it (``training_sync``; ``appliance training send``) sends an
export's files as resumable chunks, the signed manifest first::

    GET  /api/v1/training/<export id>                       what the hub holds already
    PUT  /api/v1/training/<export id>/files/<file>/chunks/<n>  one chunk (X-Chunk-Sha256)
    POST /api/v1/training/<export id>/files/<file>          {"size", "chunks", "sha256"}
    POST /api/v1/training/<export id>/complete              verify whole, then import

Files are staged on disk, ``DATA_DIR/training/incoming/<device>/<export id>/`` (the
export's own layout) with the chunks of unfinished files in ``<export id>.parts/``.
``GET`` answers ``{"imported", "held", "chunks"}``: whether the export is in already,
the files the hub holds (staged, or images it keeps already from another export: never
sent twice) and, per unfinished file, the chunks it holds, so a dropped link resumes
where it stopped. The manifest is checked (signature, fields, this device's key and id)
as soon as it and its signature are there; no other file is taken before it, nor one it
does not list, nor one whose sha256 is not the signed one. ``complete`` runs the same
check and import as ``appliance hub training import`` (``training.import_export``):
an export imported before is answered ``already`` and adds nothing; a refused one is
answered 422 ``export_refused`` naming the file, and its staged files are deleted.

Bounded: a chunk by ``MAX_CHUNK_BYTES``, a file by the export's own limits, an export by
``MAX_TRAINING_EXPORT_BYTES``, a box by ``MAX_TRAINING_UPLOADS`` exports at once; an
upload untouched for ``PARTS_TTL_SECONDS`` is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from flask import current_app, g, jsonify, request

from appliance.hub.api import ApiError, _fsync_write, assemble_chunks, bp, db
from appliance.hub.limits import (
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_TRAINING_EXPORT_BYTES,
    MAX_TRAINING_UPLOADS,
    PARTS_TTL_SECONDS,
    json_body,
    read_body,
)
from appliance.hub.training import held_images, image_path, import_export
from appliance.wire.training_export import (
    LABELS,
    MANIFEST,
    SIGNATURE,
    TrainingExportError,
    sha256_file,
)
from appliance.wire.training_verify import IDENT, IMAGE_PATH, check_manifest, max_bytes

TALLY = ".staged_bytes"  # in the parts folder: bytes of the files finished so far
_tally_lock = threading.Lock()  # an export's running byte count
_import_lock = threading.Lock()  # one import at a time in this process: a box that asks
# again while its import runs is answered "already" once it is in


def _data_dir() -> Path:
    return Path(current_app.config["HUB_DATA_DIR"])


def _export_dir(export_id: str) -> Path:
    """This box's staging folder for ``export_id`` (refused unless the id is its own)."""
    device = g.device["id"]
    if not IDENT.match(export_id) or not export_id.startswith(f"{device}-"):
        raise ApiError(400, "bad_export_id", f"{export_id!r} is not an export id of this box")
    return _data_dir() / "training" / "incoming" / device / export_id


def _parts(folder: Path) -> Path:
    return folder.with_name(folder.name + ".parts")


def _check_rel(rel: str) -> str:
    if rel not in (MANIFEST, SIGNATURE, LABELS) and not IMAGE_PATH.match(rel):
        raise ApiError(400, "bad_file", f"{rel!r} is not a file a training export holds")
    return rel


def _remove(folder: Path) -> None:
    shutil.rmtree(_parts(folder), ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(device_dir: Path) -> None:
    now = time.time()
    for parts in device_dir.glob("*.parts") if device_dir.is_dir() else ():
        try:
            if now - parts.stat().st_mtime > PARTS_TTL_SECONDS:
                _remove(parts.with_name(parts.name.removesuffix(".parts")))
        except OSError:
            pass  # another request finished or removed it meanwhile


_listed_cache: dict[Path, tuple[int, dict[str, str]]] = {}


def _listed(folder: Path) -> dict[str, str] | None:
    """The files the staged (already checked) manifest lists, or None before it is in."""
    path = folder / MANIFEST
    if not (folder / SIGNATURE).is_file() or not path.is_file():
        return None
    stamp = path.stat().st_mtime_ns
    held = _listed_cache.get(path)
    if held is None or held[0] != stamp:
        if len(_listed_cache) > 8:
            _listed_cache.clear()
        held = (stamp, json.loads(path.read_bytes())["files"])
        _listed_cache[path] = held
    return held[1]


def _imported(export_id: str) -> bool:
    row = db().one("SELECT 1 AS x FROM training_exports WHERE export_id = ?", (export_id,))
    return row is not None


def _tally(folder: Path) -> int:
    try:
        return int((_parts(folder) / TALLY).read_text())
    except (OSError, ValueError):
        return 0


@bp.get("/training/<export_id>")
def training_status(export_id: str):
    folder = _export_dir(export_id)
    if _imported(export_id):
        return jsonify({"imported": True, "held": [], "chunks": {}})
    held = [n for n in (MANIFEST, SIGNATURE, LABELS) if (folder / n).is_file()]
    if (folder / "images").is_dir():
        held += sorted(f"images/{p.name}" for p in (folder / "images").glob("*.png"))
    listed = _listed(folder)
    if listed:  # images the hub keeps already, from another export: never sent again
        wanted = {sha: rel for rel, sha in listed.items() if rel != LABELS}
        kept = held_images(db(), sorted(wanted))
        held += sorted(wanted[s] for s in kept if wanted[s] not in held)
    chunks = {}
    parts = _parts(folder)
    for each in parts.iterdir() if parts.is_dir() else ():
        if each.is_dir():
            rel = each.name.replace("__", "/")
            chunks[rel] = sorted(int(p.name) for p in each.iterdir() if p.name.isdigit())
    return jsonify({"imported": False, "held": held, "chunks": chunks})


@bp.put("/training/<export_id>/files/<path:rel>/chunks/<int:index>")
def training_chunk(export_id: str, rel: str, index: int):
    folder, rel = _export_dir(export_id), _check_rel(rel)
    if index >= MAX_CHUNKS:
        raise ApiError(400, "bad_chunk", f"a chunk index must be below {MAX_CHUNKS}")
    if rel not in (MANIFEST, SIGNATURE) and _listed(folder) is None:
        raise ApiError(409, "manifest_first", "send manifest.json and manifest.sig first")
    data = read_body(MAX_CHUNK_BYTES)
    if hashlib.sha256(data).hexdigest() != request.headers.get("X-Chunk-Sha256", ""):
        raise ApiError(400, "chunk_checksum", f"{rel} chunk {index} does not match its sha256")
    parts = _parts(folder)
    with _tally_lock:
        if not parts.is_dir():
            _remove_abandoned(folder.parent)
            started = list(folder.parent.glob("*.parts")) if folder.parent.is_dir() else []
            if len(started) >= MAX_TRAINING_UPLOADS:
                raise ApiError(429, "too_many_uploads", "finish the exports already started first")
        store = parts / rel.replace("/", "__")
        pieces = [p for p in store.iterdir() if p.name.isdigit()] if store.is_dir() else []
        this_file = sum(p.stat().st_size for p in pieces if p.name != str(index)) + len(data)
        if this_file > max_bytes(rel):
            raise ApiError(413, "file_too_large", f"{rel} may hold at most {max_bytes(rel)} bytes")
        limit = current_app.config.get("HUB_TRAINING_MAX_EXPORT_BYTES", MAX_TRAINING_EXPORT_BYTES)
        if _tally(folder) + this_file > limit:
            raise ApiError(413, "export_too_large", f"an export may hold at most {limit} bytes")
        _fsync_write(store / str(index), data)
        os.utime(parts)  # still in use: not abandoned
    return jsonify({"stored": index})


def _file_body() -> tuple[int, int, str]:
    body = json_body()
    try:
        size, count, sha = body["size"], body["chunks"], body["sha256"]
        if type(size) is not int or type(count) is not int or not isinstance(sha, str):
            raise TypeError(body)
    except (TypeError, KeyError) as exc:
        raise ApiError(400, "bad_payload", 'expected {"size", "chunks", "sha256"}') from exc
    if not 0 <= size or not 1 <= count <= MAX_CHUNKS:
        raise ApiError(400, "bad_payload", f"a file is sent in 1 to {MAX_CHUNKS} chunks")
    return size, count, sha


def _known_key() -> str | None:
    row = db().one("SELECT public_key FROM training_keys WHERE device_id = ?", (g.device["id"],))
    return row["public_key"] if row else None


def _check_staged_manifest(folder: Path, export_id: str) -> None:
    """Once manifest.json and manifest.sig are both in: the signature and every field,
    this device's key and id; refused whole (both removed) if not."""
    if not (folder / MANIFEST).is_file() or not (folder / SIGNATURE).is_file():
        return
    try:
        manifest, _files = check_manifest(
            (folder / MANIFEST).read_bytes(), (folder / SIGNATURE).read_bytes(), _known_key()
        )
        if manifest["device_id"] != g.device["id"] or manifest["export_id"] != export_id:
            raise TrainingExportError(f"{MANIFEST}: not export {export_id} of this device")
    except TrainingExportError as exc:
        _remove(folder)
        raise ApiError(422, "export_refused", str(exc)) from exc


@bp.post("/training/<export_id>/files/<path:rel>")
def training_file(export_id: str, rel: str):
    folder, rel = _export_dir(export_id), _check_rel(rel)
    size, count, sha = _file_body()
    listed = _listed(folder)
    if rel not in (MANIFEST, SIGNATURE):
        if listed is None:
            raise ApiError(409, "manifest_first", "send manifest.json and manifest.sig first")
        if listed.get(rel) != sha:
            raise ApiError(422, "export_refused", f"{rel}: not listed with this sha256 in the"
                           " signed manifest")  # fmt: skip
    store = _parts(folder) / rel.replace("/", "__")
    if not store.is_dir() and (folder / rel).is_file():  # asked again: its answer was lost
        if sha256_file(folder / rel) == sha:
            return jsonify({"complete": rel})
    missing = [i for i in range(count) if not (store / str(i)).is_file()]
    if missing:
        raise ApiError(400, "chunks_missing", f"{rel}: chunks not received: {missing[:20]}")
    if size > max_bytes(rel) or not assemble_chunks(store, count, folder / rel, size, sha):
        (folder / rel).unlink(missing_ok=True)
        shutil.rmtree(store, ignore_errors=True)
        raise ApiError(400, "file_checksum", f"{rel}: the assembled file does not match its"
                       " sha256 or size: send it again")  # fmt: skip
    shutil.rmtree(store, ignore_errors=True)
    with _tally_lock:
        (_parts(folder) / TALLY).write_text(str(_tally(folder) + size))
    if rel in (MANIFEST, SIGNATURE):
        _check_staged_manifest(folder, export_id)
    return jsonify({"complete": rel})


def _link_held(folder: Path, listed: dict[str, str]) -> list[str]:
    """Put the images the hub keeps already into the staged export (a link, else a
    copy); returns the listed files still missing."""
    missing = []
    for rel, sha in sorted(listed.items()):
        target = folder / rel
        if target.is_file():
            continue
        kept = image_path(_data_dir(), sha)
        if rel == LABELS or not kept.is_file():
            missing.append(rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(kept, target)
        except OSError:
            shutil.copyfile(kept, target)
    return missing


@bp.post("/training/<export_id>/complete")
def training_complete(export_id: str):
    folder = _export_dir(export_id)
    with _import_lock:
        if _imported(export_id):
            _remove(folder)
            return jsonify({"export": export_id, "images": 0, "labels": 0, "already": True})
        listed = _listed(folder)
        if listed is None:
            raise ApiError(409, "manifest_first", "send manifest.json and manifest.sig first")
        missing = _link_held(folder, listed)
        if missing:
            raise ApiError(409, "files_missing", f"files not received: {missing[:20]}")
        try:
            report: dict[str, Any] = import_export(db(), _data_dir(), folder)
        except TrainingExportError as exc:
            _remove(folder)
            raise ApiError(422, "export_refused", str(exc)) from exc
        _remove(folder)
    return jsonify(report)
