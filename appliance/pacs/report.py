"""The Structured Report: TID 1500 (Measurement Report) in a Comprehensive 3D SR.

Why TID 1500 and not a free-form Comprehensive SR: IHE's AI Results profile (AIR)
encodes an algorithm's results as a TID 1500 measurement report, with the algorithm
named in each group (TID 4019) and a tracking identifier per finding, so an AIR-aware
viewer or an Image Display actor finds our score, finding and model where it looks for
any AI result; a hand-made Comprehensive SR tree would be read by no one but us.
What AIR asks beyond that (regions, segmentations, parametric maps) we do not have: the
heatmap is a picture for people, sent as the Secondary Capture, not a measurement.

The tree: observation context (the model as the observing device), procedure reported,
the image library (the source image, else the Secondary Capture), one measurement group
(tracking id, finding type, algorithm name and version, probability, score 0-100 and
threshold as numbers, the finding as flagged or not, triage), and TID 1500's
"Qualitative Evaluations" container holding the decision-support statement and, in
later versions, the clinician's review and the confirmatory outcome as text. Each
version is a new instance in the same series naming the one before it
(Predecessor Documents Sequence).
"""

from __future__ import annotations

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from appliance import __version__
from appliance.pacs.capture import MANUFACTURER, SR_SERIES_NUMBER
from appliance.pacs.facts import ResultFacts, stable_uid
from appliance.wire import codes as ours
from appliance.wire import eyes

QUALITATIVE_EVALUATIONS = pydicom.sr.coding.Code("C0034375", "UMLS", "Qualitative Evaluations")


def _code(concept: ours.Concept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(concept.code, concept.scheme, concept.meaning)


def _group(
    facts: ResultFacts, images: list[pydicom.Dataset]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    result = facts.result
    algorithm = hd.sr.AlgorithmIdentification(
        name=result["model_name"] or "none", version=result["model_version"] or "none"
    )
    finding = ours.finding(result["model_name"], result["model_version"]) or ours.NO_FINDING
    measurements, evaluations = [], []
    if result["probability"] is not None:
        no_units = codes.UCUM.NoUnits
        for concept, value in (
            (ours.PROBABILITY, result["probability"]),
            (ours.SCORE, result["score"]),
            (ours.THRESHOLD, result["threshold"]),
        ):
            measurements.append(
                hd.sr.Measurement(
                    name=_code(concept), value=float(value), unit=no_units, algorithm_id=algorithm
                )
            )
        flagged = result["probability"] >= result["threshold"]
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                _code(finding), _code(ours.FLAGGED if flagged else ours.NOT_FLAGGED)
            )
        )
        triage = ours.TRIAGES.get(result["triage"])
        if triage is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(_code(ours.TRIAGE), _code(triage)))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=stable_uid("tracking", facts.sha, facts.result["id"]),
            identifier=f"{result['model_name'] or result['route']} result {result['id']}",
        ),
        finding_type=_code(finding),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(images[0])],
    )


PROJECTION = ("CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA")


def _library_view(image: pydicom.Dataset) -> pydicom.Dataset | None:
    """The image as TID 1601 describes it, or None where it cannot be described: for a
    projection radiograph it wants the orientation and the imager's pixel spacing. A CR
    without Imager Pixel Spacing gives it in Pixel Spacing (the CR module's own, at the
    imager plane unless calibrated); with neither, the image is left out of the library
    (the measurement group still references it)."""
    if image.get("Modality") not in PROJECTION:
        return image
    orientation = image.get("PatientOrientation")
    spacing = image.get("ImagerPixelSpacing") or (
        image.get("PixelSpacing") if image.get("Modality") == "CR" else None
    )
    if not orientation or len(orientation) != 2 or not spacing:
        return None
    view = pydicom.Dataset()
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "Modality",
        "Rows",
        "Columns",
        "StudyDate",
        "StudyTime",
        "ContentDate",
        "ContentTime",
        "FrameOfReferenceUID",
        "PatientOrientation",
    ):
        if keyword in image:
            setattr(view, keyword, image.data_element(keyword).value)
    view.ImagerPixelSpacing = spacing
    return view


def statements(facts: ResultFacts) -> list[str]:
    """The report's text: the warning first, then what people said of the result."""
    lines = [ours.DECISION_SUPPORT]
    result = facts.result
    if result["probability"] is None:
        lines.append(f"Not screened: {result['reason'] or result['route']}.")
    else:
        lines.append(
            f"AI score {result['score']}/100 (probability {result['probability']:.3f},"
            f" threshold {result['threshold']:.3f}), triage {result['triage']};"
            f" model {result['model_name']} {result['model_version']}."
        )
    if facts.eyes is not None:
        lines.append(eyes_statement(facts))
    if facts.review:
        review = facts.review
        reasons = ", ".join(review["reasons"]) or "no reason given"
        lines.append(
            f"Clinician review {review['created_at'][:16]} by {review['username']}:"
            f" {review['verdict']} ({reasons})" + (f": {review['note']}" if review["note"] else ".")
        )
    if facts.outcome:
        outcome = facts.outcome
        lines.append(
            f"Confirmatory {outcome['test']} on {outcome['tested_on']}: {outcome['result']}."
        )
    return lines


def eyes_statement(facts: ResultFacts) -> str:
    """A retina photo's eye and its patient's result per eye that day, as the study page,
    the slip and the hub give them (store/eye_results.py; one text: wire/eyes.py)."""
    return eyes.statement(facts.eyes.summary(facts.image.get("laterality")))


def build_report(
    facts: ResultFacts, capture: pydicom.Dataset, *, with_capture: bool = True
) -> hd.sr.Comprehensive3DSR:
    """The SR of ``facts.version``; it names the capture where that is sent too (or
    where there is no source DICOM: a photo's SR has no other image to point at)."""
    images = [facts.source] if facts.source is not None else []
    if with_capture or not images:
        images.append(capture)
    library = [view for view in map(_library_view, images) if view is not None]
    result = facts.result
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=facts.device_uid,
            name=f"{result['model_name']} {result['model_version']}",
            manufacturer_name=MANUFACTURER,
            model_name=result["model_name"] or "none",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_code(ours.PROCEDURES.get(result["route"], ours.OTHER_PROCEDURE)),
        imaging_measurements=[_group(facts, images)],
        title=codes.DCM.ImagingMeasurementReport,
        referenced_images=library or None,
    )
    text = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    text.ContentSequence = [
        hd.sr.TextContentItem(
            name=codes.DCM.Comment,
            value=line[:1000],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for line in statements(facts)
    ]
    report[0].ContentSequence.append(text)
    previous = []
    if facts.version > 1:  # name the version before (built the same way: the same UIDs)
        before = pydicom.Dataset()
        before.StudyInstanceUID = capture.StudyInstanceUID
        before.SeriesInstanceUID = facts.sr_series_uid
        before.SOPClassUID = Comprehensive3DSRStorage
        before.SOPInstanceUID = facts.sr_uid_of(facts.version - 1)
        previous.append(before)
    sr = hd.sr.Comprehensive3DSR(
        evidence=images,
        content=report,
        series_instance_uid=facts.sr_series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=facts.sr_uid,
        instance_number=facts.version,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # decision support: never a final, verified report
        is_verified=False,
        previous_versions=previous or None,
    )
    scheme = pydicom.Dataset()  # our private scheme, declared as PS3.3 C.12.1.1.6 asks
    scheme.CodingSchemeDesignator = ours.LOCAL_SCHEME
    scheme.CodingSchemeName = "Open screening appliance local codes"
    sr.CodingSchemeIdentificationSequence = [scheme]
    if facts.source is not None and "SpecificCharacterSet" in facts.source:
        sr.SpecificCharacterSet = facts.source.SpecificCharacterSet
    sr.SeriesDescription = "AI decision support report (not for diagnosis)"
    sr.SoftwareVersions = __version__
    return sr
