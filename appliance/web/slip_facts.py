"""What the referral slip says beyond the study page: the patient's age and sex as the
image gave them, which eye, the cautions meant for the reader of a slip, and the clinic's
time zone named (issue 24, defect 7).

The age and sex come from what the device sent (DICOM PatientAge, else BirthDate and
StudyDate; PatientSex from the stored original's header) and are checked against their
DICOM form here: anything else is left off the slip, never printed as sent.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from babel.dates import get_timezone_gmt
from flask_babel import get_locale, ngettext
from flask_babel import lazy_gettext as _l

from appliance.screening.gate import age_in_years
from appliance.store.db import Store
from appliance.web.clinic import zone_label
from appliance.web.image_words import EYE_NAMES, HINTS_ABOUT_THE_BOX

DICOM_AGE = re.compile(r"^(\d{3})([DWMY])$")
SEX = {"M": _l("male"), "F": _l("female"), "O": _l("other")}


def _in_units(count: int, unit: str) -> str:
    if unit == "Y":
        return ngettext("%(num)s year", "%(num)s years", count)
    if unit == "M":
        return ngettext("%(num)s month", "%(num)s months", count)
    if unit == "W":
        return ngettext("%(num)s week", "%(num)s weeks", count)
    return ngettext("%(num)s day", "%(num)s days", count)


def age_words(patient_age: str | None, birth_date: str | None, study_date: str | None) -> str:
    """ "64 years", "18 months", "10 days"; "" where the image did not say. DICOM's own
    unit when it gave PatientAge, else from the birth and study dates."""
    given = DICOM_AGE.match((patient_age or "").strip().upper())
    if given:
        return _in_units(int(given[1]), given[2])
    years = age_in_years(None, birth_date, study_date)
    if years is None:
        return ""
    if years >= 2:
        return _in_units(int(years), "Y")
    if years * 12 >= 1:
        return _in_units(int(years * 12), "M")
    return _in_units(int(years * 365.25), "D")


def sex_words(image: dict[str, Any], data_dir: Path) -> str:
    """ "female" from the stored DICOM's PatientSex (M, F or O); "" otherwise."""
    if image.get("file_format") != "dicom" or not image.get("stored_path"):
        return ""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(
            Path(data_dir) / image["stored_path"],
            stop_before_pixels=True,
            specific_tags=["PatientSex"],
        )
    except (OSError, InvalidDicomError, ValueError):
        return ""
    sex = str(header.get("PatientSex") or "").strip().upper()
    return str(SEX[sex]) if sex in SEX else ""


def patient_facts(store: Store, image: dict[str, Any]) -> dict[str, str]:
    """{"age": ..., "sex": ..., "eye": ...} for the slip; each "" when not known."""
    row = (
        store.conn()
        .execute(
            "SELECT s.patient_age, s.patient_birth_date, s.study_date FROM images i"
            " JOIN studies s ON s.id = i.study_id WHERE i.id = ?",
            (image["id"],),
        )
        .fetchone()
    )
    age = age_words(*row) if row else ""
    laterality = (image.get("laterality") or "").strip().upper()
    fundus = (image.get("result") or {}).get("route") == "fundus"
    return {
        "age": age,
        "sex": sex_words(image, store.data_dir),
        "eye": str(EYE_NAMES[laterality]) if fundus and laterality in EYE_NAMES else "",
    }


def slip_cautions(hints: list[str] | None) -> list[str]:
    """The result's hints a slip's reader needs (image quality, age, route), without
    those about the appliance's own checks."""
    return [hint for hint in hints or [] if hint not in HINTS_ABOUT_THE_BOX]


def zone_words(zone: str, moment: str | None) -> str:
    """The clinic's time zone named for a printed time: "Maputo (Mozambique), GMT+02:00"
    (the offset of the day printed, so summer time is right)."""
    locale = str(get_locale())
    when = datetime.fromisoformat(moment) if moment else datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if zone == "UTC":
        return "UTC"
    import pytz

    offset = get_timezone_gmt(when.astimezone(pytz.timezone(zone)), locale=locale)
    return f"{zone_label(zone, locale)}, {offset}"
