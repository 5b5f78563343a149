"""The web app: ``create_app()`` factory, one blueprint per area (flaskr style).

Server-rendered pages for a 7-10" touchscreen; small vanilla JS only where touch needs
it; every asset (CSS, JS, icons) ships in the package, nothing from another origin.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g
from flask_babel import Babel
from werkzeug.routing import IntegerConverter

from appliance.config import Config, load_config
from appliance.store.db import Store
from appliance.store.users import LANGUAGES

# Catalogs are per language; formats follow a region. Portuguese-speaking clinics in
# Africa write dates and numbers the European way (28/11/2026, 1 234,5), not Brazil's.
LOCALES = {"en": "en", "fr": "fr", "pt": "pt_PT"}


def user_language() -> str:
    """en, fr or pt: the signed-in user's, else the site's (the login page)."""
    from flask import current_app

    user = getattr(g, "user", None)
    if user and user.get("language") in LANGUAGES:
        return user["language"]
    # Not the browser's: a kiosk browser's own language says nothing about the clinic.
    return current_app.config["APPLIANCE"].language


def select_locale() -> str:
    return LOCALES.get(user_language(), "en")


def select_timezone() -> str:
    from flask import current_app

    return current_app.config["APPLIANCE"].timezone


class BoundedInt(IntegerConverter):
    """``<int:...>`` in every route, at most a SQLite INTEGER."""

    def __init__(self, map, fixed_digits=0, min=None, max=2**63 - 1, signed=False) -> None:
        super().__init__(map, fixed_digits, min, max, signed)


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

    # An id past 64 bits is no row of ours: a 404, not an OverflowError (a 500) in SQLite.
    app.url_map.converters["int"] = BoundedInt

    store = Store.open(config.data_dir)
    app.extensions["appliance_store"] = store
    app.extensions.setdefault("appliance_status", {})
    Babel(app, locale_selector=select_locale, timezone_selector=select_timezone)

    from appliance.monitoring.monitor import Monitor
    from appliance.web import (
        admin,
        api_errors,
        auth,
        calibration,
        health,
        imports,
        security,
        study,
        system,
        upload,
        views,
        worklist,
    )

    api_errors.init_app(app)
    auth.init_app(app)  # before security: CSRF checks need to know who is asking
    security.init_app(app)
    views.init_app(app)
    blueprints = (health.bp, upload.bp, worklist.bp, study.bp, imports.bp, admin.bp, system.bp)
    for blueprint in (*blueprints, calibration.bp):
        app.register_blueprint(blueprint)
    # Drift and health, cached briefly: `appliance serve` puts in the one its thread keeps.
    app.extensions.setdefault("appliance_monitor", Monitor(store, config))
    return app
