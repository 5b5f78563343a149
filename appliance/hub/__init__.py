"""The central hub: receives results and reviews from many boxes (``appliance hub serve``).

A separate Flask app from the box's (``create_app`` factory, flaskr style): the device
API in ``api.py``, the admin dashboard in ``dashboard.py``, storage in ``db.py`` (SQLite
or PostgreSQL) and ``records.py``. One database connection per request, on ``g``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, g, request

from appliance.hub.db import Connection, HubDatabase
from appliance.hub.limits import LARGEST_BODY
from appliance.wire.secret_files import random_secret


def get_db() -> Connection:
    from flask import current_app

    if "hub_db" not in g:
        g.hub_db = current_app.extensions["hub_database"].connect()
    return g.hub_db


def close_db(exc: BaseException | None = None) -> None:
    conn = g.pop("hub_db", None)
    if conn is not None:
        conn.close()


def session_key(data_dir: Path) -> bytes:
    return random_secret(data_dir / "secrets" / "hub_session_key")


def create_app(
    data_dir: Path, database_url: str = "", test_config: dict[str, Any] | None = None
) -> Flask:
    """The hub app for ``data_dir`` (and the database at ``database_url``, if given)."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    database = HubDatabase(data_dir, database_url)
    database.migrate()
    app = Flask(__name__)
    app.config.update(
        HUB_DATA_DIR=str(data_dir),
        SECRET_KEY=session_key(data_dir),
        MAX_CONTENT_LENGTH=LARGEST_BODY,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["hub_database"] = database
    app.teardown_appcontext(close_db)

    from appliance.hub import api, dashboard

    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def http_error(exc):
        if request.path.startswith("/api/"):
            code = (exc.name or "error").lower().replace(" ", "_")
            return api.error_response(exc.code, code, exc.description or exc.name)
        return exc

    images = data_dir / "images"
    if images.is_dir():  # partial images abandoned while the hub was down
        for device_images in images.iterdir():
            api.remove_abandoned_parts(device_images)

    app.register_error_handler(api.ApiError, api.api_error)
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    return app
