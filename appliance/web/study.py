"""One image: viewer with heatmap, the score, the fitness messages, review, referral slip."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import segno
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from markupsafe import Markup

from appliance.monitoring.outcomes import OutcomeError, add_outcome, outcomes_for
from appliance.pacs.worklist import candidates
from appliance.store import jobs, mwl
from appliance.store import worklist as queries
from appliance.store.patients import PatientError, set_patient
from appliance.store.population import PopulationError, choose_population
from appliance.store.reviews import ReviewError, add_review, reviews_for
from appliance.web.auth import requires
from appliance.web.reasons import translate_reason
from appliance.worker import full_detail_path, request_full_detail

bp = Blueprint("study", __name__, url_prefix="/study")


def _store():
    return current_app.extensions["appliance_store"]


def _load(image_id: int) -> dict:
    item = queries.study(_store(), image_id)
    if item is None:
        abort(404)
    return item


@bp.get("/<int:image_id>")
def view(image_id: int):
    item = _load(image_id)
    return render_template(
        "study/view.html",
        item=item,
        reviews=reviews_for(_store(), image_id),
        outcomes=outcomes_for(_store(), image_id),
        today=date.today().isoformat(),
        # the worklist's patients for an image without one: one tap instead of typing
        scheduled=[]
        if item["received_patient_id"]
        else candidates(_store(), current_app.config["APPLIANCE"], item),
    )


@bp.get("/<int:image_id>/<any(preview, heatmap):kind>")
def media(image_id: int, kind: str):
    item = _load(image_id)
    relative = (
        item["preview_path"] if kind == "preview" else ((item["result"] or {}).get("heatmap_path"))
    )
    if not relative:
        abort(404)
    path = _store().data_dir / relative
    if not path.is_file():
        abort(404)
    mimetype = "image/jpeg" if Path(relative).suffix == ".jpg" else "image/png"
    # Previews and overlays are small (~100 KB): read whole, no file handle left open.
    return Response(path.read_bytes(), mimetype=mimetype)


@bp.get("/<int:image_id>/full")
def full_detail(image_id: int):
    """The original at full resolution, on request (the preview is <= 1024 px). A worker
    decodes it once, one at a time, and keeps it beside the preview; until then this
    answers 202 at once and the page asks again."""
    item = _load(image_id)
    store = _store()
    cached = store.data_dir / full_detail_path(image_id)
    if cached.is_file():
        return Response(cached.read_bytes(), mimetype="image/jpeg")
    # Only an image that decoded for screening: never a refused or crafted one.
    if item["state"] != "decoded" or request_full_detail(store, image_id) == "failed":
        unavailable = _("Full detail is not available for this image.")
        return Response(unavailable, 404, mimetype="text/plain")
    return Response(
        _("Preparing full detail…"), 202, headers={"Retry-After": "1"}, mimetype="text/plain"
    )


@bp.post("/<int:image_id>/review")
@requires("clinician")
def review(image_id: int):
    _load(image_id)
    try:
        add_review(
            _store(),
            image_id=image_id,
            user=g.user,
            verdict=request.form.get("verdict", ""),
            reasons=request.form.getlist("reason"),
            note=request.form.get("note", ""),
        )
    except ReviewError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Review saved."), "ok")
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/outcome")
@requires("clinician")
def outcome(image_id: int):
    """A confirmatory result (lab, specialist, follow-up) for this image: append-only,
    audited, sent to the hub, and counted by the site's calibration."""
    _load(image_id)
    try:
        add_outcome(
            _store(),
            image_id=image_id,
            user=g.user,
            test=request.form.get("test", ""),
            result=request.form.get("result", ""),
            tested_on=request.form.get("tested_on", ""),
        )
    except OutcomeError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Confirmatory result saved."), "ok")
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/patient")
@requires("operator", "clinician")
def patient(image_id: int):
    """Type in the patient of an image that came without one (a camera card's photo)."""
    _load(image_id)
    fields = (request.form.get("patient_id", ""), request.form.get("patient_name", ""), None)
    if request.form.get("mwl_entry", "").isdigit():  # a worklist entry tapped
        chosen = mwl.entry(_store().conn(), int(request.form["mwl_entry"]))
        if chosen is None:
            abort(404)
        fields = (chosen["patient_id"], chosen["patient_name"] or "", chosen["accession_number"])
    try:
        set_patient(_store(), image_id, fields[0], fields[1], g.user, accession_number=fields[2])
    except PatientError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Patient saved."), "ok")
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/population")
@requires("operator", "clinician")
def population(image_id: int):
    """Adult or child, for a chest X-ray without an age where the site asks: kept with
    the image, audited, and the image is screened again with that population's model."""
    _load(image_id)
    try:
        choose_population(_store(), image_id, request.form.get("population", ""), g.user)
    except PopulationError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Choice saved: the X-ray is being screened."), "ok")
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/retry")
@requires("operator", "clinician")
def retry(image_id: int):
    """Screen again an image whose screening failed (audited)."""
    _load(image_id)
    if jobs.retry_failed(_store(), g.user["username"], image_id=image_id):
        flash(_("Queued again: the image is being screened."), "ok")
    else:
        flash(_("This image's screening has not failed: nothing to retry."), "error")
    return redirect(url_for("study.view", image_id=image_id))


def study_reference(item: dict) -> str:
    """What the slip's QR code holds: enough to find the study again, nothing more."""
    return f"{item['study_instance_uid']}|{item['sop_instance_uid'] or item['sha256'][:16]}"


@bp.get("/<int:image_id>/slip")
def slip(image_id: int):
    item = _load(image_id)
    buffer = io.BytesIO()
    segno.make(study_reference(item), error="m").save(
        buffer, kind="svg", scale=4, border=2, xmldecl=False, svgns=True
    )
    return render_template(
        "study/slip.html",
        item=item,
        qr=Markup(buffer.getvalue().decode()),
        reviews=reviews_for(_store(), image_id),
        paper=request.args.get("paper", "a5"),
    )
