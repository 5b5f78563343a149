"""``appliance training export``: the box's confirmed images, de-identified, labelled and
signed, for the programme to improve its models (issue 27; the format is
appliance/wire/training_export.py).

What may leave, decided in :func:`select` (reads the database, writes nothing):
- only screened images (a scored result), of ``--model`` and from ``--since`` if given;
- only with consent, as the site's ``training_consent`` says: ``never``: none;
  ``ask``: images of studies whose latest answer on the study page is yes;
  ``always``: all (a national approval covers them);
- only with a label: a confirmatory outcome (monitoring/outcomes.py; per test the latest
  result, positive when any test is, a DR grade from 2 up), else a clinician's review
  as a weaker label (``label_source`` = review: agreeing with a flagged result is 1,
  disagreeing with it 0, and the other way round for a result not flagged).

Writing (:func:`export`) builds everything in ``DIR/.partial-<id>`` and renames it to
``DIR/<id>`` only once every file is written and synced: a full disk or an unwritable
folder leaves nothing behind and says so. The export is audited.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import IngestError
from appliance.ingest.decode import decode_file
from appliance.ingest.headers import ImageLimits
from appliance.monitoring.outcomes import TESTS
from appliance.store.clinic_day import clinic_zone
from appliance.store.consent import POLICIES, consented_studies
from appliance.store.db import Store, audit
from appliance.store.files import fsync_dir
from appliance.store.patient_fields import PATIENT_ID_SQL
from appliance.training.pixels import png_bytes, text_warning
from appliance.wire import training_export as fmt
from appliance.wire.csv_safe import safe_row
from appliance.wire.secret_files import random_secret

KEY_FILE = "secrets/training_export_ed25519"
SALT_FILE = "secrets/training_patient_salt"
TEXT_WARNING = "may carry burned-in text"

CANDIDATES_SQL = f"""
    SELECT i.id AS image_id, i.study_id, i.stored_path, i.laterality, i.received_at,
           s.study_date, {PATIENT_ID_SQL} AS patient_id,
           r.model_name, r.model_version, r.score, r.population
    FROM images i JOIN studies s ON s.id = i.study_id
    JOIN results r ON r.id = (SELECT MAX(id) FROM results WHERE image_id = i.id)
    WHERE r.route != 'refused' AND r.score IS NOT NULL AND r.model_name IS NOT NULL
    ORDER BY i.id
"""
# Per image and test, the latest outcome with a positive or negative reading.
OUTCOMES_SQL = """
    SELECT image_id, test, positive FROM outcomes o
    WHERE o.id = (SELECT MAX(id) FROM outcomes l WHERE l.image_id = o.image_id
                  AND l.test = o.test)
      AND positive IS NOT NULL
"""
# Per image, its latest review and the result it reviewed.
REVIEWS_SQL = """
    SELECT v.image_id, v.verdict, r.probability, r.threshold FROM reviews v
    JOIN results r ON r.id = v.result_id
    WHERE v.id = (SELECT MAX(id) FROM reviews l WHERE l.image_id = v.image_id)
      AND r.probability IS NOT NULL AND r.threshold IS NOT NULL
"""


@dataclass(frozen=True)
class Label:
    value: int  # 1 or 0
    source: str  # outcome or review
    test: str = ""  # the confirmatory test(s) that gave it


@dataclass
class Selection:
    chosen: list[tuple[dict[str, Any], Label]] = field(default_factory=list)
    skipped_no_consent: int = 0
    skipped_no_outcome: int = 0


@dataclass
class ExportReport:
    images: int = 0
    labelled: int = 0  # by a confirmatory outcome
    weak: int = 0  # by a clinician's review only
    skipped_no_consent: int = 0
    skipped_no_outcome: int = 0
    skipped_unreadable: int = 0
    export_id: str | None = None
    to: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "labelled": self.labelled,
            "skipped_no_consent": self.skipped_no_consent,
            "skipped_no_outcome": self.skipped_no_outcome,
            "to": str(self.to) if self.to else None,
            "weak": self.weak,
            "skipped_unreadable": self.skipped_unreadable,
            "warnings": self.warnings,
        }


# -- what may leave -----------------------------------------------------------------------
def outcome_labels(conn: sqlite3.Connection) -> dict[int, Label]:
    tests: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for row in conn.execute(OUTCOMES_SQL):
        tests[row["image_id"]].append((row["test"], int(row["positive"])))
    labels = {}
    for image_id, readings in tests.items():
        value = max(positive for _, positive in readings)
        named = sorted({TESTS.get(t, t) for t, positive in readings if positive == value})
        labels[image_id] = Label(value, "outcome", "; ".join(named))
    return labels


def review_labels(conn: sqlite3.Connection) -> dict[int, Label]:
    labels = {}
    for row in conn.execute(REVIEWS_SQL):
        flagged = row["probability"] >= row["threshold"]
        value = flagged if row["verdict"] == "agree" else not flagged
        labels[row["image_id"]] = Label(int(value), "review")
    return labels


def taken_on(row: dict[str, Any], timezone_name: str) -> date:
    """The clinic's date of the image: the study's date, else the day it arrived there."""
    try:
        return datetime.strptime((row["study_date"] or "").strip(), "%Y%m%d").date()
    except ValueError:
        received = datetime.fromisoformat(row["received_at"])
        if received.tzinfo is None:
            received = received.replace(tzinfo=timezone.utc)
        return received.astimezone(clinic_zone(timezone_name)).date()


def select(
    conn: sqlite3.Connection,
    policy: str,
    *,
    model: str | None = None,
    since: date | None = None,
    timezone_name: str = "UTC",
) -> Selection:
    """The images that may leave, each with its label, and how many may not and why."""
    if policy not in POLICIES:
        raise fmt.TrainingExportError(f"training_consent {policy!r} is not one of {POLICIES}")
    consented = consented_studies(conn) if policy == "ask" else set()
    outcomes, reviews = outcome_labels(conn), review_labels(conn)
    selection = Selection()
    for found in conn.execute(CANDIDATES_SQL):
        row = dict(found)
        if model is not None and row["model_name"] != model:
            continue
        row["taken_on"] = taken_on(row, timezone_name)
        if since is not None and row["taken_on"] < since:
            continue
        if policy == "never" or (policy == "ask" and row["study_id"] not in consented):
            selection.skipped_no_consent += 1
            continue
        label = outcomes.get(row["image_id"]) or reviews.get(row["image_id"])
        if label is None:
            selection.skipped_no_outcome += 1
            continue
        selection.chosen.append((row, label))
    return selection


# -- writing ------------------------------------------------------------------------------
def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())



def patient_key(salt: bytes, patient_id: str | None, png_sha256: str) -> str:
    """The same for every image of a patient on this box, and says nothing of who."""
    if not patient_id:
        return f"img-{png_sha256[:16]}"
    return hmac.new(salt, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def export_id(device_id: str, now: datetime) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", device_id).strip("._") or "box"
    return f"{safe}-{now.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


def _eye(laterality: str | None) -> str:
    eye = (laterality or "").strip().upper()
    return eye if eye in ("R", "L") else ""


def _warnings(flagged: dict[str, list[str]]) -> list[str]:
    found = []
    for reason, files in sorted(flagged.items()):
        shown = ", ".join(files[:20]) + (", …" if len(files) > 20 else "")
        found.append(f"{len(files)} images {TEXT_WARNING} ({reason}): {shown}")
    return found


def _fill(
    folder: Path,
    selection: Selection,
    data_dir: Path,
    limits: ImageLimits,
    salt: bytes,
    identity: dict[str, str],
    report: ExportReport,
) -> dict[str, str]:
    """Write the images and labels.csv into ``folder``; returns file -> sha256."""
    (folder / fmt.IMAGES).mkdir()
    files: dict[str, str] = {}
    flagged: dict[str, list[str]] = defaultdict(list)
    rows = []
    for row, label in selection.chosen:
        source = data_dir / row["stored_path"]
        try:
            decoded = decode_file(source, limits)
            data = png_bytes(decoded)
        except (IngestError, OSError, ValueError, MemoryError):
            report.skipped_unreadable += 1  # a stored file gone or spoilt: counted, said
            continue
        digest = hashlib.sha256(data).hexdigest()
        rel = f"{fmt.IMAGES}/{digest}.png"
        if rel in files:
            continue  # the same pixels from another file: once is enough
        _write(folder / rel, data)
        files[rel] = digest
        reason = text_warning(source, decoded)
        if reason:
            flagged[reason].append(rel)
        rows.append(
            [
                rel,
                label.value,
                label.source,
                label.test,
                row["model_name"],
                row["population"] or "",
                _eye(row["laterality"]),
                int(row["score"]),
                row["model_version"] or "",
                patient_key(salt, row["patient_id"], digest),
                identity["site"],
                identity["device_id"],
                row["taken_on"].isoformat(),
            ]
        )
        report.labelled += label.source == "outcome"
        report.weak += label.source == "review"
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(fmt.LABEL_COLUMNS)
    writer.writerows(safe_row(r) for r in rows)
    labels = text.getvalue().encode("utf-8")
    _write(folder / fmt.LABELS, labels)
    files[fmt.LABELS] = hashlib.sha256(labels).hexdigest()
    report.images = len(rows)
    report.warnings = _warnings(flagged)
    if report.skipped_unreadable:
        report.warnings.append(
            f"{report.skipped_unreadable} images could not be read on this box and were left out"
        )
    return files


def _refusal(exc: OSError, to: Path) -> fmt.TrainingExportError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"the disk at {to} is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"{to} cannot be written to (read-only or not allowed)"
    else:
        why = f"cannot write to {to} ({exc.strerror or exc})"
    return fmt.TrainingExportError(f"{why}: nothing was exported")


def export(
    store: Store,
    config: Config,
    to: Path,
    *,
    device_id: str,
    site: str,
    model: str | None = None,
    since: date | None = None,
    actor: str = "cli",
    now: datetime | None = None,
) -> ExportReport:
    """Write one export under ``to`` (see the module's docstring); nothing where no image
    may leave (``report.to`` is then None)."""
    policy = config.training_consent
    selection = select(
        store.conn(), policy, model=model, since=since, timezone_name=config.timezone
    )
    report = ExportReport(
        skipped_no_consent=selection.skipped_no_consent,
        skipped_no_outcome=selection.skipped_no_outcome,
    )
    if not selection.chosen:
        return report
    key = fmt.export_key(store.data_dir / KEY_FILE)
    salt = random_secret(store.data_dir / SALT_FILE)
    now = now or datetime.now(timezone.utc)
    report.export_id = export_id(device_id, now)
    to = Path(to)
    final, partial = to / report.export_id, to / f".partial-{report.export_id}"
    identity = {"device_id": device_id, "site": site}
    try:
        to.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise fmt.TrainingExportError(f"{final} already exists: export again in a second")
        partial.mkdir()
    except OSError as exc:
        raise _refusal(exc, to) from exc
    try:
        files = _fill(
            partial, selection, store.data_dir, ImageLimits.from_config(config), salt,
            identity, report,
        )
        if not report.images:
            shutil.rmtree(partial)
            return report
        manifest = {
            "format": fmt.FORMAT,
            "version": fmt.VERSION,
            "export_id": report.export_id,
            "device_id": device_id,
            "site": site,
            "created_at": now.astimezone(timezone.utc).isoformat(timespec="seconds"),
            "model": model,
            "since": since.isoformat() if since else None,
            "consent_policy": policy,
            "public_key": fmt.public_key_text(key),
            "counts": {"images": report.images, "labelled": report.labelled,
                       "weak": report.weak},
            "files": files,
            "warnings": report.warnings,
        }
        data = fmt.manifest_bytes(manifest)
        _write(partial / fmt.MANIFEST, data)
        _write(partial / fmt.SIGNATURE, fmt.sign(data, key))
        fsync_dir(partial / fmt.IMAGES)
        fsync_dir(partial)
        os.rename(partial, final)
        fsync_dir(to)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _refusal(exc, to) from exc
        raise
    report.to = final
    with store.write() as conn:
        counts = {k: v for k, v in report.as_dict().items() if k not in ("to", "warnings")}
        audit(conn, actor, "training.exported", f"export:{report.export_id}",
              json.dumps({"to": str(final), "policy": policy, "model": model, **counts}))
    return report
