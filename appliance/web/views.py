"""What every template can use: the signed-in user, translated labels, local dates."""

from __future__ import annotations

from datetime import date, datetime

from flask import Flask, current_app, g
from flask_babel import format_date, format_datetime, format_decimal, format_percent
from flask_babel import lazy_gettext as _l

from appliance.store.reviews import REASON_CODES
from appliance.web import user_language
from appliance.web.reasons import translate_reason

STATUS = {
    "waiting": _l("waiting"),
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

# What the slip and the study page say, per model and outcome, in plain words.
FINDING = {
    ("chest_xray", True): _l("Pattern suggesting pneumonia found on the chest X-ray."),
    ("chest_xray", False): _l("No pneumonia pattern found on the chest X-ray."),
    ("fundus", True): _l("Signs of referable diabetic retinopathy found on the retina photo."),
    ("fundus", False): _l("No signs of referable diabetic retinopathy found."),
}
RECOMMENDATION = {
    "urgent": _l("Refer today: a clinician should see this patient urgently."),
    "review": _l("Refer: a clinician should review this result."),
    "routine": _l("No referral needed from this screening; follow the usual care plan."),
}


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
            "FINDING": FINDING,
            "RECOMMENDATION": RECOMMENDATION,
            "IMPORT_STATUS": IMPORT_STATUS,
            "ENGINE_STATE": ENGINE_STATE,
        }
