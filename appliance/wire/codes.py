"""The codes a result is written in, for PACS (DICOM SR) and the hub's FHIR alike.

Standard codes where one says exactly what we mean (SNOMED CT, LOINC, DICOM's own DCM
and UCUM); where none does (an AI score, the box's triage, "referable diabetic
retinopathy", the adult chest model's "abnormal"), a local code system: in DICOM the
private coding scheme ``99APPLIANCE`` (private schemes start with 99, PS3.16 8.2), in
FHIR the URI ``LOCAL_SYSTEM``. docs/dicom-conformance.md and docs/fhir.md list them.
"""

from __future__ import annotations

from typing import NamedTuple

LOCAL_SCHEME = "99APPLIANCE"
LOCAL_SYSTEM = "urn:appliance:screening"
SNOMED_SYSTEM = "http://snomed.info/sct"
LOINC_SYSTEM = "http://loinc.org"
DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"


class Concept(NamedTuple):
    scheme: str  # DICOM coding scheme designator: SCT, LN, DCM, UCUM or LOCAL_SCHEME
    code: str  # at most 16 characters (DICOM's Code Value is an SH)
    meaning: str

    @property
    def fhir_system(self) -> str:
        systems = {"SCT": SNOMED_SYSTEM, "LN": LOINC_SYSTEM, "DCM": DICOM_SYSTEM}
        return systems.get(self.scheme, LOCAL_SYSTEM)


def local(code: str, meaning: str) -> Concept:
    return Concept(LOCAL_SCHEME, code, meaning)


# What each model looks for. The adult chest model looks for TB-consistent findings from
# version 2 (issue 23); results of its 1.x versions keep their own finding (see
# EARLIER_FINDINGS and finding()).
FINDINGS = {
    "cxr-pneumonia": Concept("SCT", "233604007", "Pneumonia"),
    "cxr-adult-abnormal": local("tb-consistent", "TB-consistent findings"),
    "fundus-referable-dr": local("referable-dr", "Referable diabetic retinopathy"),
}
EARLIER_FINDINGS = {
    ("cxr-adult-abnormal", "1"): local("abnormal-cxr", "Abnormal chest radiograph"),
}
NO_FINDING = local("not-screened", "Not screened")


def major(version: str | None) -> str:
    """``"2"`` of ``"2.0.0"`` ("" where unknown): finding texts change with it."""
    return str(version or "").split(".")[0]


def finding(model: str | None, version: str | None = None) -> Concept | None:
    """What ``model`` (at ``version``, where known) looks for; None for a model this
    version of the appliance does not know."""
    return EARLIER_FINDINGS.get((model or "", major(version))) or FINDINGS.get(model or "")


def finding_meaning(model: str | None, version: str | None, default: str | None = None
                    ) -> str | None:
    """:func:`finding` in words ("TB-consistent findings"), ``default`` for a model
    this version does not know."""
    concept = finding(model, version)
    return concept.meaning if concept else default

# The procedure each route reports on.
PROCEDURES = {
    "chest_xray": Concept("SCT", "399208008", "Plain chest X-ray"),
    "fundus": local("fundus-photo", "Colour fundus photograph"),
}
OTHER_PROCEDURE = local("image-screening", "Image screening")

# A retina photo's eye (images.laterality): FHIR's Observation.bodySite, DICOM's Laterality.
EYES = {
    "R": Concept("SCT", "18944008", "Right eye structure"),
    "L": Concept("SCT", "8966001", "Left eye structure"),
}

SCORE = local("ai-score", "AI score (0-100)")
PROBABILITY = Concept("DCM", "122157", "Probability")
THRESHOLD = local("threshold", "Operating threshold (probability)")
TRIAGE = local("triage", "Triage")
TRIAGES = {
    "urgent": local("urgent", "Urgent: see first"),
    "review": local("review", "Review: at or above the threshold"),
    "routine": local("routine", "Routine: below the threshold"),
}
FLAGGED = local("flagged", "Flagged by the AI (at or above the threshold)")
NOT_FLAGGED = local("not-flagged", "Not flagged by the AI (below the threshold)")

# FHIR: the report and the one LOINC code for "an imaging study's report".
REPORT = Concept("LN", "18748-4", "Diagnostic imaging study")
RADIOLOGY = Concept("LN", "LP29684-5", "Radiology")

DECISION_SUPPORT = (
    "AI decision support, not a diagnosis: a screening program produced this result and "
    "a clinician must confirm it."
)
BANNER = "AI decision support \u2014 not for diagnosis"
