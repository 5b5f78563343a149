"""CSRF protection for every state-changing browser request, and security headers.

The CSRF token lives in the session and must come back in the form field ``csrf_token``
or the ``X-CSRF-Token`` header on POST/PUT/PATCH/DELETE. Requests authenticated with the
device token (no cookie involved) are exempt. No page loads anything from another
origin: every asset is served by the box itself.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, g, render_template, request, session
from flask_babel import gettext as _

from appliance.web.api_errors import error_response

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def check_csrf():
        if request.method not in UNSAFE or getattr(g, "via_token", False):
            return None
        expected = session.get("csrf")
        given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
        if expected and given and hmac.compare_digest(given.encode(), expected.encode()):
            return None
        if request.path.startswith("/api/"):
            return error_response(400, "csrf", "The form expired. Reload the page and try again.")
        message = _("The form expired. Reload the page and try again.")
        return render_template("error.html", code=400, message=message), 400

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=()"
        )
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")  # patient data
        return response
