"""The central hub: receives results and reviews from many boxes (``appliance hub serve``).

A separate Flask app from the box's (``create_app`` factory, flaskr style): the device
API in ``api.py``, the admin dashboard in ``dashboard.py``, storage in ``db.py`` (SQLite
or PostgreSQL) and ``records.py``. One database connection per request, on ``g``.
Behind a reverse proxy, ``proxy.py`` says who the client really is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, g, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_babel import Babel

from appliance.config import SETTINGS
from appliance.hub.db import Connection, HubDatabase
from appliance.hub.limits import LARGEST_BODY
from appliance.hub.proxy import TrustedProxies
from appliance.wire.secret_files import random_secret

# The dashboard speaks the box's languages, from the box's catalogs (scripts/i18n
# extracts the hub's templates too). Portuguese as written in Africa (pt_PT), as on the box.
LOCALES = {"en": "en", "fr": "fr", "pt": "pt_PT"}
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "pt": "Português"}
TRANSLATIONS = Path(__file__).resolve().parent.parent / "web" / "translations"


def hub_language() -> str:
    """en, fr or pt: the one chosen on the dashboard, else the browser's (a programme
    office's own computer, unlike the box's kiosk), else English."""
    chosen = session.get("lang")
    if chosen in LOCALES:
        return chosen
    return request.accept_languages.best_match(list(LOCALES)) or "en"


DEFAULT_TRUSTED_PROXIES = next(s.default for s in SETTINGS if s.name == "hub_trusted_proxies")

# The dashboard: nothing from another origin, no inline script or style, never framed.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


class SessionInterface(SecureCookieSessionInterface):
    """The session cookie is Secure whenever the request came over HTTPS (through a
    trusted proxy's X-Forwarded-Proto), not only when configured so."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")  # patient-derived figures
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


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
    data_dir: Path,
    database_url: str = "",
    test_config: dict[str, Any] | None = None,
    *,
    pool_size: int = 0,
) -> Flask:
    """The hub app for ``data_dir`` (and the database at ``database_url``, if given).

    Pending migrations are applied here, as they always were (``migrations.py``); a
    database newer than this code is refused. ``pool_size``: pooled PostgreSQL
    connections per process (0: one connection per request)."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    database = HubDatabase(data_dir, database_url, pool_size=pool_size)
    database.migrate()
    app = Flask(__name__)
    app.config.update(
        HUB_DATA_DIR=str(data_dir),
        HUB_TRUSTED_PROXIES=DEFAULT_TRUSTED_PROXIES,
        SECRET_KEY=session_key(data_dir),
        MAX_CONTENT_LENGTH=LARGEST_BODY,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        BABEL_TRANSLATION_DIRECTORIES=str(TRANSLATIONS),
    )
    if test_config:
        app.config.update(test_config)
    app.session_interface = SessionInterface()
    app.wsgi_app = TrustedProxies(app.wsgi_app, app.config["HUB_TRUSTED_PROXIES"])
    app.extensions["hub_database"] = database
    app.teardown_appcontext(close_db)
    app.after_request(security_headers)
    Babel(app, locale_selector=lambda: LOCALES[hub_language()])
    app.jinja_env.globals.update(hub_language=hub_language, LANGUAGES=LANGUAGE_NAMES)
    from appliance.hub import formats

    app.jinja_env.filters.update(pct=formats.percent, moment=formats.moment, day=formats.day)

    import appliance.hub.training_api  # noqa: F401 - its routes join api.bp
    from appliance.hub import api, dashboard, exports, model_api  # noqa: F401 - routes join api.bp
    from appliance.hub.fhir import api as fhir_api

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
    app.register_blueprint(fhir_api.bp)
    app.register_blueprint(exports.bp)
    from appliance.hub import admin, cascade  # issue 29: first run, admin pages, cascade

    app.register_blueprint(admin.bp)
    app.register_blueprint(cascade.bp)
    return app
