"""One hub result as FHIR R4: a DiagnosticReport with its Observations, and the
ImagingStudy it reports on.

Built with fhir.resources' R4B models (R4B's DiagnosticReport, Observation,
ImagingStudy and Bundle are R4's), so every resource is validated as it is built. The
Observations (score, finding, triage) are contained in the report: they exist only as
part of it. The patient is a logical reference (the box's patient ID as an identifier,
scoped to the site): the hub holds no Patient records. Codes: appliance/wire/codes.py
(SNOMED CT and LOINC where one says what we mean, ``LOCAL_SYSTEM`` where none does).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation

from appliance.wire import codes as ours
from appliance.wire import eyes

UCUM = "http://unitsofmeasure.org"
DICOM_UID = "urn:dicom:uid"
PATIENT_SYSTEM = "urn:appliance:site:{site}:patient-id"
DEVICE_SYSTEM = "urn:appliance:device"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class UnrenderableRecord(ValueError):
    """A stored record that cannot be written as FHIR (a field of the wrong type)."""


def _id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def report_id(device_id: str, entry_id: str) -> str:
    """``<device>.<hex>`` for ``result:<hex>`` (readable back by ``entry_key``)."""
    kind, _, key = entry_id.partition(":")
    made = f"{device_id}.{key}"
    if kind == "result" and FHIR_ID.match(made):
        return made
    return _id("r-", device_id, entry_id)


def entry_key(report: str) -> tuple[str, str] | None:
    """(device id, entry id) of a report id made by ``report_id``, else None."""
    device_id, dot, key = report.partition(".")
    return (device_id, f"result:{key}") if dot and FHIR_ID.match(report) else None


def study_id(device_id: str, study_uid: str) -> str:
    return _id("s-", device_id, study_uid)


def concept(item: ours.Concept) -> dict[str, Any]:
    return {
        "coding": [{"system": item.fhir_system, "code": item.code, "display": item.meaning}],
        "text": item.meaning,
    }


def subject(data: dict[str, Any], site: str) -> dict[str, Any]:
    image = data.get("image") or {}
    if not image.get("patient_id"):
        return {"display": "patient not identified on the box"}
    reference = {
        "identifier": {
            "system": PATIENT_SYSTEM.format(site=site.replace(" ", "-")),
            "value": str(image["patient_id"]),
        }
    }
    if image.get("patient_name"):
        reference["display"] = str(image["patient_name"])
    return reference


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def observations(data: dict[str, Any], common: dict[str, Any]) -> list[Observation]:
    """Score (with probability and threshold), finding (flagged or not), triage."""
    if data.get("probability") is None:
        return []
    model = data.get("model") or {}
    finding = ours.finding(model.get("name"), model.get("version")) or ours.NO_FINDING
    flagged = data["probability"] >= data["threshold"]
    score = {
        "id": "score",
        "code": concept(ours.SCORE),
        "valueQuantity": _quantity(data["score"], "score", "1"),
        "component": [
            {
                "code": concept(ours.PROBABILITY),
                "valueQuantity": _quantity(round(data["probability"], 6), "probability", "1"),
            },
            {
                "code": concept(ours.THRESHOLD),
                "valueQuantity": _quantity(round(data["threshold"], 6), "probability", "1"),
            },
        ],
    }
    found = {
        "id": "finding",
        "code": concept(finding),
        "valueCodeableConcept": concept(ours.FLAGGED if flagged else ours.NOT_FLAGGED),
    }
    made = [score, found]
    triage = ours.TRIAGES.get(data.get("triage") or "")
    if triage is not None:
        made.append(
            {"id": "triage", "code": concept(ours.TRIAGE), "valueCodeableConcept": concept(triage)}
        )
    # A retina photo's result is one eye's: say which (issue 24).
    eye = ours.EYES.get(str((data.get("image") or {}).get("laterality") or "").upper())
    if eye is not None and data.get("route") == "fundus":
        for item in made:
            item["bodySite"] = concept(eye)
    return [
        Observation.model_validate({"resourceType": "Observation", **common, **item})
        for item in made
    ]


def conclusion(data: dict[str, Any], review: dict | None, outcome: dict | None) -> str:
    model = data.get("model") or {}
    if data.get("probability") is None:
        said = f"Not screened: {data.get('reason') or data.get('route')}."
    else:
        said = (
            f"AI score {data['score']}/100 (threshold {round(data['threshold'] * 100)}),"
            f" triage {data.get('triage')}; model {model.get('name')} {model.get('version')}."
        )
    parts = [ours.DECISION_SUPPORT, said]
    if isinstance(data.get("patient_eyes"), dict):  # a retina photo, graded or not
        parts.append(eyes.statement(data["patient_eyes"]))  # as the box's SR says it
    if review:
        reasons = ", ".join(review.get("reasons") or []) or "no reason given"
        parts.append(f"Clinician review: {review.get('verdict')} ({reasons}).")
    if outcome:
        parts.append(f"Confirmatory {outcome.get('test')}: {outcome.get('result')}.")
    return " ".join(parts)


def imaging_study(device_id: str, data: dict[str, Any], site: str) -> ImagingStudy | None:
    image = data.get("image") or {}
    uid = image.get("study_instance_uid")
    if not uid:
        return None
    return ImagingStudy.model_validate(
        {
            "resourceType": "ImagingStudy",
            "id": study_id(device_id, uid),
            "status": "available",
            "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{uid}"}],
            "subject": subject(data, site),
            **(
                {"modality": [{"system": ours.DICOM_SYSTEM, "code": image["modality"]}]}
                if image.get("modality")
                else {}
            ),
            "numberOfInstances": 1,
        }
    )


def diagnostic_report(
    entry: dict[str, Any],
    site: str,
    review: dict[str, Any] | None = None,
    outcome: dict[str, Any] | None = None,
) -> DiagnosticReport:
    """``entry``: a hub ``entries`` row of kind ``result`` with its payload decoded."""
    data = entry["payload"]
    model = data.get("model") or {}
    when = data.get("created_at")
    common = {
        "status": "preliminary",  # decision support: never a final report
        "subject": subject(data, site),
        **({"effectiveDateTime": when} if when else {}),
        "device": {
            "identifier": {"system": DEVICE_SYSTEM, "value": entry["device_id"]},
            "display": f"{model.get('name')} {model.get('version')} on {site}",
        },
    }
    contained = observations(data, common)
    image = data.get("image") or {}
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id(entry["device_id"], entry["entry_id"]),
        "meta": {"versionId": str(entry["revision"])},
        "identifier": [
            {"system": f"{DEVICE_SYSTEM}:{entry['device_id']}", "value": entry["entry_id"]}
        ],
        "status": "preliminary",
        "category": [concept(ours.RADIOLOGY)],
        "code": concept(ours.REPORT),
        "subject": common["subject"],
        **({"effectiveDateTime": when} if when else {}),
        **({"issued": entry["received_at"]} if entry.get("received_at") else {}),
        "contained": [obs.model_dump(mode="json", exclude_none=True) for obs in contained],
        "result": [{"reference": f"#{obs.id}"} for obs in contained],
        "conclusion": conclusion(data, review, outcome),
    }
    if image.get("study_instance_uid"):
        study = study_id(entry["device_id"], image["study_instance_uid"])
        report["imagingStudy"] = [{"reference": f"ImagingStudy/{study}"}]
    if image.get("accession_number"):
        report["identifier"].append(
            {"type": {"text": "Accession number"}, "value": str(image["accession_number"])}
        )
    return DiagnosticReport.model_validate(report)


def reason(exc: BaseException) -> str:
    """One short line saying why a record could not be rendered (pydantic's errors run
    to many lines: the first two name the resource and the field)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:2]
    return f"{type(exc).__name__}: {' '.join(lines)}"[:300]


def rendered(item: dict[str, Any]) -> tuple[DiagnosticReport, ImagingStudy | None]:
    """The report and study of a found result (``search._item``), or UnrenderableRecord:
    a record stored before the hub checked every field at its door may hold anything
    (``"threshold": null``, ``"image": "x"``, a probability as text), and a reader of many
    records must skip it, never die on it."""
    entry = item["entry"]
    if item.get("broken"):
        raise UnrenderableRecord(item["broken"])
    try:
        report = diagnostic_report(entry, item["site"], item["review"], item["outcome"])
        study = imaging_study(entry["device_id"], entry["payload"], item["site"])
    except Exception as exc:  # whatever the stored fields make the builders raise
        raise UnrenderableRecord(reason(exc)) from exc
    return report, study
