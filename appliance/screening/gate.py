"""The fitness gate: is this a chest X-ray, a fundus photograph, or neither?

Two witnesses: the DICOM tags the device wrote (modality, body part, view position,
SOP class) and the router model, which looks at the pixels. Tags that rule an image
out are trusted (a CT is never screened as a chest film); tags that say "chest" or
"eye" make the router's agreement enough at a lower confidence; with no tags (a JPEG
from a camera card) the router decides alone and must be confident.

A clinician may overrule the router, never the tags: an image the router refused (or
could not place) is screened as the chest X-ray or retina photo they say it is, and the
decision says so (``source``); a CT stays refused whatever anyone chooses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

CHEST, FUNDUS, REFUSED = "chest_xray", "fundus", "refused"
ROUTES = (CHEST, FUNDUS)
# What decided a route (results.route_source): the DICOM tags, the router model, the
# fundus photo quality check (pipeline.py), a clinician's choice, or a blank frame
# (nothing in it: no one can choose a route for it).
BY_TAGS, BY_ROUTER, BY_QUALITY, BY_CLINICIAN = "tags", "router", "quality", "clinician"
BY_BLANK = "blank"
BLANK = "The image is blank: there is nothing in it to screen."
BLANK_HINT = ("Check the camera or the X-ray system (lens cap, exposure, cable) and send "
              "the image again.")
ROUTER_LABELS = {"chest_xray": CHEST, "fundus_photo": FUNDUS, "other": "other"}

NOT_PROJECTION_XRAY = {
    "CT": "a CT scan",
    "MR": "an MRI scan",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine image",
    "PT": "a PET scan",
    "MG": "a mammogram",
    "XA": "an angiogram",
    "RF": "a fluoroscopy image",
    "ECG": "an ECG",
    "SR": "a report",
    "DOC": "a document",
    "RTIMAGE": "a radiotherapy image",
    "RTDOSE": "a radiotherapy plan",
    "RTPLAN": "a radiotherapy plan",
    "RTSTRUCT": "a radiotherapy plan",
    "SEG": "a segmentation",
    "IVUS": "an ultrasound image",
    "OCT": "an OCT scan (not a fundus photograph)",
}
XRAY = {"CR", "DX", "DR"}
CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "CHEST_TO_PELVIS", "RIB"}
LATERAL_VIEWS = {"LAT", "LL", "RL", "LLD", "RLD", "LATERAL"}
OPHTHALMIC_SOP = "1.2.840.10008.5.1.4.1.1.77.1.5."

RETAKE_CHEST = "Send a front-view (PA or AP) chest X-ray, or a photograph of the retina."


@dataclass
class GateDecision:
    route: str  # chest_xray, fundus or refused
    reason: str | None = None
    hints: list[str] = field(default_factory=list)
    router: dict[str, float] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    source: str = BY_ROUTER  # one of BY_*


def expectation_from_tags(tags: dict[str, Any]) -> tuple[str | None, GateDecision | None]:
    """What the tags say: (CHEST | FUNDUS | None, a refusal if they rule the image out)."""
    modality = (tags.get("modality") or "").upper()
    body_part = (tags.get("body_part") or "").upper().replace(" ", "_")
    view = (tags.get("view_position") or "").upper()
    sop_class = tags.get("sop_class_uid") or ""
    if modality in NOT_PROJECTION_XRAY:
        what = NOT_PROJECTION_XRAY[modality]
        return None, GateDecision(
            REFUSED,
            f"This is {what}, not a chest X-ray or an eye photograph.",
            [RETAKE_CHEST],
            evidence=[f"Modality {modality}"],
            source=BY_TAGS,
        )
    if modality in XRAY:
        if body_part and body_part not in CHEST_PARTS:
            part = body_part.lower().replace("_", " ")
            return None, GateDecision(
                REFUSED,
                f"Not a chest X-ray: this X-ray is of the {part}.",
                [RETAKE_CHEST],
                evidence=[f"BodyPartExamined {body_part}"],
                source=BY_TAGS,
            )
        if view in LATERAL_VIEWS:
            return None, GateDecision(
                REFUSED,
                "This is a side (lateral) view of the chest.",
                ["Send the front view (PA or AP) of the same patient."],
                evidence=[f"ViewPosition {view}"],
                source=BY_TAGS,
            )
        return CHEST, None
    if modality == "OP" or sop_class.startswith(OPHTHALMIC_SOP):
        return FUNDUS, None
    return None, None


def decide(
    router_probs: dict[str, float],
    tags: dict[str, Any],
    min_confidence: float,
    chosen: str | None = None,
    blank: bool = False,
) -> GateDecision:
    """``chosen``: the route a clinician chose for this image (CHEST or FUNDUS): it
    replaces the router's verdict, never a refusal by the tags. ``blank``: the frame
    holds nothing (``measures.is_blank``): refused whatever the router or anyone says
    (router 1.2.0 read a black frame as the dark surround of a retina photo)."""
    expected, refusal = expectation_from_tags(tags)
    if refusal is not None:
        refusal.router = router_probs
        return refusal
    if blank:
        return GateDecision(REFUSED, BLANK, [BLANK_HINT], router_probs,
                            ["contrast below what any photograph or film has"], BY_BLANK)
    label, confidence = max(router_probs.items(), key=lambda item: item[1])
    seen = ROUTER_LABELS.get(label, "other")
    evidence = [f"router {label} {confidence:.2f}"]
    if chosen is not None:
        if chosen not in ROUTES:
            raise ValueError(f"cannot screen an image as {chosen!r}")
        evidence.append(f"screened as {chosen} on a clinician's instruction")
        return GateDecision(chosen, router=router_probs, evidence=evidence, source=BY_CLINICIAN)
    if expected is not None:
        agree = router_probs.get(_router_label(expected), 0.0)
        evidence.append(f"tags say {expected}")
        # Tags and pixels agree enough: route. Pixels confidently say otherwise: refuse.
        if agree >= 0.5 or not (seen != expected and confidence >= min_confidence):
            return GateDecision(expected, router=router_probs, evidence=evidence)
        return GateDecision(
            REFUSED, _not_what_it_claims(expected), [RETAKE_CHEST], router_probs, evidence
        )
    if confidence < min_confidence:
        return GateDecision(
            REFUSED,
            "The box cannot tell what this image shows.",
            ["Check it is a chest X-ray or a retina photograph, well exposed, and send it again."],
            router_probs,
            evidence,
        )
    if seen == "other":
        return GateDecision(
            REFUSED,
            "Not a chest X-ray or a retina photograph: it cannot be screened.",
            [RETAKE_CHEST],
            router_probs,
            evidence,
        )
    return GateDecision(seen, router=router_probs, evidence=evidence)


def _router_label(route: str) -> str:
    return next(label for label, value in ROUTER_LABELS.items() if value == route)


def _not_what_it_claims(expected: str) -> str:
    if expected == CHEST:
        return "Labelled as a chest X-ray, but the image does not look like one."
    return "Labelled as an eye photograph, but the image does not look like a retina."


def age_in_years(
    patient_age: str | None, birth_date: str | None, study_date: str | None
) -> float | None:
    """The patient's age at the study from DICOM PatientAge ("045Y", "018M", "030W",
    "010D"), else from birth date and study date; None when the device did not say."""
    units = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    if (
        patient_age
        and len(patient_age) == 4
        and patient_age[:3].isdigit()
        and (patient_age[3].upper() in units)
    ):
        return int(patient_age[:3]) * units[patient_age[3].upper()]
    try:
        born = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
        seen = date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:8]))
    except (TypeError, ValueError, IndexError):
        return None
    years = (seen - born).days / 365.25
    return years if 0 <= years < 130 else None
