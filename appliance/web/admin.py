"""Settings and users (admin only)."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _

from appliance.config import save_settings
from appliance.errors import ConfigError
from appliance.screening.models import CXR, CXR_ADULT, FUNDUS, active_bundle_dirs
from appliance.screening.population import SITE_CHOICES
from appliance.store import users
from appliance.store.db import audit
from appliance.store.users import LANGUAGES, ROLES
from appliance.web.auth import requires
from appliance.web.clinic import date_styles, unlisted_zone, zone_groups
from appliance.web.reasons import translate_reason

bp = Blueprint("admin", __name__)

THRESHOLD_SETTING = {
    CXR_ADULT: "cxr_adult_threshold",
    CXR: "cxr_threshold",
    FUNDUS: "fundus_threshold",
}
TEXT_SETTINGS = ("site_name", "timezone", "date_style", "dicom_aet")
RESTART_NEEDED = {"dicom_aet", "dicom_port", "dicom_allowed_aets"}


def _operating_points(config) -> list[dict]:
    """Per screening model: the manifest's table, the threshold in use and where it
    comes from (``calibration.status``'s answer, as the System page and hub have it)."""
    import json

    from appliance.monitoring import calibration

    store = current_app.extensions["appliance_store"]
    found = active_bundle_dirs(config)
    models = []
    for name, setting in THRESHOLD_SETTING.items():
        if name not in found:
            continue
        manifest = json.loads((found[name] / "manifest.json").read_text())
        suggested = manifest["operating_points"]["suggested"]["threshold"]
        models.append(
            {
                "name": name,
                "setting": setting,
                "suggested": suggested,
                "current": getattr(config, setting) or suggested,
                "source": calibration.status(store, config, name)["source"],
                "table": manifest["operating_points"]["table"],
            }
        )
    return models


def _same(given: str, current: float) -> bool:
    try:
        return abs(float(given) - float(current)) < 1e-4
    except ValueError:
        return False  # not a number: save_settings refuses it in words


@bp.route("/settings", methods=["GET", "POST"])
@requires("admin")
def settings():
    config = current_app.config["APPLIANCE"]
    if request.method == "POST":
        form = request.form
        updates = {name: form[name].strip() for name in TEXT_SETTINGS if name in form}
        if "language" in form:
            updates["language"] = form["language"]
        if "dicom_port" in form:
            updates["dicom_port"] = form["dicom_port"]
        if "dicom_allowed_aets" in form:
            updates["dicom_allowed_aets"] = form["dicom_allowed_aets"]
        if "chest_population" in form:
            updates["chest_population"] = form["chest_population"]
        updates["usb_auto_import"] = form.get("usb_auto_import") == "on"
        for model in _operating_points(config):
            # Only a threshold the admin changed: saving the page for another reason
            # must not turn the bundle's own into a setting of this site.
            if model["setting"] in form and not _same(form[model["setting"]], model["current"]):
                updates[model["setting"]] = form[model["setting"]]
        try:
            # In words a nurse reads; save_settings then checks every value the way the
            # service checks config.toml at start-up.
            if updates.get("chest_population", "ask") not in SITE_CHOICES:
                raise ConfigError(_("Choose adult, child or ask for chest X-rays without an age."))
            overridden = save_settings(config, updates)
        except ConfigError as exc:
            flash(_("Not saved: %(reason)s", reason=str(exc)), "error")
        else:
            store = current_app.extensions["appliance_store"]
            with store.write() as conn:
                audit(
                    conn,
                    g.user["username"],
                    "settings.changed",
                    "config.toml",
                    ", ".join(sorted(updates)),
                )
            flash(_("Settings saved."), "ok")
            if overridden:
                flash(
                    _(
                        "Set by the environment, not changed here: %(names)s",
                        names=", ".join(overridden),
                    ),
                    "error",
                )
            if RESTART_NEEDED & set(updates):
                flash(_("DICOM changes take effect when the box restarts."), "ok")
        return redirect(url_for("admin.settings"))
    return render_template(
        "admin/settings.html",
        config=config,
        models=_operating_points(config),
        languages=LANGUAGES,
        zones=zone_groups(str(get_locale())),
        unlisted_zone=unlisted_zone(config.timezone, str(get_locale())),
        date_styles=date_styles(),
    )


@bp.route("/users", methods=["GET", "POST"])
@requires("admin")
def user_list():
    store = current_app.extensions["appliance_store"]
    if request.method == "POST":
        form = request.form
        try:
            if form.get("action") == "create":
                users.create_user(
                    store,
                    form.get("username", ""),
                    form.get("pin", ""),
                    form.get("role", "operator"),
                    form.get("language", "en"),
                    actor=g.user["username"],
                )
                flash(_("User added."), "ok")
            elif form.get("user_id", "").isdigit():
                users.update_user(
                    store,
                    int(form["user_id"]),
                    g.user["username"],
                    role=form.get("role") or None,
                    language=form.get("language") or None,
                    active=form.get("active") == "on" if "active_shown" in form else None,
                    pin=form.get("pin") or None,
                )
                flash(_("User changed."), "ok")
        except users.UserError as exc:
            flash(translate_reason(str(exc)), "error")
        return redirect(url_for("admin.user_list"))
    return render_template(
        "admin/users.html", users=users.list_users(store), roles=ROLES, languages=LANGUAGES
    )
