"""``POST /api/upload``: images from the page (multipart ``file`` fields) or a raw body.

A body over ``upload_max_mb`` is refused with 413: by its Content-Length before it is
read, else as soon as reading crosses the limit. Each file is spooled to the data dir's
tmp/ in chunks (multipart parts werkzeug has already spooled are copied the same way),
never held in memory whole.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from appliance.errors import FileTooLargeError
from appliance.ingest.importer import Importer, ImportOutcome
from appliance.store.files import ensure_free_space
from appliance.store.jobs import PRIORITY_INTERACTIVE
from appliance.web.api_errors import error_response

bp = Blueprint("upload", __name__, url_prefix="/api")


def _importer() -> Importer:
    return Importer(current_app.extensions["appliance_store"], current_app.config["APPLIANCE"])


@bp.post("/upload")
def upload():
    importer = _importer()
    uploads = []
    # Decide by content type before touching request.files: reading the form consumes
    # the body, and `curl --data-binary` labels a raw image as a url-encoded form.
    if request.mimetype == "multipart/form-data":
        # A browser sends a part with an empty file name when no file was chosen.
        files = request.files.getlist("file")
        uploads = [(s.stream, base_name(s.filename)) for s in files if s.filename]
    elif request.content_length or request.headers.get("Transfer-Encoding"):
        uploads = [(request.stream, base_name(request.headers.get("X-Filename", "")))]
    if not uploads:
        return error_response(400, "no_file", "No file was sent.")
    # Refuse before spooling a large body into the reserve kept for the database.
    ensure_free_space(
        importer.store.data_dir, request.content_length or 0, importer.config.min_free_mb
    )
    batch = f"upload:{secrets.token_hex(8)}"  # one request: one batch (store/visits.py)
    results = [
        import_upload(importer, stream, name, visit_key=batch).as_dict() for stream, name in uploads
    ]
    status = 201 if any(r["status"] == "stored" for r in results) else 200
    return jsonify({"results": results}), status


def base_name(name: str | None) -> str:
    """What the other doors record (a USB stick's, the hot folder's ``path.name``): the
    file's own name, without any folders a client put in front of it (``../../x.jpg``,
    ``C:\\fakepath\\x.jpg``), at most 255 characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] if name not in ("", ".", "..") else "upload"


def import_upload(
    importer: Importer,
    stream,
    name: str,
    *,
    visit_key: str,
    file_time: float | None = None,
) -> ImportOutcome:
    """Spool one uploaded file to disk (refusing it past ``upload_max_mb`` as soon as the
    limit is crossed, like a body refused by its Content-Length) and import it.
    ``visit_key``: the upload's batch; ``file_time``: the file's own time, as the
    browser gave it."""
    try:
        return importer.import_stream(
            stream,
            source="upload",
            source_detail=request.remote_addr or "",
            original_name=name,
            priority=PRIORITY_INTERACTIVE,  # someone is at the screen waiting for it
            visit_key=visit_key,
            file_time=file_time,
        )
    except FileTooLargeError as exc:
        raise RequestEntityTooLarge() from exc
