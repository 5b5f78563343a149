"""What the hub takes from a box: one declared schema per entry kind and version.

Checked at the door, before anything is stored: ``records.validate_entries`` (the
device API's ``/entries`` and data-mule bundles alike) and ``/models/status``. Code
behind the door may assume these shapes.

- Types are strict: ``"0.5"`` is not a probability, ``true`` is not a score, ``null``
  is a value only where a field says so.
- Ranges: a probability or threshold is a finite number in [0, 1], a score an integer
  0..100, a grade 0..4; counts are never negative.
- Text has a length limit per field; no text anywhere (declared or not) holds a control
  character other than tab and line breaks, or a lone surrogate: PostgreSQL refuses a
  NUL, and a page encoding a surrogate answers 500.
- Dates are ISO 8601 and start with a ``YYYY-MM-DD`` of ASCII digits (the hub takes the
  week and the day from them).
- Fields a box does not know yet (an older box) may be missing where the readers
  tolerate it; a field the readers rely on is required.

Unknown extra fields are **allowed but bounded**: a newer box may send more than this
hub knows, and refusing it would stop a programme upgrading its boxes before its hub.
They are stored as sent, never trusted: no reader of the hub reads a field that is not
declared here, and a hub that starts reading one declares it here first (a new schema
version). Bounded so that they cannot be used to store anything big: an entry's data is
at most ``MAX_DATA_BYTES`` as JSON, an object at most ``MAX_KEYS`` keys, a list at most
``MAX_ITEMS`` items, a text at most ``MAX_TEXT`` characters.

An entry may say its schema version in ``"v"`` (a whole number; 1 when absent, as every
box so far sends): a version this hub does not know is refused, not stored unchecked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

MAX_DATA_BYTES = 64 * 1024
MAX_KEYS = 64
MAX_ITEMS = 500
MAX_TEXT = 4000
MAX_KEY_CHARS = 64
MAX_MODELS_REPORTED = 200  # model versions one box may report (distribution.MAX_REPORTED)
# C0 controls but tab, LF and CR; DEL; lone surrogates (json.loads lets "\ud800" through)
FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _timestamp(value: str) -> str:
    try:
        if not DAY.match(value):
            raise ValueError(value)
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date and time as YYYY-MM-DDTHH:MM:SS") from None
    return value


def _day(value: str) -> str:
    try:
        if not DAY.fullmatch(value):
            raise ValueError(value)
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date as YYYY-MM-DD") from None
    return value


def Text(length: int) -> Any:  # noqa: N802 - a type, read as one
    return Annotated[str, Field(max_length=length)]


Timestamp = Annotated[str, Field(max_length=40), AfterValidator(_timestamp)]
Day = Annotated[str, Field(max_length=10), AfterValidator(_day)]
Probability = Annotated[float, Field(ge=0, le=1)]
Score = Annotated[int, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0, le=10**12)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
LocalId = Annotated[int, Field(ge=0, le=2**63 - 1)]


class Open(BaseModel):
    """Strict types; extra fields tolerated (bounded by ``bounded``, never read)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


# -- the image an entry is about ------------------------------------------------------
class ImageRef(Open):
    sha256: Sha256


class ImageFacts(ImageRef):
    """A result's image (``outbox._image_facts``); identifiers may be keyed hashes."""

    sop_instance_uid: Text(128) | None = None
    study_instance_uid: Text(128) | None = None
    modality: Text(16) | None = None
    body_part: Text(64) | None = None
    view_position: Text(16) | None = None
    laterality: Text(16) | None = None
    file_format: Text(32) | None = None
    source: Text(64) | None = None
    original_name: Text(1024) | None = None
    received_at: Text(40) | None = None
    patient_id: Text(128) | None = None
    patient_name: Text(256) | None = None
    study_date: Text(32) | None = None
    accession_number: Text(128) | None = None


class ModelRef(Open):
    name: Text(100) | None = None
    version: Text(64) | None = None
    sha256: Text(64) | None = None


# -- a retina photo's patient result (issue 24; wire/eyes.py states it) ---------------
Triage = Literal["urgent", "review", "routine"]


class EyeSummary(Open):
    state: Literal["graded", "retake", "no photo"]
    photos: Count | None = None
    triage: Triage | None = None
    score: Score | None = None
    probability: Probability | None = None
    threshold: Probability | None = None
    image_sha256: Sha256 | None = None


class PatientResult(Open):
    eye: Literal["R", "L"] | None = None
    triage: Triage | None = None
    score: Score | None = None
    probability: Probability | None = None
    threshold: Probability | None = None


class PatientEyes(Open):
    """Each eye's result from its best gradable photo and the patient's (the worse eye),
    over the patient's retina photos of one clinic day; sent with each of them."""

    this_eye: Literal["R", "L"] | None = None
    day: Day | None = None
    eyes: dict[Literal["R", "L"], EyeSummary]
    patient: PatientResult | None = None
    unassigned: Count | None = None


# -- one schema per kind (version 1) --------------------------------------------------
class ResultV1(Open):
    image: ImageFacts
    route: Literal["chest_xray", "fundus", "refused"]
    reason: Text(500) | None = None
    probability: Probability | None = None
    score: Score | None = None
    threshold: Probability | None = None
    triage: Triage | None = None
    model: ModelRef | None = None
    patient_eyes: PatientEyes | None = None  # a retina photo's: per eye and patient
    population: Text(32) | None = None
    population_source: Text(32) | None = None
    backend: Text(64) | None = None
    heatmap_shown: bool | None = None
    created_at: Timestamp
    local_id: LocalId | None = None
    deidentified: bool | None = None


def _scored_result(data: ResultV1) -> tuple[str, str] | None:
    """A probability is read against its threshold and shown as its score."""
    if data.probability is not None:
        for name in ("threshold", "score"):
            if getattr(data, name) is None:
                return name, f"a scored result (with a probability) needs its {name}"
    return None


class ReviewV1(Open):
    image: ImageRef
    result_entry: Text(200) | None = None
    verdict: Literal["agree", "disagree"]
    reasons: list[Text(100)] = Field(default_factory=list, max_length=50)
    note: Text(2000) | None = None
    reviewer: Text(100) | None = None
    created_at: Timestamp
    local_id: LocalId | None = None
    deidentified: bool | None = None


OUTCOME_RESULT = r"^(positive|negative|indeterminate|withdrawn|grade [0-4])$"  # read_result's


class Treatment(Open):
    """Treatment started for the outcome's patient (issue 29): a later revision of the
    outcome's entry carries it; an older box's outcomes have none."""

    started_on: Day
    site: Annotated[str, Field(min_length=1, max_length=100)]
    entered_by: Text(100) | None = None
    created_at: Timestamp | None = None


class OutcomeV1(Open):
    image: ImageRef
    result_entry: Text(200) | None = None
    model: ModelRef | None = None
    flagged: bool | None = None
    test: Annotated[str, Field(min_length=1, max_length=60)]
    result: Annotated[str, Field(pattern=OUTCOME_RESULT)]
    positive: bool | None = None
    grade: Annotated[int, Field(ge=0, le=4)] | None = None
    tested_on: Day
    entered_by: Text(100) | None = None
    created_at: Timestamp
    local_id: LocalId | None = None
    deidentified: bool | None = None
    treatment: Treatment | None = None


class ModelMonitor(Open):
    """One model in the summary: its facts, or the error that stopped them."""

    error: Text(1000) | None = None
    version: Text(64) | None = None
    threshold: Probability | None = None
    recent: Count | None = None
    positivity: Probability | None = None
    psi_validation: Annotated[float, Field(ge=0)] | None = None
    psi_site: Annotated[float, Field(ge=0)] | None = None


class CalibrationStatus(Open):
    version: Text(64) | None = None
    threshold: Probability | None = None
    source: Literal["calibrated", "site", "bundle"] | None = None
    calibrated_at: Timestamp | None = None
    n_positive: Count | None = None
    n_negative: Count | None = None


class Health(Open):
    disk_free_mb: Annotated[float, Field(ge=0)] | None = None
    temperature_c: Annotated[float, Field(ge=-100, le=200)] | None = None
    oldest_waiting_minutes: Annotated[float, Field(ge=0)] | None = None


class MonitorNotice(Open):
    code: Annotated[str, Field(min_length=1, max_length=64)]
    message: Text(2000) = ""
    model: Text(64) | None = None


ModelName = Annotated[str, Field(min_length=1, max_length=64)]


class MonitorV1(Open):
    generated_at: Timestamp
    models: dict[ModelName, ModelMonitor] = Field(default_factory=dict, max_length=32)
    refused: Probability | None = None
    calibration: dict[ModelName, CalibrationStatus] = Field(default_factory=dict, max_length=32)
    health: Health | None = None
    warnings: list[MonitorNotice] = Field(default_factory=list, max_length=100)
    deidentified: bool | None = None


SCHEMAS: dict[tuple[str, int], type[Open]] = {
    ("result", 1): ResultV1,
    ("review", 1): ReviewV1,
    ("outcome", 1): OutcomeV1,
    ("monitor", 1): MonitorV1,
}
CROSS_CHECKS = {ResultV1: _scored_result}


# -- checking ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    """Why one entry was not taken: the field (dotted path, e.g. ``calibration.cxr``)
    and a message that starts with it."""

    field: str
    message: str


def _refusal(field: str, problem: str) -> Refusal:
    field = field or "data"
    return Refusal(field, f"{field}: {problem}")


def _bounded(value: Any, path: str = "") -> Refusal | None:
    """Every value, declared or not: text, keys, lists and objects within bounds."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            return _refusal(path, f"text longer than {MAX_TEXT} characters")
        if FORBIDDEN.search(value):
            return _refusal(path, "text holds a control character or an invalid character")
    elif isinstance(value, dict):
        if len(value) > MAX_KEYS:
            return _refusal(path, f"more than {MAX_KEYS} fields")
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if len(key) > MAX_KEY_CHARS or FORBIDDEN.search(key):
                return _refusal(path, f"a field name that is not plausible: {key[:40]!r}")
            found = _bounded(item, where)
            if found:
                return found
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return _refusal(path, f"more than {MAX_ITEMS} items")
        for index, item in enumerate(value):
            found = _bounded(item, f"{path}.{index}")
            if found:
                return found
    return None


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "data"


# pydantic's words for the common mistakes, said as plainly as a hub admin needs them
PLAIN = {
    "missing": "required, but missing",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be text",
    "float_type": "must be a number",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "finite_number": "must be a finite number",
}


def _said(error: dict[str, Any]) -> str:
    return PLAIN.get(error["type"]) or str(error["msg"]).removeprefix("Value error, ")


def _from_pydantic(exc: ValidationError) -> Refusal:
    """The first problem's field; the message says up to three, each with its field."""
    errors = exc.errors(include_url=False, include_input=False)
    said = "; ".join(f"{_field(e['loc'])}: {_said(e)}" for e in errors[:3])
    if len(errors) > 3:
        said += f" (and {len(errors) - 3} more)"
    return Refusal(_field(errors[0]["loc"]), said)


def check_entry(kind: str, data: dict[str, Any], version: int = 1) -> Refusal | None:
    """None when ``data`` fits the schema of ``kind`` at ``version``, else why not."""
    schema = SCHEMAS.get((kind, version))
    if schema is None:
        known = sorted(v for k, v in SCHEMAS if k == kind)
        return _refusal("v", f"this hub knows version {known} of {kind} entries, not {version}")
    found = _bounded(data)
    if found:
        return found
    if len(json.dumps(data, separators=(",", ":"))) > MAX_DATA_BYTES:
        return _refusal("data", f"larger than {MAX_DATA_BYTES} bytes as JSON")
    try:
        parsed = schema.model_validate(data)
    except ValidationError as exc:
        return _from_pydantic(exc)
    cross = CROSS_CHECKS.get(schema)
    found_cross = cross(parsed) if cross else None
    return _refusal(*found_cross) if found_cross else None


# -- what a box runs (/models/status) ------------------------------------------------------
class ModelVersionState(Open):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    version: Annotated[str, Field(min_length=1, max_length=100)]
    state: Literal["active", "shadow", "installed", "refused"]


class ModelReportV1(Open):
    models: list[ModelVersionState] = Field(max_length=MAX_MODELS_REPORTED)


def model_report(body: Any) -> list[dict[str, str]]:
    """The versions a box reports, or ValueError naming the field (answered with 400)."""
    if not isinstance(body, dict):
        raise ValueError('expected {"models": [{"name", "version", "state"}, ...]}')
    found = _bounded(body)
    if found is None:
        try:
            report = ModelReportV1.model_validate(body)
        except ValidationError as exc:
            found = _from_pydantic(exc)
        else:
            return [{"name": m.name, "version": m.version, "state": m.state} for m in report.models]
    raise ValueError(found.message)
