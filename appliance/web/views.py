"""What every template can use: the signed-in user, translated labels, local dates, and
what the devices sent (person names, body parts, sources) in the words people use."""

from __future__ import annotations

from datetime import date, datetime, timezone

from flask import Flask, current_app, g
from flask_babel import (
    format_date,
    format_datetime,
    format_decimal,
    format_percent,
)
from flask_babel import lazy_gettext as _l

from appliance.monitoring.outcomes import RESULTS
from appliance.screening.heatmaps import HEATMAP_OPACITY
from appliance.screening.models import CXR, CXR_ADULT, FUNDUS, ROUTER
from appliance.store.reviews import REASON_CODES
from appliance.store.routes import can_choose_route, can_screen_ungradable
from appliance.web import user_language
from appliance.web.clinic import DATE_PATTERNS
from appliance.web.image_words import (
    EYE_NAMES,
    HINTS_ABOUT_THE_BOX,
    ROUTE,
    TEST_NAMES,
    image_kind,
    tests_for,
)
from appliance.web.reasons import body_part_name, translate_reason
from appliance.wire.codes import major

STATUS = {
    "waiting": _l("waiting"),
    "needs_population": _l("adult or child?"),
    "failed": _l("screening failed"),
    "screened": _l("screened"),
    "refused": _l("refused"),
    "reviewed": _l("reviewed"),
    "synced": _l("synced"),
}
IMPORT_STATUS = {
    "stored": _l("imported"),
    "duplicate": _l("already on the box"),
    "quarantined": _l(
        "refused: not an image the box can screen (a copy is kept for the technician)"
    ),
    "refused": _l("refused"),
}
ENGINE_STATE = {
    "unknown": _l("not started yet"),
    "starting": _l("starting"),
    "working": _l("building in the background"),
    "waiting": _l("waiting"),
    "building": _l("building"),
    "checking": _l("checking against ONNX Runtime"),
    "ready": _l("ready"),
    "done": _l("done"),
    "failed": _l("failed"),
    "skipped": _l("not used on this box"),
    "unavailable": _l("not available on this box"),
    "off": _l("turned off"),
    "stopped": _l("stopped"),
}
# Proper names, the same in every language.
BACKEND_NAMES = {"onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT"}
TRIAGE = {"urgent": _l("urgent"), "review": _l("review"), "routine": _l("routine")}
# The router model's labels (results.router), for the clinician's Details.
ROUTER_LABEL = {
    "chest_xray": _l("Chest X-ray"),
    "fundus_photo": _l("Retina photo"),
    "other": _l("something else"),
}
ROLE = {"operator": _l("operator"), "clinician": _l("clinician"), "admin": _l("admin")}
LANGUAGE = {"en": "English", "fr": "Français", "pt": "Português"}
REASONS = {
    "finding_missed": _l("The AI missed a finding"),
    "false_alarm": _l("False alarm: no finding"),
    "poor_image_quality": _l("Image quality too poor"),
    "wrong_body_part": _l("Wrong body part or view"),
    "artefact": _l("Artefact (jewellery, clothing, lead marker)"),
    "known_condition": _l("Known condition, already treated"),
    "other": _l("Other (see note)"),
}
assert set(REASONS) == set(REASON_CODES)
# Confirmatory results (appliance/monitoring/outcomes.py), in people's words.
OUTCOME_RESULTS = {
    "positive": _l("positive"),
    "negative": _l("negative"),
    **{f"grade {g}": _l("grade %(grade)s", grade=g) for g in range(5)},
    "indeterminate": _l("indeterminate"),
    "withdrawn": _l("withdrawn (entered in error)"),
}
assert set(RESULTS) <= set(OUTCOME_RESULTS)

# What the slip and the study page say, per model that scored and outcome, in plain
# words. Results stored before there were two chest models name cxr-pneumonia.
FINDING = {
    (CXR, True): _l("Pattern suggesting pneumonia found on the chest X-ray."),
    (CXR, False): _l(
        "Not flagged for a pneumonia pattern by screening; this does not rule pneumonia out."
    ),
    (CXR_ADULT, True): _l(
        "TB-consistent findings on the chest X-ray — refer for a sputum test "
        "(e.g. Xpert MTB/RIF)."
    ),
    (CXR_ADULT, False): _l(
        "Not flagged for TB-consistent findings by screening; this does not rule TB out."
    ),
    (FUNDUS, True): _l("Signs of referable diabetic retinopathy found on the retina photo."),
    (FUNDUS, False): _l(
        "Not flagged for referable diabetic retinopathy by screening; this does not rule "
        "it out."
    ),
}
# Results of a model's earlier major version that looked for something else, by (model,
# major version, positive): the adult chest model's 1.x said "abnormal", not TB.
EARLIER_FINDING = {
    (CXR_ADULT, "1", True): _l("Abnormal chest X-ray — refer for clinical/TB assessment."),
    (CXR_ADULT, "1", False): _l(
        "Not flagged as abnormal by screening; this does not rule disease out."
    ),
}
# A model this version does not know (a later bundle): said without naming a disease.
OTHER_FINDING = {
    True: _l("The screening found signs that a clinician should review."),
    False: _l("Not flagged by screening; this does not rule disease out."),
}
# Which model scored, named in people's words (its file name and version are in the
# study page's Details and at the foot of the slip).
SCORED_BY = {
    CXR: _l("Scored by the child chest X-ray model."),
    CXR_ADULT: _l("Scored by the adult chest X-ray model."),
    FUNDUS: _l("Scored by the retina photo model."),
}
# The models as people say them (settings, System, calibration).
MODEL_NAMES = {
    CXR_ADULT: _l("Adult chest X-ray"),
    CXR: _l("Child chest X-ray"),
    FUNDUS: _l("Retina photo (diabetic retinopathy)"),
    ROUTER: _l("Image check (chest X-ray or retina photo?)"),
}
# Where an image came from (images.source); %(name)s: the stick's label or the sender's
# AE title.
SOURCES = {
    "usb": _l("USB stick %(name)s"),
    "dicom": _l("Sent by %(name)s"),
    "upload": _l("Uploaded"),
    "folder": _l("Watched folder"),
    "cli": _l("Imported on the command line"),
    "recovered": _l("Recovered after a restart"),
}
# An image a clinician had screened although the router refused it (store/routes.py).
ROUTE_CHOSEN = {
    "chest_xray": _l(
        "Screened as a chest X-ray on the instruction of %(user)s: the box's image check "
        "had not recognised it."
    ),
    "fundus": _l(
        "Screened as a retina photo on the instruction of %(user)s: the box's image check "
        "had not recognised it."
    ),
}
BEING_SCREENED_AS = {
    "chest_xray": _l("Being screened as a chest X-ray, as %(user)s chose…"),
    "fundus": _l("Being screened as a retina photo, as %(user)s chose…"),
}
# How a chest X-ray's population was decided (results.population_source).
SCREENED_AS = {
    ("adult", "dicom_age"): _l(
        "Screened as an adult: the X-ray gives the patient's age (16 or older)."
    ),
    ("child", "dicom_age"): _l(
        "Screened as a child: the X-ray gives the patient's age (under 16)."
    ),
    ("adult", "site_setting"): _l(
        "Screened as an adult: the X-ray gives no age, and this clinic screens such X-rays "
        "as adults."
    ),
    ("child", "site_setting"): _l(
        "Screened as a child: the X-ray gives no age, and this clinic screens such X-rays "
        "as children."
    ),
    ("adult", "operator"): _l("Screened as an adult, as chosen by %(user)s."),
    ("child", "operator"): _l("Screened as a child, as chosen by %(user)s."),
}
RECOMMENDATION = {
    "urgent": _l("Refer today: a clinician should see this patient urgently."),
    "review": _l("Refer: a clinician should review this result."),
    # Screening cannot clear anyone (the cards give each model's sensitivity): say what
    # it did, and that symptoms still decide.
    "routine": _l(
        "Not flagged by screening. Screening misses some cases: follow the usual care "
        "plan, and refer if the symptoms call for it."
    ),
}


def finding(result: dict) -> str:
    """The finding in words, for the model that scored the result."""
    positive = result["probability"] >= result["threshold"]
    name, version = result.get("model_name"), major(result.get("model_version"))
    text = EARLIER_FINDING.get((name, version, positive)) or FINDING.get(
        (name, positive), OTHER_FINDING[positive]
    )
    return str(text)


def scored_by(result: dict) -> str:
    """e.g. "Scored by the adult chest X-ray model." (a model this version does not
    know: its file name and version)."""
    sentence = SCORED_BY.get(result.get("model_name"))
    if sentence:
        return str(sentence)
    return f"{result.get('model_name') or ''} {result.get('model_version') or ''}".strip()


def route_chosen(result: dict, image: dict) -> str:
    """For a result whose route a clinician chose: who, in a sentence; else ""."""
    if result.get("route_source") != "clinician":
        return ""
    sentence = ROUTE_CHOSEN.get(result.get("route"))
    return str(sentence) % {"user": image.get("route_chosen_by") or "?"} if sentence else ""


def model_name(name: str) -> str:
    """A model as people say it; its file name when this version does not know it."""
    return str(MODEL_NAMES.get(name, name))


def source_label(row: dict) -> str:
    """Where an image came from: "USB stick CAMERA", "Sent by XRAY_ROOM", "Uploaded"."""
    source, detail = row.get("source") or "", row.get("source_detail") or ""
    if source == "usb":
        name = detail.split(":/", 1)[0]
    elif source == "dicom":
        name = detail.rpartition("@")[0] or detail
    else:
        name = detail
    sentence = SOURCES.get(source)
    return str(sentence) % {"name": name} if sentence else source


def person_name(value: str | None) -> str:
    """A DICOM person name as a register writes it: "Family^Given^Middle^Prefix^Suffix"
    -> "Prefix Family, Given Middle Suffix" ("DOE^JANE" -> "DOE, JANE" keeps the family
    name first, as DICOM sent it: swapping them would misname the patient). Only the
    first (alphabetic) group of a multi-script name; a typed name is shown as typed."""
    if not value or "^" not in value:
        return value or ""
    parts = [p.strip() for p in value.split("=", 1)[0].split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    prefix = parts[3] if len(parts) > 3 else ""
    suffix = parts[4] if len(parts) > 4 else ""
    name = ", ".join(p for p in (family, given) if p)
    return " ".join(p for p in (prefix, name, suffix) if p)


def screened_as(result: dict, image: dict) -> str:
    """How a chest X-ray's population was decided; "" where there is nothing to say."""
    sentence = SCREENED_AS.get((result.get("population"), result.get("population_source")))
    return str(sentence) % {"user": image.get("population_by") or "?"} if sentence else ""


def _date_pattern() -> str:
    """The clinic's date style (the date_style setting) as a pattern: 28/11/2026."""
    return DATE_PATTERNS.get(current_app.config["APPLIANCE"].date_style, DATE_PATTERNS["dmy"])


def _short_datetime_pattern(style: str = "short") -> str:
    """The clinic's date style and the 24-hour clock (28/11/2026 14:05), in every
    language: "12/6/2026, 2:21 AM" was read as 12 June in most countries (issue 24)."""
    return f"{_date_pattern()} {'HH:mm:ss' if style in ('medium', 'long') else 'HH:mm'}"


def local_datetime(value: str | float | None, style: str = "short") -> str:
    """A stored UTC time (ISO text or epoch seconds) in the clinic's zone and date style;
    "medium" or "long" adds the seconds."""
    if value is None or value == "":
        return ""
    moment = (
        datetime.fromtimestamp(value, timezone.utc)
        if isinstance(value, int | float)
        else datetime.fromisoformat(value)
    )
    return format_datetime(moment, _short_datetime_pattern(style))


def local_date(value: str | None, style: str = "medium") -> str:
    """A DICOM date (YYYYMMDD) or ISO date in the clinic's date style; as sent if
    malformed. (``style`` is kept for old callers: every date follows the one style.)"""
    if not value:
        return ""
    text = value.strip()
    try:
        day = (
            datetime.strptime(text, "%Y%m%d").date()
            if len(text) == 8
            else date.fromisoformat(text[:10])
        )
    except ValueError:
        return value
    return format_date(day, _date_pattern())


def init_app(app: Flask) -> None:
    app.jinja_env.filters["local_datetime"] = local_datetime
    app.jinja_env.filters["local_date"] = local_date
    app.jinja_env.filters["number"] = lambda v, digits=2: format_decimal(
        v, format=f"#,##0.{'0' * digits}" if digits else "#,##0"
    )
    # 0.85 -> "85%" (en, pt), "85 %" (fr): the locale's own percent pattern.
    app.jinja_env.filters["percent"] = lambda v: format_percent(v)
    app.jinja_env.filters["translate_reason"] = translate_reason
    app.jinja_env.filters["person_name"] = person_name
    app.jinja_env.filters["body_part"] = lambda code: body_part_name(code, capital=True)
    app.jinja_env.filters["model_name"] = model_name
    app.jinja_env.filters["source_label"] = source_label
    app.jinja_env.filters["image_kind"] = image_kind

    @app.context_processor
    def labels():
        return {
            "current_user": getattr(g, "user", None),
            "site_name": current_app.config["APPLIANCE"].site_name,
            "locale": user_language(),
            "STATUS": STATUS,
            "TRIAGE": TRIAGE,
            "ROUTE": ROUTE,
            "ROLE": ROLE,
            "LANGUAGE": LANGUAGE,
            "REASONS": REASONS,
            "finding": finding,
            "scored_by": scored_by,
            "screened_as": screened_as,
            "route_chosen": route_chosen,
            "can_choose_route": can_choose_route,
            "can_screen_ungradable": can_screen_ungradable,
            "BEING_SCREENED_AS": BEING_SCREENED_AS,
            "RECOMMENDATION": RECOMMENDATION,
            "IMPORT_STATUS": IMPORT_STATUS,
            "ENGINE_STATE": ENGINE_STATE,
            "BACKEND_NAMES": BACKEND_NAMES,
            "ROUTER_LABEL": ROUTER_LABEL,
            "TESTS": TEST_NAMES,
            "tests_for": tests_for,
            "EYE_NAMES": EYE_NAMES,
            "HEATMAP_OPACITY": HEATMAP_OPACITY,
            "QUIET_HINTS": HINTS_ABOUT_THE_BOX,
            "OUTCOME_RESULTS": OUTCOME_RESULTS,
        }
