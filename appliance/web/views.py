"""What every template can use: the signed-in user, translated labels, local dates."""

from __future__ import annotations

from datetime import date, datetime

from flask import Flask, current_app, g
from flask_babel import format_date, format_datetime, format_decimal, format_percent
from flask_babel import lazy_gettext as _l

from appliance.monitoring.outcomes import RESULTS, TESTS
from appliance.screening.models import CXR, CXR_ADULT, FUNDUS
from appliance.store.reviews import REASON_CODES
from appliance.web import user_language
from appliance.web.reasons import translate_reason

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
    "quarantined": _l("refused, copy kept"),
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
TRIAGE = {"urgent": _l("urgent"), "review": _l("review"), "routine": _l("routine")}
ROUTE = {
    "chest_xray": _l("Chest X-ray"),
    "fundus": _l("Retina photo"),
    "refused": _l("Not screened"),
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
# Confirmatory tests and results (appliance/monitoring/outcomes.py), in people's words.
TEST_NAMES = {
    "xpert": _l("Sputum Xpert MTB/RIF"),
    "culture": _l("Culture"),
    "smear": _l("Sputum smear microscopy"),
    "radiologist": _l("Radiologist's read"),
    "ophthalmologist": _l("Ophthalmologist's grade"),
    "follow_up": _l("Clinical follow-up"),
    "other": _l("Other test"),
}
assert set(TEST_NAMES) == set(TESTS)
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
    (CXR, False): _l("No pneumonia pattern found on the chest X-ray."),
    (CXR_ADULT, True): _l("Abnormal chest X-ray — refer for clinical/TB assessment."),
    (CXR_ADULT, False): _l("No abnormality found on the chest X-ray."),
    (FUNDUS, True): _l("Signs of referable diabetic retinopathy found on the retina photo."),
    (FUNDUS, False): _l("No signs of referable diabetic retinopathy found."),
}
# A model this version does not know (a later bundle): said without naming a disease.
OTHER_FINDING = {
    True: _l("The screening found signs that a clinician should review."),
    False: _l("The screening found no signs that need review."),
}
# Which model scored, named in people's words; %(model)s is its name and version.
SCORED_BY = {
    CXR: _l("Scored by the child chest X-ray model (%(model)s)."),
    CXR_ADULT: _l("Scored by the adult chest X-ray model (%(model)s)."),
    FUNDUS: _l("Scored by the retina photo model (%(model)s)."),
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
    "routine": _l("No referral needed from this screening; follow the usual care plan."),
}


def finding(result: dict) -> str:
    """The finding in words, for the model that scored the result."""
    positive = result["probability"] >= result["threshold"]
    text = FINDING.get((result.get("model_name"), positive), OTHER_FINDING[positive])
    return str(text)


def scored_by(result: dict) -> str:
    """e.g. "Scored by the adult chest X-ray model (cxr-adult-abnormal 1.0.0)." """
    name = f"{result.get('model_name') or ''} {result.get('model_version') or ''}".strip()
    sentence = SCORED_BY.get(result.get("model_name"))
    return str(sentence) % {"model": name} if sentence else name


def screened_as(result: dict, image: dict) -> str:
    """How a chest X-ray's population was decided; "" where there is nothing to say."""
    sentence = SCREENED_AS.get((result.get("population"), result.get("population_source")))
    return str(sentence) % {"user": image.get("population_by") or "?"} if sentence else ""


def local_datetime(value: str | None, style: str = "short") -> str:
    if not value:
        return ""
    return format_datetime(datetime.fromisoformat(value), style)


def local_date(value: str | None, style: str = "medium") -> str:
    """A DICOM date (YYYYMMDD) or ISO date in the reader's language; as sent if malformed."""
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
    return format_date(day, style)


def init_app(app: Flask) -> None:
    app.jinja_env.filters["local_datetime"] = local_datetime
    app.jinja_env.filters["local_date"] = local_date
    app.jinja_env.filters["number"] = lambda v, digits=2: format_decimal(
        v, format=f"#,##0.{'0' * digits}" if digits else "#,##0"
    )
    # 0.85 -> "85%" (en, pt), "85 %" (fr): the locale's own percent pattern.
    app.jinja_env.filters["percent"] = lambda v: format_percent(v)
    app.jinja_env.filters["translate_reason"] = translate_reason

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
            "RECOMMENDATION": RECOMMENDATION,
            "IMPORT_STATUS": IMPORT_STATUS,
            "ENGINE_STATE": ENGINE_STATE,
            "TESTS": TEST_NAMES,
            "OUTCOME_RESULTS": OUTCOME_RESULTS,
        }
