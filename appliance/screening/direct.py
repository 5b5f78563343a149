"""``appliance screen``: one file through decode and the screener, nothing stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from appliance.errors import IngestError
from appliance.ingest.decode import decode_bytes
from appliance.ingest.dicom import dicom_record, read_dicom
from appliance.ingest.sniff import sniff
from appliance.screening.gate import age_in_years
from appliance.screening.pipeline import DECISION_SUPPORT, Screener
from appliance.screening.population import CLI

TAGS = ("modality", "body_part", "view_position", "laterality", "sop_class_uid")
# ``screen`` stores nothing, so there is no study page to choose on: the flag is the way.
NEEDS_POPULATION_CLI = (
    "Adult or child? This X-ray gives no age: screen it again with --population adult "
    "or --population child."
)


def screen_file(
    screener: Screener, path: Path, max_pixels: int, population: str | None = None
) -> dict[str, Any]:
    """The JSON object ``appliance screen --json`` prints for one file. ``population``
    (adult or child, ``--population``) counts only for an X-ray that gives no age."""
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
            "timings_ms": {"decode": _ms(started)},
            "decision_support": DECISION_SUPPORT,
        }
    decode_ms = _ms(started)
    result = screener.screen(image, tags, population=population, population_by=CLI).as_dict()
    if result["needs_population"]:
        result["reason"] = NEEDS_POPULATION_CLI
    result["timings_ms"] = {"decode": round(decode_ms, 2), **result["timings_ms"]}
    result["timings_ms"]["total"] = round(_ms(started), 2)
    return {"file": str(path), **result}


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
