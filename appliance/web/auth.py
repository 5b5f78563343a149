"""Who may call the API before the login pages exist (issue 5): a device token.

The token lives in ``DATA_DIR/secrets/api_token`` (mode 0600), created on first start;
clients send ``Authorization: Bearer <token>``. Every route except ``/healthz`` requires
it. A custom header cannot be sent cross-site without CORS, which we never allow, so
token-authenticated requests need no CSRF token.
"""

from __future__ import annotations

import hmac
import os
import secrets
import tempfile
from pathlib import Path

from flask import Flask, current_app, request

from appliance.web.api_errors import error_response

PUBLIC_ENDPOINTS = {"health.healthz", "static"}


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / "secrets" / "api_token"


def ensure_api_token(data_dir: Path) -> str:
    path = token_path(data_dir)
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        if token:
            return token
        # An empty file (power cut between creating and writing it) must never mean
        # "no token": make a new one.
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    token = secrets.token_urlsafe(32)
    # mkstemp creates the file 0600; write, fsync, rename: the token file is whole or absent.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".api_token-")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return token


def init_app(app: Flask) -> None:
    app.extensions["appliance_api_token"] = ensure_api_token(app.config["APPLIANCE"].data_dir)

    @app.before_request
    def require_token():
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        expected = current_app.extensions["appliance_api_token"]
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given = given.strip()
        # Compare bytes: compare_digest refuses str with non-ASCII characters (a 500).
        if (
            scheme.lower() == "bearer"
            and given
            and hmac.compare_digest(given.encode(), expected.encode())
        ):
            return None
        return error_response(401, "unauthorized", "Log in or send the device token.")
