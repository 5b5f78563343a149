"""The Import page: USB volumes and what they hold, import with progress, upload, quarantine."""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _

from appliance.errors import ApplianceError
from appliance.ingest.importer import Importer
from appliance.ingest.usb import Listing, UsbWatcher, import_listing, list_importable
from appliance.lifecycle.bundle_files import find_bundle_files
from appliance.lifecycle.install import install
from appliance.store import volumes as volume_rows
from appliance.store.images import list_quarantine
from appliance.web.auth import requires
from appliance.web.reasons import translate_reason
from appliance.web.upload import base_name, import_upload
from appliance.web.views import IMPORT_STATUS

bp = Blueprint("imports", __name__, url_prefix="/import")
log = logging.getLogger(__name__)


def _importer() -> Importer:
    return Importer(current_app.extensions["appliance_store"], current_app.config["APPLIANCE"])


def _tasks() -> dict:
    return current_app.extensions.setdefault("appliance_import_tasks", {})


def _volume(volume_id: int) -> dict:
    rows = [
        v
        for v in volume_rows.list_volumes(current_app.extensions["appliance_store"])
        if v["id"] == volume_id
    ]
    if not rows:
        abort(404)
    return rows[0]


@bp.get("/")
@requires("operator", "clinician")
def index():
    return _index()


def _index(uploaded: list[dict] | None = None):
    store = current_app.extensions["appliance_store"]
    return render_template(
        "imports/index.html",
        can_eject=eject_available(),
        volumes=volume_rows.list_volumes(store),
        quarantine=list_quarantine(store, limit=50),
        tasks=sorted(_tasks().values(), key=lambda t: t["started"])[-5:],
        uploaded=uploaded,
    )


@bp.post("/scan")
@requires("operator", "clinician")
def scan():
    """Look for sticks now (the service also looks every few seconds by itself)."""
    try:
        UsbWatcher(_importer(), threading.Event()).poll_once()
    except ApplianceError as exc:
        flash(translate_reason(str(exc)), "error")
    return redirect(url_for("imports.index"))


@bp.get("/volume/<int:volume_id>")
@requires("operator", "clinician")
def volume(volume_id: int):
    row = _volume(volume_id)
    root = Path(row["path"])
    listing = list_importable(root) if root.is_dir() else Listing()
    files = [p.relative_to(root).as_posix() for p in listing.importable]
    # Model files are the admin's: only an admin's visit looks for them.
    scan = _model_scan(root, start=True) if g.user["role"] == "admin" else None
    # Read once: the scan may finish while this page is made (its files are set first).
    scanned = bool(scan and scan["finished"])
    bundles = scan["files"] if scanned else {}
    scan_state = None
    if scan and not scanned:
        scan_state = "scanning"
    elif scan and scan["error"]:
        scan_state = "failed"
    skipped = [
        (p.relative_to(root).as_posix(), reason)
        for p, reason in listing.skipped
        if p.relative_to(root).as_posix() not in bundles
    ]
    return render_template(
        "imports/volume.html",
        volume=row,
        files=files,
        skipped=skipped,
        bundles=sorted(bundles),
        scan_state=scan_state,
        present=root.is_dir(),
    )


# The stick's model files are looked for in a background task, never in the request:
# a stick is anyone's, and the files on it are read only as far as signed_parts allows
# (a few MB each, appliance/wire/model_signature.py). A finished scan is used for
# SCAN_FRESH_SECONDS; then the next admin visit starts a new one.
SCAN_FRESH_SECONDS = 30
_scan_lock = threading.Lock()


def _stick_key(root: Path) -> tuple | None:
    """Which stick is at ``root`` (another stick mounted there is another key)."""
    try:
        st = root.stat()
    except OSError:
        return None
    return (str(root), st.st_dev, st.st_ino)


def _model_scan(root: Path, start: bool) -> dict | None:
    """The model-file scan of the stick at ``root``: the running or fresh one, or (with
    ``start``) a new one started in a thread. None: no stick there, or none started."""
    key = _stick_key(root)
    if key is None:
        return None
    scans = current_app.extensions.setdefault("appliance_model_scans", {})
    with _scan_lock:
        scan = scans.get(key)
        fresh = scan is not None and (
            not scan["finished"] or time.monotonic() - scan["finished_at"] < SCAN_FRESH_SECONDS
        )
        if fresh or not start:
            return scan
        scan = scans[key] = {"finished": False, "files": {}, "error": None, "finished_at": 0.0}

    def run() -> None:
        try:
            found = find_bundle_files(root)
            scan["files"] = {p.relative_to(root).as_posix(): p for p in found}
        except Exception as exc:  # noqa: BLE001 - a stick's odd file never kills the scan
            log.warning("model-file scan of %s failed: %s", root, exc)
            scan["error"] = str(exc)
        finally:
            scan["finished_at"] = time.monotonic()
            scan["finished"] = True

    threading.Thread(target=run, name=f"model-scan-{root.name}", daemon=True).start()
    return scan


@bp.get("/volume/<int:volume_id>/models")
@requires()  # admins only, like the model files themselves
def model_scan(volume_id: int):
    """Where the stick's model-file scan is (the volume page's script asks)."""
    scan = _model_scan(Path(_volume(volume_id)["path"]), start=False)
    return jsonify(
        {
            "finished": bool(scan is None or scan["finished"]),
            "files": sorted(scan["files"]) if scan and scan["finished"] else [],
        }
    )


@bp.post("/volume/<int:volume_id>/model")
@requires()  # admins only: a new model version is the admin's decision
def install_model(volume_id: int):
    """Install a signed model file from the stick into shadow (never automatically)."""
    row = _volume(volume_id)
    chosen = request.form.get("file", "")
    # Only a file the last scan offered: a form cannot name a path off the stick.
    scan = _model_scan(Path(row["path"]), start=False)
    path = scan["files"].get(chosen) if scan and scan["finished"] else None
    if path is None:
        flash(_("That model file is no longer on the stick."), "error")
        return redirect(url_for("imports.volume", volume_id=volume_id))
    try:
        done = install(
            current_app.extensions["appliance_store"],
            current_app.config["APPLIANCE"],
            path,
            actor=g.user["username"],
        )
    except ApplianceError as exc:
        flash(_("Not done: %(why)s", why=str(exc)), "error")  # names the file and why
    else:
        flash(
            _(
                "%(name)s %(version)s installed in shadow: compare it with the active"
                " version on the System page before activating it.",
                name=done["name"],
                version=done["version"],
            ),
            "ok",
        )
    return redirect(url_for("imports.volume", volume_id=volume_id))


@bp.post("/volume/<int:volume_id>")
@requires("operator", "clinician")
def start_import(volume_id: int):
    row = _volume(volume_id)
    root = Path(row["path"])
    if not root.is_dir():
        flash(_("The stick was removed."), "error")
        return redirect(url_for("imports.index"))
    listing = list_importable(root)
    chosen = set(request.form.getlist("file"))
    if request.form.get("all") != "1":
        # Only files the listing offered: a form cannot name a path off the stick.
        listing = Listing(
            [p for p in listing.importable if p.relative_to(root).as_posix() in chosen], []
        )
    task_id = secrets.token_hex(8)
    task = {
        "id": task_id,
        "label": row["label"],
        "done": 0,
        "total": len(listing.importable) + len(listing.skipped),
        "counts": {},
        "finished": False,
        "error": None,
        "started": threading.get_ident(),
    }
    _tasks()[task_id] = task
    importer, store, path = _importer(), current_app.extensions["appliance_store"], row["path"]

    def run() -> None:
        def progress(done: int, total: int, outcome) -> None:
            task["done"] = done
            task["counts"][outcome.status] = task["counts"].get(outcome.status, 0) + 1

        try:
            counts, _outcomes = import_listing(
                importer, listing, source="usb", source_detail=row["label"], progress=progress
            )
            volume_rows.record_import(store, path, counts)
        except ApplianceError as exc:
            task["error"] = str(exc)
        finally:
            task["finished"] = True

    threading.Thread(target=run, name=f"import-{task_id}", daemon=True).start()
    return redirect(url_for("imports.progress", task_id=task_id))


EJECT_TOOL = "appliance-eject"  # installed by jetson/install.sh (udisks + polkit)


def eject_available() -> bool:
    return shutil.which(EJECT_TOOL) is not None


@bp.post("/volume/<int:volume_id>/eject")
@requires("operator", "clinician")
def eject(volume_id: int):
    """Unmount and power off the stick so it can be pulled out without damage."""
    row = _volume(volume_id)
    busy = [t for t in _tasks().values() if t["label"] == row["label"] and not t["finished"]]
    if busy:
        flash(_("Wait until the import from this stick has finished."), "error")
    elif not eject_available():
        flash(
            _("Safe removal is not installed on this box: wait 10 seconds, then pull the stick."),
            "error",
        )
    else:
        done = subprocess.run([EJECT_TOOL, row["path"]], capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            flash(_("%(label)s can be removed now.", label=row["label"]), "ok")
        else:
            flash(
                _(
                    "%(label)s could not be removed safely: %(why)s",
                    label=row["label"],
                    why=done.stderr.strip() or done.returncode,
                ),
                "error",
            )
    return redirect(url_for("imports.index"))


@bp.get("/task/<task_id>")
@requires("operator", "clinician")
def progress(task_id: str):
    task = _tasks().get(task_id) or abort(404)
    if request.accept_mimetypes.best == "application/json":
        return jsonify({k: v for k, v in task.items() if k != "started"})
    return render_template("imports/progress.html", task=task)


@bp.post("/upload")
@requires("operator", "clinician")
def upload():
    """Files from the page: each one's outcome (stored, already on the box, refused and
    why) shown where the upload was made. The page's script asks for JSON and lists
    them under the form; without script the Import page is shown with them (no
    redirect: a redirect would lose them)."""
    importer = _importer()
    batch = f"upload:{secrets.token_hex(8)}"  # one upload: one batch (store/visits.py)
    times = request.form.getlist("modified")  # the files' own times (ms), from the script
    outcomes: list[dict] = []
    problem = None
    files = [f for f in request.files.getlist("file") if f.filename]
    for index, storage in enumerate(files):
        name = base_name(storage.filename)
        try:
            outcome = import_upload(
                importer,
                storage.stream,
                name,
                visit_key=batch,
                file_time=_file_time(times, index),
            )
        except ApplianceError as exc:
            problem = translate_reason(str(exc))
            outcomes += [_shown(base_name(f.filename), "failed", problem) for f in files[index:]]
            break
        outcomes.append(_shown(outcome.name, outcome.status, outcome.reason, outcome.image_id))
    if not files:
        problem = _("Choose at least one file.")
    if request.accept_mimetypes.best == "application/json":
        return jsonify({"results": outcomes, "error": problem}), 200 if files else 400
    if problem and not outcomes:
        flash(problem, "error")
    return _index(uploaded=outcomes)


def _file_time(times: list[str], index: int) -> float | None:
    try:
        return float(times[index]) / 1000
    except (IndexError, ValueError):
        return None


def _shown(name: str, status: str, reason: str | None = None, image_id: int | None = None):
    """One file's outcome as the page lists it, in the reader's language."""
    label = str(IMPORT_STATUS.get(status, _("not imported")))
    return {
        "name": name,
        "status": status,
        "label": label,
        "reason": translate_reason(reason) if reason else "",
        "url": url_for("study.view", image_id=image_id) if image_id else None,
    }
