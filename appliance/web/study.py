"""One image: viewer with heatmap, the score, the fitness messages, review, referral slip."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import cv2
import numpy as np
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
from flask_babel import ngettext
from markupsafe import Markup

from appliance.monitoring.outcomes import (
    OutcomeError,
    add_outcome,
    add_treatment,
    outcomes_for,
    treatments_for,
)
from appliance.pacs.worklist import candidates
from appliance.store import jobs, mwl
from appliance.store import worklist as queries
from appliance.store.consent import ConsentError, consent_of, record_consent
from appliance.store.eyes import EyeError, eyes_of, set_eye
from appliance.store.patients import PatientError, patient_of, set_patients
from appliance.store.population import PopulationError, choose_population
from appliance.store.reviews import ReviewError, add_review, reviews_for
from appliance.store.routes import RouteError, choose_route, screen_ungradable
from appliance.store.visits import previous_photo, visit_of
from appliance.web.auth import requires
from appliance.web.reasons import translate_reason
from appliance.web.slip_facts import patient_facts, slip_cautions, zone_words
from appliance.worker import (
    THUMBNAIL_MAX_PX,
    full_detail_path,
    request_full_detail,
    thumbnail_path,
)

bp = Blueprint("study", __name__, url_prefix="/study")


def _store():
    return current_app.extensions["appliance_store"]


def _load(image_id: int) -> dict:
    item = queries.study(_store(), image_id)
    if item is None:
        abort(404)
    return item


def _visit(image_id: int) -> list[dict]:
    return visit_of(_store(), image_id, current_app.config["APPLIANCE"].visit_gap_minutes)


@bp.get("/<int:image_id>")
def view(image_id: int):
    item = _load(image_id)
    typed = not item["received_patient_id"]  # a patient may be typed for this image
    return render_template(
        "study/view.html",
        item=item,
        reviews=reviews_for(_store(), image_id),
        outcomes=outcomes_for(_store(), image_id),
        treatments=treatments_for(_store(), image_id),
        consent_policy=current_app.config["APPLIANCE"].training_consent,
        consent=consent_of(_store(), image_id),
        today=date.today().isoformat(),
        eyes=eyes_of(_store(), image_id, current_app.config["APPLIANCE"].timezone),
        visit=_visit(image_id) if typed else [],
        previous=previous_photo(_store(), image_id) if typed else None,
        # the worklist's patients for an image without one: one tap instead of typing
        scheduled=[]
        if item["received_patient_id"]
        else candidates(_store(), current_app.config["APPLIANCE"], item),
    )


@bp.get("/<int:image_id>/thumb")
def thumbnail(image_id: int):
    """The worklist's small picture; made from the preview for an image screened before
    thumbnails were kept (not stored: the worker writes files, the pages read them)."""
    item = _load(image_id)
    data_dir = _store().data_dir
    kept = data_dir / thumbnail_path(image_id)
    if kept.is_file():
        data = kept.read_bytes()
    elif item["preview_path"] and (data_dir / item["preview_path"]).is_file():
        preview = cv2.imdecode(
            np.frombuffer((data_dir / item["preview_path"]).read_bytes(), np.uint8),
            cv2.IMREAD_COLOR,
        )
        scale = THUMBNAIL_MAX_PX / max(preview.shape[:2])
        size = (max(1, round(preview.shape[1] * scale)), max(1, round(preview.shape[0] * scale)))
        small = cv2.resize(preview, size, interpolation=cv2.INTER_AREA)
        data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    else:
        abort(404)
    return Response(data, mimetype="image/jpeg")


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


@bp.post("/<int:image_id>/consent")
@requires("operator", "clinician")
def consent(image_id: int):
    """The patient's yes or no to this visit's images being used to improve the models:
    asked only where the site's training_consent is ``ask`` (store/consent.py; audited)."""
    _load(image_id)
    if current_app.config["APPLIANCE"].training_consent != "ask":
        flash(_("This clinic does not ask patients about improving the models."), "error")
        return redirect(url_for("study.view", image_id=image_id))
    try:
        record_consent(_store(), image_id, request.form.get("answer", ""), g.user)
    except ConsentError:  # only a crafted request: the page offers yes and no
        flash(_("Choose yes or no."), "error")
    else:
        flash(_("Answer saved."), "ok")
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/treatment")
@requires("clinician")
def treatment(image_id: int):
    """Treatment started (a date and where) for this image's confirmed patient:
    append-only, audited, sent to the hub with the outcome it follows."""
    _load(image_id)
    try:
        add_treatment(
            _store(),
            image_id=image_id,
            user=g.user,
            started_on=request.form.get("started_on", ""),
            place=request.form.get("place", ""),
        )
    except OutcomeError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Treatment start saved."), "ok")
    return redirect(url_for("study.view", image_id=image_id) + "#outcomes")


@bp.post("/<int:image_id>/patient")
@requires("operator", "clinician")
def patient(image_id: int):
    """Type in the patient of an image that came without one (a camera card's photo), or
    take the previous photo's (``same_as``) or a worklist entry's (``mwl_entry``); also
    for the batch's other photos ticked in ``also`` (those without a patient of their
    own: patients.set_patients)."""
    _load(image_id)
    patient_id = request.form.get("patient_id", "")
    patient_name = request.form.get("patient_name", "")
    accession = None
    same_as = request.form.get("same_as", "")
    if request.form.get("mwl_entry", "").isdigit():  # a worklist entry tapped
        chosen = mwl.entry(_store().conn(), int(request.form["mwl_entry"]))
        if chosen is None:
            abort(404)
        patient_id, patient_name = chosen["patient_id"], chosen["patient_name"] or ""
        accession = chosen["accession_number"]
    elif same_as.isdigit():
        previous = patient_of(_store(), int(same_as))
        if previous is None:
            flash(_("The previous photo has no patient yet."), "error")
            return redirect(url_for("study.view", image_id=image_id))
        patient_id, patient_name = previous
    # Only the photos staff ticked, and only from this photo's batch (never any image).
    ticked = {int(v) for v in request.form.getlist("also") if v.isdigit()}
    also = [p["id"] for p in _visit(image_id) if p["id"] in ticked and p["id"] != image_id]
    try:
        changed = set_patients(_store(), image_id, also, patient_id, patient_name, g.user,
                               accession)
    except PatientError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        if len(changed) > 1:
            flash(
                ngettext(
                    "Patient saved for %(num)s photo of this visit.",
                    "Patient saved for %(num)s photos of this visit.",
                    len(changed),
                ),
                "ok",
            )
        else:
            flash(_("Patient saved."), "ok")
        kept = len({image_id, *also}) - len(changed)
        if also and kept > 0:
            flash(
                ngettext(
                    "%(num)s photo already had another patient and was left as it was.",
                    "%(num)s photos already had another patient and were left as they were.",
                    kept,
                ),
                "ok",
            )
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/eye")
@requires("operator", "clinician")
def eye(image_id: int):
    """Which eye a retina photo shows, in one tap (store/eyes.py; audited)."""
    _load(image_id)
    try:
        set_eye(_store(), image_id, request.form.get("eye", ""), g.user)
    except EyeError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Eye saved."), "ok")
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/route")
@requires("clinician")
def route(image_id: int):
    """Screen anyway, as a chest X-ray or a retina photo, an image the router refused
    (store/routes.py: never one the DICOM tags refused). Audited."""
    _load(image_id)
    try:
        choose_route(_store(), image_id, request.form.get("route", ""), g.user)
    except RouteError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Choice saved: the image is being screened."), "ok")
    return redirect(url_for("study.view", image_id=image_id))


@bp.post("/<int:image_id>/screen-ungradable")
@requires("clinician")
def ungradable(image_id: int):
    """Screen anyway a retina photo the quality check refused (store/routes.py; audited):
    its result says so."""
    _load(image_id)
    try:
        screen_ungradable(_store(), image_id, g.user)
    except RouteError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(_("Choice saved: the photo is being screened."), "ok")
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
    """The referral slip of a screened image: none for one that was not screened (its
    page gives the retake or resend advice instead), nor before its result."""
    item = _load(image_id)
    if not item["result"] or item["result"]["route"] == "refused":
        abort(404)
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
        facts=patient_facts(_store(), item),
        cautions=slip_cautions(item["result"]["hints"]),
        zone=zone_words(current_app.config["APPLIANCE"].timezone, item["result"]["created_at"]),
        eyes=eyes_of(_store(), image_id, current_app.config["APPLIANCE"].timezone),
    )
