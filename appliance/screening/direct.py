"""``appliance screen``: one file through decode and the screener, nothing stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.errors import IngestError
from appliance.ingest.decode import decode_bytes
from appliance.ingest.dicom import dicom_record, read_dicom
from appliance.ingest.sniff import sniff
from appliance.screening.gate import age_in_years
from appliance.screening.heatmaps import grey_map
from appliance.screening.pipeline import DECISION_SUPPORT, Screener
from appliance.screening.population import CLI

TAGS = ("modality", "body_part", "view_position", "laterality", "sop_class_uid")
# ``screen`` stores nothing, so there is no study page to choose on: the flag is the way.
NEEDS_POPULATION_CLI = (
    "Adult or child? This X-ray gives no age: screen it again with --population adult "
    "or --population child."
)


def screen_file(
    screener: Screener,
    path: Path,
    max_pixels: int,
    population: str | None = None,
    heatmap_dir: Path | None = None,
) -> dict[str, Any]:
    """The JSON object ``appliance screen --json`` prints for one file. ``population``
    (adult or child, ``--population``) counts only for an X-ray that gives no age.
    ``heatmap_dir``: write each scored image's map there (:func:`write_heatmap`)."""
    started = time.perf_counter()
    raw = Path(path).read_bytes()
    try:
        image = decode_bytes(raw, max_pixels)
        tags: dict[str, Any] = {}
        if sniff(raw[:512]) == "dicom":
            record = dicom_record(
                read_dicom(raw), sha256="0" * 64, size_bytes=len(raw), source="cli"
            )
            tags = {name: getattr(record, name) for name in TAGS}
            tags["patient_age_years"] = age_in_years(
                record.patient_age, record.patient_birth_date, record.study_date
            )
    except IngestError as exc:
        return {
            "file": str(path),
            "route": "refused",
            "reason": exc.reason,
            "hints": [],
            "probability": None,
            "score": None,
            "triage": None,
            "model": None,
            "population": None,
            "population_source": None,
            "needs_population": False,
            "backend": None,
            "heatmap": None,
            "heatmap_validated": None,
            "finding": None,
            "flagged": None,
            "timings_ms": {"decode": _ms(started)},
            "decision_support": DECISION_SUPPORT,
        }
    decode_ms = _ms(started)
    screened = screener.screen(image, tags, population=population, population_by=CLI)
    result = screened.as_dict()
    result["heatmap"] = None
    if heatmap_dir is not None and screened.heat is not None:
        result["heatmap"] = str(
            write_heatmap(
                Path(heatmap_dir), Path(path).name, grey_map(screened.heat, image.pixels.shape[:2])
            )
        )
    if result["needs_population"]:
        result["reason"] = NEEDS_POPULATION_CLI
    result["timings_ms"] = {"decode": round(decode_ms, 2), **result["timings_ms"]}
    result["timings_ms"]["total"] = round(_ms(started), 2)
    return {"file": str(path), **result}


def write_heatmap(heatmap_dir: Path, file_name: str, grey: np.ndarray) -> Path:
    """``DIR/<file name>.heatmap.png``: 8-bit grey at the image's own size, 0 = no
    evidence, 255 = the strongest the model showed on held-out images. Written for
    every scored image, maps not validated included (the JSON's ``heatmap_validated``
    and hint say so): the maintainers measure those maps with it."""
    heatmap_dir.mkdir(parents=True, exist_ok=True)
    target = heatmap_dir / f"{file_name}.heatmap.png"
    ok, encoded = cv2.imencode(".png", grey)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    target.write_bytes(encoded.tobytes())
    return target


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
