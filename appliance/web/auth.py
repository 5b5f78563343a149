"""Who is asking: staff logged in with user + PIN, or a device holding the API token.

- Staff: first run creates the admin (``/setup``); ``/login`` by user + PIN. Failed
  logins are counted per client address before the PIN is checked (five wrong PINs
  lock that client out of that account for 5 minutes, then longer; see
  ``appliance.logins.throttle``). The session lives in the database (``logins.sessions``):
  the cookie holds only its random id, ``/logout`` deletes it (a copied cookie is then
  refused), and it expires after ``session_idle_minutes`` without use.
- Devices/scripts: ``Authorization: Bearer <token>`` with the token from
  ``DATA_DIR/secrets/api_token`` (0600), for ``/api/`` routes only. A custom header
  cannot be sent cross-site without CORS, which is never allowed, so token requests
  need no CSRF token; every browser form does (see security.py).
Every route needs one of the two, except ``/healthz``, ``/login``, ``/setup`` and static.
"""

from __future__ import annotations

import functools
import hmac
import math
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _

from appliance.config import SETTINGS, save_settings
from appliance.errors import ConfigError, LoginThrottledError
from appliance.logins import sessions
from appliance.store import users
from appliance.store.db import audit
from appliance.store.files import atomic_write_bytes
from appliance.web.api_errors import error_response
from appliance.web.clinic import date_styles, unlisted_zone, zone_groups
from appliance.web.reasons import translate_reason

bp = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = {"health.healthz", "static", "auth.login", "auth.setup"}
SETTING_DEFAULTS = {s.name: s.default for s in SETTINGS}
API_USER = {"id": None, "username": "api-token", "role": "api", "language": "en"}


def _secret_file(data_dir: Path, name: str, make) -> str:
    """Read a secret from DATA_DIR/secrets, creating it (0600, atomically) if absent."""
    path = Path(data_dir) / "secrets" / name
    if path.exists():
        value = path.read_text(encoding="ascii").strip()
        if value:  # an empty file (power cut mid-create) must never mean "no secret"
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = make()
    atomic_write_bytes(path, (value + "\n").encode("ascii"))  # 0600 from the start
    return value


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / "secrets" / "api_token"


def ensure_api_token(data_dir: Path) -> str:
    return _secret_file(data_dir, "api_token", lambda: secrets.token_urlsafe(32))


def _store():
    return current_app.extensions["appliance_store"]


def _bearer_ok() -> bool:
    expected = current_app.extensions["appliance_api_token"]
    scheme, _sep, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    # Compare bytes: compare_digest refuses str with non-ASCII characters (a 500).
    return (
        scheme.lower() == "bearer"
        and bool(given)
        and hmac.compare_digest(given.encode(), expected.encode())
    )


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def init_app(app: Flask) -> None:
    config = app.config["APPLIANCE"]
    app.extensions["appliance_api_token"] = ensure_api_token(config.data_dir)
    app.secret_key = _secret_file(config.data_dir, "session_key", lambda: secrets.token_hex(32))
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        SESSION_COOKIE_NAME="appliance_session",
    )
    app.register_blueprint(bp)

    @app.before_request
    def load_user():
        g.user = None
        g.via_token = False
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if request.headers.get("Authorization"):
            if request.path.startswith("/api/") and _bearer_ok():
                g.user, g.via_token = API_USER, True
                return None
            return error_response(401, "unauthorized", "Log in or send the device token.")
        if "pin" in session:  # a cookie from before server-side sessions: PIN-hash material
            session.clear()
        token = session.get("sid")
        if token is not None:
            user = _session_user(token)
            if user is not None:
                g.user = user
                return None
            session.clear()  # ended, expired or revoked; keep an anonymous form's CSRF token
        if _wants_json():
            return error_response(401, "unauthorized", "Log in or send the device token.")
        if users.count_users(_store()) == 0:
            return redirect(url_for("auth.setup"))
        return redirect(url_for("auth.login"))


def _session_user(token: str) -> dict | None:
    """The active user of a live server-side session, refreshing its idle clock."""
    store = _store()
    idle = current_app.config["APPLIANCE"].session_idle_minutes * 60
    now = time.time()
    found = sessions.find(store.conn(), token, idle, now)
    if found is None:
        return None
    user = users.get_user(store, int(found["subject"]))
    if not user or not user["active"]:
        return None
    if sessions.needs_touch(found, now):
        with store.write() as conn:
            sessions.touch(conn, token, now)
    return user


def signed_in() -> bool:
    """For a public page that says more to staff: a live login or the device token."""
    if request.headers.get("Authorization"):
        return _bearer_ok()
    token = session.get("sid")
    return token is not None and _session_user(token) is not None


def requires(*roles: str):
    """Only these roles (admin may always) reach the view; others get 403."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            role = g.user["role"] if g.user else None
            if role != "admin" and role not in roles:
                if _wants_json():
                    return error_response(403, "forbidden", "Your role may not do this.")
                return render_template(
                    "error.html", code=403, message=_("Your role may not open this page.")
                ), 403
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _start_session(user: dict) -> None:
    """A new server-side session (a new id: never one the browser brought along)."""
    store = _store()
    idle = current_app.config["APPLIANCE"].session_idle_minutes * 60
    now = time.time()
    with store.write() as conn:
        sessions.purge(conn, idle, now)
        token = sessions.create(conn, str(user["id"]), now)
    session.clear()
    session.permanent = False  # ends when the kiosk browser closes, and on idle timeout
    session["sid"] = token


def _clinic_updates(form) -> dict[str, str]:
    """What first start sets besides the administrator: the clinic's name (left blank:
    kept), time zone, date style, and the language of the login page."""
    return {
        name: form[name].strip()
        for name in ("site_name", "timezone", "date_style", "language")
        if form.get(name, "").strip()
    }


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run: create the admin account (only while there are no users), and say
    where the clinic is: its name, time zone and date style (saved as Settings saves
    them, in config.toml)."""
    store = _store()
    config = current_app.config["APPLIANCE"]
    if users.count_users(store) > 0:
        return redirect(url_for("auth.login"))
    if request.method == "POST":
        updates = _clinic_updates(request.form)
        try:
            config.with_overrides(**updates)  # checked as the loader checks; nothing written
            pin = request.form.get("pin", "")
            if pin != request.form.get("pin2", ""):
                raise users.UserError(_("The two PINs are not the same."))
            user_id = users.create_user(
                store,
                request.form.get("username", ""),
                pin,
                "admin",
                request.form.get("language", "en"),
            )
        except users.UserError as exc:
            flash(translate_reason(str(exc)), "error")
        except ConfigError as exc:
            flash(_("Not saved: %(reason)s", reason=str(exc)), "error")
        else:
            user = users.get_user(store, user_id)
            overridden = save_settings(config, updates)
            if overridden:
                flash(
                    _(
                        "Set by the environment, not changed here: %(names)s",
                        names=", ".join(overridden),
                    ),
                    "error",
                )
            with store.write() as conn:
                audit(
                    conn,
                    user["username"],
                    "settings.changed",
                    "config.toml",
                    ", ".join(sorted(updates)),
                )
            _start_session(user)
            return redirect(url_for("worklist.index"))
    locale = str(get_locale())
    return render_template(
        "auth/setup.html",
        config=config,
        # The default name ("Clinic") is no clinic's: ask for it, with an example.
        site_name_given=""
        if config.site_name == SETTING_DEFAULTS["site_name"]
        else config.site_name,
        zones=zone_groups(locale),
        unlisted_zone=unlisted_zone(config.timezone, locale),
        date_styles=date_styles(),
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    store = _store()
    if users.count_users(store) == 0:
        return redirect(url_for("auth.setup"))
    if request.method == "POST":
        try:
            user, _why = users.authenticate(
                store,
                request.form.get("username", ""),
                request.form.get("pin", ""),
                request.remote_addr or "",
            )
        except LoginThrottledError as exc:
            minutes = max(1, math.ceil(exc.retry_after / 60))
            flash(
                ngettext(
                    "Too many wrong PINs: try again in %(num)s minute.",
                    "Too many wrong PINs: try again in %(num)s minutes.",
                    minutes,
                ),
                "error",
            )
            response = current_app.make_response((render_template("auth/login.html"), 429))
            response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
            return response
        if user is not None:
            _start_session(user)
            return redirect(url_for("worklist.index"))
        flash(_("Wrong user name or PIN."), "error")
        return render_template("auth/login.html"), 401
    return render_template("auth/login.html")


@bp.post("/logout")
def logout():
    """Ends the session on the box, not only in this browser (CSRF-checked: a POST)."""
    with _store().write() as conn:
        sessions.end(conn, session.get("sid"))
    session.clear()
    return redirect(url_for("auth.login"))


@bp.post("/me/language")
def my_language():
    language = request.form.get("language", "en")
    try:
        users.update_user(_store(), g.user["id"], g.user["username"], language=language)
    except users.UserError as exc:
        flash(translate_reason(str(exc)), "error")
    return redirect(local_path(request.form.get("next")) or url_for("worklist.index"))


def local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this box, else None: a redirect is never built from
    the Referer or from anything that could name another site (``//evil``, ``/\\evil``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return None
    return target
