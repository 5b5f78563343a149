"""What an image is and what confirms its result, in people's words: the kind of image
(never "png" or "jpeg"), a retina photo's eye, the confirmatory tests offered per kind of
image (issue 24). Used by the worklist, the study page and the slip (web/views.py)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from appliance.monitoring.outcomes import TESTS
from appliance.screening.heatmaps import HEATMAP_NOT_SHOWN

# Confirmatory tests (appliance/monitoring/outcomes.py), in people's words.
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
# Which tests confirm what each kind of image screens for, most usual first: a retina
# photo is never offered a sputum test (issue 24).
TESTS_FOR = {
    "chest_xray_adult": ("xpert", "culture", "smear", "radiologist", "follow_up", "other"),
    "chest_xray_child": ("radiologist", "follow_up", "xpert", "culture", "smear", "other"),
    "fundus": ("ophthalmologist", "follow_up", "other"),
}
# What kind of image it is, in words, where the box did not screen it as a chest X-ray or
# a retina photo: the DICOM modality, else the kind of file (never "png" or "jpeg").
MODALITY_NAMES = {
    "CR": _l("X-ray"),
    "DX": _l("X-ray"),
    "OP": _l("Eye photo"),
    "XC": _l("Photo"),
    "CT": _l("CT scan"),
    "MR": _l("MRI scan"),
    "US": _l("Ultrasound"),
    "MG": _l("Mammogram"),
}
FILE_KINDS = {
    "jpeg": _l("Photo or picture file"),
    "png": _l("Picture file"),
    "tiff": _l("Picture file"),
    "dicom": _l("Medical image (DICOM)"),
}

# A retina photo's eye (images.laterality: DICOM's R/L, a camera's file name, one tap).
EYE_NAMES = {"R": _l("Right eye"), "L": _l("Left eye")}

# Hints about the appliance itself, not about the patient (a model's maps not shown):
# said quietly on the study page, never on a slip handed to the patient or next clinic.
HINTS_ABOUT_THE_BOX = frozenset({HEATMAP_NOT_SHOWN})
# What the box screened an image as (results.route).
ROUTE = {
    "chest_xray": _l("Chest X-ray"),
    "fundus": _l("Retina photo"),
    "refused": _l("Not screened"),
}


def tests_for(result: dict | None) -> list[tuple[str, str]]:
    """The confirmatory tests offered for this image's result, most usual first."""
    route = (result or {}).get("route") or ""
    if route == "chest_xray":
        route += "_child" if (result or {}).get("population") == "child" else "_adult"
    codes = TESTS_FOR.get(route, tuple(TEST_NAMES))
    return [(code, str(TEST_NAMES[code])) for code in codes]


def image_kind(row: dict) -> str:
    """What an image is, in words: "Chest X-ray", "Retina photo", "CT scan", "Picture
    file"; the modality code a device sent where it has no name here."""
    route = row.get("route") or (row.get("result") or {}).get("route")
    if route in ("chest_xray", "fundus"):
        return str(ROUTE[route])
    modality = (row.get("modality") or "").upper()
    if modality:
        return str(MODALITY_NAMES.get(modality, modality))
    return str(FILE_KINDS.get(row.get("file_format") or "", _l("Image")))
