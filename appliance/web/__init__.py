"""The web app: ``create_app()`` factory, one blueprint per area (flaskr style)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from appliance.config import Config, load_config
from appliance.store.db import Store


def create_app(config: Config | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app for ``config``'s data directory (nothing happens at import time)."""
    if config is None:
        config = load_config("data")
    app = Flask(__name__)
    app.config.update(
        APPLIANCE=config,
        # Flask refuses a larger body with 413 before any of it is read.
        MAX_CONTENT_LENGTH=config.upload_max_mb * 1024 * 1024 + 64 * 1024,
    )
    if test_config:
        app.config.update(test_config)

    store = Store.open(config.data_dir)
    app.extensions["appliance_store"] = store
    app.extensions.setdefault("appliance_status", {})

    from appliance.web import api_errors, auth, health, upload

    api_errors.init_app(app)
    auth.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(upload.bp)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'")
        return response

    return app
