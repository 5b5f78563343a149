"""The Secondary Capture: what the nurse saw, as a DICOM image any PACS viewer shows.

The stored preview, with the heatmap laid over it where one was shown, under a banner
burned into the pixels ("AI decision support — not for diagnosis", the finding, score
and model), so no viewer can show the picture without the warning. RGB, 8 bits,
uncompressed (Explicit VR Little Endian): every PACS stores it.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from appliance import __version__
from appliance.pacs.facts import ResultFacts
from appliance.wire.codes import BANNER, finding_meaning

MANUFACTURER = "Open screening appliance"
SC_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
HEATMAP_OPACITY = 0.45
ROUTE_BODY_PARTS = {"chest_xray": "CHEST", "fundus": "EYE"}
UNPAIRED = ("CHEST",)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in FONT_FILES:
        if Path(name).exists():
            return ImageFont.truetype(name, size)
    return ImageFont.load_default(size)  # Pillow's own font: has the em dash too


def person_name(text: str | None) -> str | None:
    """A name typed on the page as a DICOM PN: all of it the family name (a trailing
    caret says so) unless it already has PN components."""
    if not text:
        return None
    return text if "^" in text else f"{text.strip()}^"


def summary_line(facts: ResultFacts) -> str:
    result = facts.result
    if result["probability"] is None:
        return f"Not screened: {result['reason'] or result['route']}"
    finding = finding_meaning(result["model_name"], result["model_version"],
                              result["model_name"])
    return (
        f"{finding}: score {result['score']}/100"
        f" (threshold {round(result['threshold'] * 100)}), triage {result['triage']}"
        f" - {result['model_name']} {result['model_version']}"
    )


def captured_pixels(facts: ResultFacts) -> np.ndarray:
    """The preview (grey made RGB), the heatmap over it, the banner above it."""
    if facts.preview is not None:
        picture = Image.open(facts.preview).convert("RGB")
    else:  # no preview (should not happen once screened): a grey field still warns
        picture = Image.new("RGB", (512, 512), (40, 40, 40))
    if facts.heatmap is not None:
        heat = Image.open(facts.heatmap).convert("RGBA").resize(picture.size)
        alpha = np.asarray(heat)[..., 3:4].astype(np.float32) / 255 * HEATMAP_OPACITY
        blended = np.asarray(picture) * (1 - alpha) + np.asarray(heat)[..., :3] * alpha
        picture = Image.fromarray(blended.round().astype(np.uint8))
    width = max(picture.width, 480)
    size = max(14, width // 40)
    band = int(size * 3.4)
    canvas = Image.new("RGB", (width, picture.height + band), (0, 0, 0))
    canvas.paste(picture, ((width - picture.width) // 2, band))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, band), fill=(176, 0, 32))
    draw.text((size // 2, size // 3), BANNER, fill=(255, 255, 255), font=_font(size))
    small = _font(max(10, int(size * 0.8)))
    draw.text((size // 2, int(size * 1.8)), summary_line(facts), fill=(255, 255, 255), font=small)
    pixels = np.asarray(canvas)
    # Even rows and columns: some viewers mis-draw odd-sized RGB frames.
    return np.ascontiguousarray(pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2])


def build_capture(facts: ResultFacts) -> pydicom.Dataset:
    study = facts.study
    pixels = captured_pixels(facts)
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        # highdicom asks for an orientation; the preview's is unknown (a fundus photo has
        # none): emptied below, as Type 2 allows.
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),
        study_instance_uid=study["study_instance_uid"],
        series_instance_uid=facts.sc_series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=facts.sc_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id=study["shown_patient_id"] or None,
        patient_name=person_name(study["shown_patient_name"]),
        patient_birth_date=study.get("patient_birth_date") or None,
        accession_number=study["accession_number"] or None,
        study_date=study["study_date"] or None,
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    sc.PatientOrientation = None
    body_part = facts.image.get("body_part") or (facts.source or {}).get("BodyPartExamined")
    body_part = body_part or ROUTE_BODY_PARTS.get(facts.result["route"])
    if body_part:
        sc.BodyPartExamined = body_part  # so a reader knows whether Laterality applies
    if facts.image.get("laterality") in ("L", "R"):
        sc.Laterality = facts.image["laterality"]
    elif body_part not in UNPAIRED:
        sc.Laterality = None  # Type 2C, empty: a paired (or unknown) part, side not known
    sc.SeriesDescription = "AI decision support (not for diagnosis)"
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "Preview with AI heatmap and decision-support banner"
    sc.ConversionType = "WSD"
    sc.SoftwareVersions = __version__
    sc.Modality = "OT"
    if facts.source is not None and "SOPInstanceUID" in facts.source:
        _copy_patient(facts.source, sc)
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID = facts.source.SOPClassUID
        ref.ReferencedSOPInstanceUID = facts.source.SOPInstanceUID
        sc.SourceImageSequence = [ref]
    return sc


def _copy_patient(source: pydicom.Dataset, target: pydicom.Dataset) -> None:
    """What the device sent wins over the store's copy (same study, same patient)."""
    for keyword in (
        "SpecificCharacterSet",  # first: the names below are in its encoding
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        if keyword in source and source.data_element(keyword).value not in (None, ""):
            setattr(target, keyword, source.data_element(keyword).value)
