"""The System page: what runs, what is loaded, how full the disk and the queue are, and
a way to queue the failed screenings again; for admins, activating an installed model
version or rolling back to the one before (appliance/lifecycle/activation.py: the
files verified again, audited with the admin's name, a running box switches between
jobs), and enrolling the box with a hub (appliance/sync/enrolment.py, as
`appliance sync enrol`: a running box starts sending by itself).

What the package says in technical English (a missing backend's install command, a
hub's refusal) is put in plain words here, at the edge; the details stay in the log
and in `appliance doctor` / `appliance sync status`."""

from __future__ import annotations

import json
import logging
import shutil

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from appliance.errors import (
    ApplianceError,
    ConfigError,
    HubAuthError,
    HubCertificateError,
    HubRejectedError,
    HubUnreachableError,
    NotEnrolledError,
    SyncError,
)
from appliance.inference.backends import INSTALL_PYCUDA, INSTALL_TENSORRT, backend_report
from appliance.inference.engines.status import read_status
from appliance.lifecycle.activation import activate, listing, rollback
from appliance.pacs.status import pacs_status
from appliance.screening.models import REQUIRED, active_bundle_dirs
from appliance.store import jobs
from appliance.store.db import audit
from appliance.sync.enrolment import EnrolmentCodeError, enrol
from appliance.sync.worker import sync_overview
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

# The sync worker's last failure (sync/worker.py ``problem``), in words.
SYNC_PROBLEMS = {
    "unreachable": _l(
        "The hub could not be reached (no network, or the hub is off): the box tries again "
        "by itself."
    ),
    "busy": _l("The hub was busy: the box sends again later by itself."),
    "certificate": _l(
        "The hub's security certificate could not be checked: ask the hub's administrator."
    ),
    "unknown_device": _l("The hub does not know this box any more: it must be enrolled again."),
    "revoked": _l(
        "The hub's administrator switched this box off: results stay on the box until it is "
        "enrolled again."
    ),
    "not_enrolled": _l("This box is not enrolled with the hub yet."),
    "rejected": _l("The hub refused what the box sent: the box's log says why."),
    "failed": _l("Sending failed: the box's log says why."),
}
# What each kind of outbox entry is, said to the admin reading the hub's refusals.
REFUSED_KINDS = {
    "result": _l("Result"),
    "review": _l("Review"),
    "outcome": _l("Confirmatory result"),
    "monitor": _l("Monitoring summary"),
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
        backends=[{**b, "plain": backend_in_words(b)} for b in backend_report()],
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
        sync=sync_overview(store, config),
        SYNC_PROBLEMS=SYNC_PROBLEMS,
        REFUSED_KINDS=REFUSED_KINDS,
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


@bp.post("/system/sync/enrol")
@requires()  # admins only
def enrol_box():
    """Enrol with a hub as `appliance sync enrol` does (the same function, the same
    checks); its refusals in plain words. The running sync worker notices by itself."""
    store = current_app.extensions["appliance_store"]
    config = current_app.config["APPLIANCE"]
    hub_url = request.form.get("hub_url", "").strip()[:300]
    code = request.form.get("code", "").strip()[:60]
    if not hub_url or not code:
        why = _("give the hub's address and the enrolment code.")
        flash(_("Enrolment not done: %(why)s", why=why), "error")
        return redirect(url_for("system.index"))  # the message shows at the top
    try:
        identity = enrol(config, hub_url, code)
    except (SyncError, ConfigError) as exc:
        log.warning("enrolment with %s refused: %s", hub_url, exc)
        flash(_("Enrolment not done: %(why)s", why=enrolment_refusal(exc)), "error")
        return redirect(url_for("system.index"))  # the message shows at the top
    with store.write() as conn:
        audit(
            conn,
            g.user["username"],
            "sync.enrolled",
            identity.hub_url,
            json.dumps({"device_id": identity.device_id, "site": identity.site}),
        )
    flash(
        _(
            "Enrolled for the site %(site)s: results are sent by themselves.",
            site=identity.site,
        ),
        "ok",
    )
    return redirect(url_for("system.index"))  # the message shows at the top


def enrolment_refusal(exc: Exception) -> str:
    """Why the hub (or the form) refused an enrolment, in words for whoever is at the box."""
    if isinstance(exc, HubAuthError):  # the hub's answer to a code it will not take
        said = str(exc)
        if "already used" in said:
            return _(
                "this enrolment code was already used; ask the hub's administrator for a new one."
            )
        if "expired" in said:
            return _("this enrolment code has expired; ask the hub's administrator for a new one.")
        return _("the hub does not know this enrolment code; check it for typing mistakes.")
    if isinstance(exc, HubCertificateError):
        return _(
            "the hub's security certificate could not be checked; ask the hub's administrator."
        )
    if isinstance(exc, HubUnreachableError):
        return _("the hub did not answer at this address; check the address and the network.")
    if isinstance(exc, (NotEnrolledError, ConfigError)):
        return _("the hub's address must start with https:// (or http://).")
    if isinstance(exc, EnrolmentCodeError):
        return _("an enrolment code looks like ABCD-EFGH-JKLM; check it for typing mistakes.")
    if isinstance(exc, HubRejectedError):  # e.g. a 404: something answers, not a hub
        return _("what answers at this address is not a hub; check the address.")
    return _("the box's log says why.")


def backend_in_words(backend: dict) -> str | None:
    """Why a backend cannot run here, in one plain sentence (None when it can); the
    install commands are for the technician (`appliance doctor`, the log)."""
    if backend["usable"]:
        return None
    missing = backend["missing"]
    if backend["name"] != "tensorrt":
        return _(
            "ONNX Runtime does not work on this box, so it cannot screen: the technician's "
            "check (appliance doctor) says why."
        )
    on_the_cpu = _("screening runs on the CPU (ONNX Runtime).")
    if INSTALL_TENSORRT in missing:
        return _("TensorRT is not installed on this box: %(then)s", then=on_the_cpu)
    if any(why.startswith("no NVIDIA GPU") for why in missing):
        return _(
            "This box has no NVIDIA graphics processor for TensorRT: %(then)s", then=on_the_cpu
        )
    if INSTALL_PYCUDA in missing:
        return _("A part TensorRT needs is not installed on this box: %(then)s", then=on_the_cpu)
    if any("compute capability" in why for why in missing):
        return _("This box's graphics processor is too old for TensorRT: %(then)s", then=on_the_cpu)
    return _(
        "TensorRT does not work on this box (the technician's check, appliance doctor, says "
        "why): %(then)s",
        then=on_the_cpu,
    )


def _monitoring() -> dict | None:
    """The drift and health report; the page still shows the rest if it fails."""
    try:
        return current_app.extensions["appliance_monitor"].current()
    except Exception:
        log.exception("monitoring report failed")
        return None
