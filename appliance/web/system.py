"""The System page: what runs, what is loaded, how full the disk and the queue are, and
a way to queue the failed screenings again; for admins, activating an installed model
version or rolling back to the one before (appliance/lifecycle/activation.py: the
files verified again, audited with the admin's name, a running box switches between
jobs)."""

from __future__ import annotations

import logging
import shutil

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from appliance.errors import ApplianceError
from appliance.inference.backends import backend_report
from appliance.inference.engines.status import read_status
from appliance.lifecycle.activation import activate, listing, rollback
from appliance.pacs.status import pacs_status
from appliance.screening.models import REQUIRED, active_bundle_dirs
from appliance.store import jobs
from appliance.sync.worker import sync_status
from appliance.web.auth import requires

bp = Blueprint("system", __name__)
log = logging.getLogger(__name__)

# The names ``appliance serve`` gives its parts (service.py), as the page shows them.
SERVICES = {
    "models": _l("Models"),
    "web": _l("Web page"),
    "dicom": _l("DICOM receiver"),
    "usb": _l("USB sticks"),
    "hot_folder": _l("Watched folder"),
    "workers": _l("Screening workers"),
    "sync": _l("Sync to the hub"),
}

# A model version's state (store/model_versions.py), as the page shows it.
VERSION_STATE = {
    "active": _l("active: screens every image"),
    "shadow": _l("shadow: screens beside the active one, results never shown"),
    "installed": _l("installed, not in use"),
    "refused": _l("refused"),
}


@bp.get("/system")
def index():
    store = current_app.extensions["appliance_store"]
    config = current_app.config["APPLIANCE"]
    loaded = current_app.extensions.get("appliance_models")
    if loaded is not None:
        models = loaded.status()
    else:  # the page served without the workers (e.g. tests): what is installed
        found = active_bundle_dirs(config)
        models = {
            name: {
                "loaded": False,
                "version": found[name].name if name in found else None,
                "error": _("not loaded in this process") if name in found else _("missing"),
            }
            for name in REQUIRED
        }
    conn = store.conn()
    failed = [
        dict(r)
        for r in conn.execute(
            "SELECT id, image_id, last_error, updated_at FROM jobs WHERE state='failed'"
            " ORDER BY id DESC LIMIT 10"
        )
    ]
    usage = shutil.disk_usage(store.data_dir)
    return render_template(
        "system/index.html",
        backends=backend_report(),
        models=models,
        queue=jobs.counts(store),
        waiting_for_disk=jobs.waiting_for_disk(store),
        failed_screenings=jobs.failed_screenings(store),
        failed=failed,
        disk={
            "free_mb": usage.free // 2**20,
            "total_mb": usage.total // 2**20,
            "reserve_mb": config.min_free_mb,
        },
        components=current_app.extensions.get("appliance_status", {}),
        engines=read_status(config.data_dir),
        sync=sync_status(store, config),
        pacs=pacs_status(store, config),
        services=SERVICES,
        monitoring=_monitoring(),
        versions=listing(store, config),
        VERSION_STATE=VERSION_STATE,
    )


@bp.post("/system/retry-failed")
@requires("operator", "clinician")
def retry_failed():
    """Queue every failed screening again with fresh attempts (audited, per image). Any
    role: it changes no result, and whoever is at the box when it goes wrong can."""
    store = current_app.extensions["appliance_store"]
    count = jobs.retry_failed(store, g.user["username"])
    if count:
        flash(
            ngettext(
                "%(num)s failed screening queued again.",
                "%(num)s failed screenings queued again.",
                count,
            ),
            "ok",
        )
    else:
        flash(_("No failed screenings to retry."), "ok")
    return redirect(url_for("system.index"))


@bp.post("/system/models/activate")
@requires()  # admins only
def activate_model():
    store = current_app.extensions["appliance_store"]
    config = current_app.config["APPLIANCE"]
    name, version = request.form.get("name", ""), request.form.get("version", "")
    try:
        activate(store, config, name, version, actor=g.user["username"])
    except ApplianceError as exc:
        flash(_("Not done: %(why)s", why=str(exc)), "error")
    else:
        flash(_("%(name)s %(version)s is now active.", name=name, version=version), "ok")
    return redirect(url_for("system.index"))


@bp.post("/system/models/rollback")
@requires()  # admins only
def rollback_model():
    store = current_app.extensions["appliance_store"]
    config = current_app.config["APPLIANCE"]
    name = request.form.get("name", "")
    try:
        done = rollback(store, config, name, actor=g.user["username"])
    except ApplianceError as exc:
        flash(_("Not done: %(why)s", why=str(exc)), "error")
    else:
        flash(_("%(name)s is back to %(version)s.", name=name, version=done["version"]), "ok")
    return redirect(url_for("system.index"))


def _monitoring() -> dict | None:
    """The drift and health report; the page still shows the rest if it fails."""
    try:
        return current_app.extensions["appliance_monitor"].current()
    except Exception:
        log.exception("monitoring report failed")
        return None
