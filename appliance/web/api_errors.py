"""Errors at the web edge: one JSON shape for the API, a plain page for people.

API clients (paths under /api/, or asking for JSON) always get
``{"error": {"code": ..., "message": ...}}``; a browser gets the error page, translated.
"""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from appliance.errors import ApplianceError, IngestError, StorageFullError
from appliance.web.reasons import translate_reason

# What a person sees instead of Werkzeug's English descriptions (API clients keep those).
PAGE_MESSAGES = {
    400: _l("The request was not understood. Go back and try again."),
    404: _l("This page or image does not exist."),
    405: _l("This page cannot be used that way. Go back and try again."),
    500: _l(
        "Something went wrong on the box. Try again; if it happens again, tell the administrator."
    ),
}


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _respond(status: int, code: str, message: str):
    if _wants_json():
        return error_response(status, code, message)
    return render_template("error.html", code=status, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config["APPLIANCE"].upload_max_mb
            message = _(
                "The file is larger than the %(limit)s MB limit for one image.", limit=limit
            )
        elif exc.code in PAGE_MESSAGES and not _wants_json():
            message = str(PAGE_MESSAGES[exc.code])
        return _respond(exc.code or 500, code, message)

    @app.errorhandler(StorageFullError)
    def storage_full(exc: StorageFullError):
        return _respond(507, "storage_full", _("The box's disk is full; nothing was stored."))

    @app.errorhandler(IngestError)
    def ingest_error(exc: IngestError):
        return _respond(422, "not_importable", translate_reason(exc.reason))

    @app.errorhandler(ApplianceError)
    def appliance_error(exc: ApplianceError):
        return _respond(500, "appliance_error", translate_reason(str(exc)))
