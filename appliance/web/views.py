"""What every template can use: the signed-in user, translated labels, local dates."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, current_app, g
from flask_babel import format_datetime, format_decimal, get_locale
from flask_babel import lazy_gettext as _l

from appliance.store.reviews import REASON_CODES

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


def init_app(app: Flask) -> None:
    app.jinja_env.filters["local_datetime"] = local_datetime
    app.jinja_env.filters["number"] = lambda v, digits=2: format_decimal(
        v, format=f"#,##0.{'0' * digits}" if digits else "#,##0"
    )

    @app.context_processor
    def labels():
        return {
            "current_user": getattr(g, "user", None),
            "site_name": current_app.config["APPLIANCE"].site_name,
            "locale": str(get_locale()),
            "STATUS": STATUS,
            "TRIAGE": TRIAGE,
            "ROUTE": ROUTE,
            "ROLE": ROLE,
            "LANGUAGE": LANGUAGE,
            "REASONS": REASONS,
            "FINDING": FINDING,
            "RECOMMENDATION": RECOMMENDATION,
            "IMPORT_STATUS": IMPORT_STATUS,
        }
