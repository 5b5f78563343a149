"""One JSON error shape for every API error: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from appliance.errors import ApplianceError, IngestError, StorageFullError


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config["APPLIANCE"].upload_max_mb
            message = f"The file is larger than the {limit} MB limit for one image."
        return error_response(exc.code or 500, code, message)

    @app.errorhandler(StorageFullError)
    def storage_full(exc: StorageFullError):
        return error_response(507, "storage_full", "The box's disk is full; nothing was stored.")

    @app.errorhandler(IngestError)
    def ingest_error(exc: IngestError):
        return error_response(422, "not_importable", exc.reason)

    @app.errorhandler(ApplianceError)
    def appliance_error(exc: ApplianceError):
        return error_response(500, "appliance_error", str(exc))
