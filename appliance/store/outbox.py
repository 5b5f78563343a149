"""The deliveries outbox: what each destination must receive, written in the transaction
that creates it.

A destination is a kind of receiver, not an address: ``hub`` (the programme's central
hub, sent by ``appliance.sync``) and ``pacs`` (DICOM results, queued by ``pacs_outbox.py``
one row per configured PACS, sent by ``appliance.pacs``); each has its own sender. Every row
belongs to one destination, so one result can be pending for one receiver and
acknowledged by another.

``record_result`` and ``record_review`` take the caller's connection, inside its write
transaction, so a crash can never leave a result without its outbox entry (or the other
way round). Each entry has a stable id and a revision:

- a result is ``result:<uuid4>``, revision 1 (a later revision only when what is known
  of its image changes, e.g. a patient typed in);
- the reviews of one image share ``review:<image sha256>``; each new review is the next
  revision and supersedes the pending older ones (the receiver keeps the highest);
- a confirmatory outcome is ``outcome:<uuid4>``, revision 1: outcomes are append-only
  and every one is kept (a correction is a new outcome); a treatment started for it
  (``record_treatment``) is its next revision, the outcome as sent plus ``treatment``;
- the box's monitoring summary is ``monitor:summary``, belonging to no image; each new
  summary is the next revision and supersedes the pending older one.

Nothing is deleted: a sender marks rows ``acked`` once its receiver has them durably,
and ``refused`` when its receiver refused that revision as malformed (with its reason,
``mark_refused``): a refused row is never sent again, and a later revision of the same
entry is a new pending row, tried again.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from appliance.store.clinic_day import configured_timezone
from appliance.store.db import utc_now
from appliance.store.eye_results import patient_eyes

HUB, PACS = "hub", "pacs"
DESTINATIONS = (HUB, PACS)
KINDS = ("result", "review", "outcome", "monitor")


@dataclass(frozen=True)
class Entry:
    row_id: int
    destination: str
    entry_id: str
    revision: int
    kind: str
    image_id: int | None
    payload: dict[str, Any]
    exported: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.entry_id, self.revision)


def _image_facts(conn: sqlite3.Connection, image_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT i.sha256, i.sop_instance_uid, i.modality, i.body_part, i.view_position,"
        " i.laterality, i.file_format, i.source, i.original_name, i.received_at,"
        " s.study_instance_uid,"
        " COALESCE(NULLIF(s.patient_id, ''), s.entered_patient_id) AS patient_id,"
        " COALESCE(NULLIF(s.patient_name, ''), s.entered_patient_name) AS patient_name,"
        " s.study_date,"
        " s.accession_number"
        " FROM images i JOIN studies s ON s.id = i.study_id WHERE i.id = ?",
        (image_id,),
    ).fetchone()
    return dict(row) if row is not None else {}


def _add(
    conn: sqlite3.Connection,
    *,
    destination: str,
    entry_id: str,
    revision: int,
    kind: str,
    local_id: int,
    image_id: int | None,
    payload: dict[str, Any],
) -> None:
    # The table has no CHECK on kind or destination (a new receiver must not need a
    # table rebuild): they are checked here.
    if destination not in DESTINATIONS or kind not in KINDS:
        raise ValueError(f"no {kind!r} deliveries to {destination!r}")
    conn.execute(
        "INSERT INTO outbox (destination, entry_id, revision, kind, local_id, image_id,"
        " payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            destination,
            entry_id,
            revision,
            kind,
            local_id,
            image_id,
            json.dumps(payload, separators=(",", ":")),
            utc_now(),
        ),
    )


def _result_payload(conn: sqlite3.Connection, result_id: int) -> dict[str, Any]:
    row = dict(conn.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone())
    image = _image_facts(conn, row["image_id"])
    # A retina photo: its patient's result per eye and overall that day (issue 24), as
    # the page, the slip and the SR give it. Only the image's latest result has one.
    eyes = patient_eyes(conn, row["image_id"], configured_timezone(conn))
    mine = eyes is not None and result_id in eyes.result_ids
    return {
        "image": image,
        **({"patient_eyes": eyes.summary(image.get("laterality"))} if mine else {}),
        "route": row["route"],
        "reason": row["reason"],
        "probability": row["probability"],
        "score": row["score"],
        "threshold": row["threshold"],
        "triage": row["triage"],
        "model": {
            "name": row["model_name"],
            "version": row["model_version"],
            "sha256": row["model_sha256"],
        },
        # Chest model that scored (adult/child) and how chosen; None: fundus or refusal.
        "population": row["population"],
        "population_source": row["population_source"],
        "backend": row["backend"],
        "heatmap_shown": row["heatmap_path"] is not None,  # never the map: was one shown
        "created_at": row["created_at"],
        "local_id": result_id,
        "image_id": row["image_id"],
    }


def record_result(conn: sqlite3.Connection, result_id: int, destination: str = HUB) -> str:
    """Queue a stored result (call inside the transaction that stored it)."""
    payload = _result_payload(conn, result_id)
    entry_id = f"result:{uuid.uuid4().hex}"
    _add(
        conn,
        destination=destination,
        entry_id=entry_id,
        revision=1,
        kind="result",
        local_id=result_id,
        image_id=payload.pop("image_id"),
        payload=payload,
    )
    return entry_id


def _next_revision(conn: sqlite3.Connection, destination: str, entry_id: str) -> int:
    """The revision after the highest one held; the pending older ones are superseded."""
    revision = conn.execute(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM outbox WHERE destination = ? AND entry_id = ?",
        (destination, entry_id),
    ).fetchone()[0]
    conn.execute(
        "UPDATE outbox SET state = 'superseded'"
        " WHERE destination = ? AND entry_id = ? AND state = 'pending'",
        (destination, entry_id),
    )
    return int(revision)


def _result_entry_id(conn: sqlite3.Connection, destination: str, result_id: int) -> str | None:
    row = conn.execute(
        "SELECT entry_id FROM outbox WHERE destination = ? AND kind = 'result' AND local_id = ?"
        " ORDER BY revision LIMIT 1",
        (destination, result_id),
    ).fetchone()
    return row["entry_id"] if row is not None else None


def refresh_result(
    conn: sqlite3.Connection, result_id: int, destination: str = HUB
) -> tuple[str, int] | None:
    """Send a result again with what is now known of its image (e.g. a patient typed in
    later): same entry id, next revision; a pending older revision is superseded."""
    entry_id = _result_entry_id(conn, destination, result_id)
    if entry_id is None:
        return None
    revision = _next_revision(conn, destination, entry_id)
    payload = _result_payload(conn, result_id)
    _add(
        conn,
        destination=destination,
        entry_id=entry_id,
        revision=revision,
        kind="result",
        local_id=result_id,
        image_id=payload.pop("image_id"),
        payload=payload,
    )
    return entry_id, revision


def record_review(
    conn: sqlite3.Connection, review_id: int, destination: str = HUB
) -> tuple[str, int]:
    """Queue a review; it supersedes the image's earlier reviews (same id, next revision)."""
    row = conn.execute(
        "SELECT r.*, u.username FROM reviews r JOIN users u ON u.id = r.user_id WHERE r.id = ?",
        (review_id,),
    ).fetchone()
    image = _image_facts(conn, row["image_id"])
    entry_id = f"review:{image['sha256']}"
    revision = _next_revision(conn, destination, entry_id)
    payload = {
        "image": {"sha256": image["sha256"]},
        "result_entry": _result_entry_id(conn, destination, row["result_id"]),
        "verdict": row["verdict"],
        "reasons": json.loads(row["reasons"]),
        "note": row["note"],
        "reviewer": row["username"],
        "created_at": row["created_at"],
        "local_id": review_id,
    }
    _add(
        conn,
        destination=destination,
        entry_id=entry_id,
        revision=revision,
        kind="review",
        local_id=review_id,
        image_id=row["image_id"],
        payload=payload,
    )
    return entry_id, revision


def record_outcome(conn: sqlite3.Connection, outcome_id: int, destination: str = HUB) -> str:
    """Queue a confirmatory outcome (call inside the transaction that stored it)."""
    row = conn.execute("SELECT * FROM outcomes WHERE id = ?", (outcome_id,)).fetchone()
    image = _image_facts(conn, row["image_id"])
    result = conn.execute(
        "SELECT id, model_name, model_version, probability, threshold FROM results"
        " WHERE image_id = ? ORDER BY id DESC LIMIT 1",
        (row["image_id"],),
    ).fetchone()
    entry_id = f"outcome:{uuid.uuid4().hex}"
    scored = result is not None and result["probability"] is not None
    model = {"name": result["model_name"], "version": result["model_version"]} if scored else {}
    payload = {
        "image": {"sha256": image["sha256"]},
        "result_entry": _result_entry_id(conn, destination, result["id"]) if result else None,
        "model": model,
        # Whether the box had flagged the image: the hub can see verification bias.
        "flagged": result["probability"] >= result["threshold"] if scored else None,
        "test": row["test"],
        "result": row["result"],
        "positive": None if row["positive"] is None else bool(row["positive"]),
        "grade": row["grade"],
        "tested_on": row["tested_on"],
        "entered_by": row["entered_by"],
        "created_at": row["created_at"],
        "local_id": outcome_id,
    }
    _add(
        conn,
        destination=destination,
        entry_id=entry_id,
        revision=1,
        kind="outcome",
        local_id=outcome_id,
        image_id=row["image_id"],
        payload=payload,
    )
    return entry_id


def record_treatment(conn: sqlite3.Connection, treatment_id: int, destination: str = HUB) -> str:
    """Queue a treatment start as the next revision of its outcome's entry (call inside
    the transaction that stored it): the outcome as first sent, plus ``treatment``. An
    older hub keeps the field as sent (an extra field); a newer one reads it."""
    row = conn.execute("SELECT * FROM treatments WHERE id = ?", (treatment_id,)).fetchone()
    sent = conn.execute(
        "SELECT entry_id, payload FROM outbox WHERE destination = ? AND kind = 'outcome'"
        " AND local_id = ? ORDER BY revision DESC LIMIT 1",
        (destination, row["outcome_id"]),
    ).fetchone()
    if sent is None:  # an outcome from before the outbox knew outcomes: queue it now
        entry_id = record_outcome(conn, row["outcome_id"], destination)
        sent = conn.execute(
            "SELECT entry_id, payload FROM outbox WHERE destination = ? AND entry_id = ?",
            (destination, entry_id),
        ).fetchone()
    payload = json.loads(sent["payload"])
    payload["treatment"] = {
        "started_on": row["started_on"],
        "site": row["site"],
        "entered_by": row["entered_by"],
        "created_at": row["created_at"],
    }
    _add(
        conn,
        destination=destination,
        entry_id=sent["entry_id"],
        revision=_next_revision(conn, destination, sent["entry_id"]),
        kind="outcome",
        local_id=row["outcome_id"],
        image_id=row["image_id"],
        payload=payload,
    )
    return str(sent["entry_id"])


MONITOR_ENTRY = "monitor:summary"


def record_monitor(
    conn: sqlite3.Connection, summary: dict[str, Any], destination: str = HUB
) -> tuple[str, int]:
    """Queue the box's monitoring summary; it supersedes a pending older one."""
    revision = _next_revision(conn, destination, MONITOR_ENTRY)
    _add(
        conn,
        destination=destination,
        entry_id=MONITOR_ENTRY,
        revision=revision,
        kind="monitor",
        local_id=revision,
        image_id=None,
        payload=summary,
    )
    return MONITOR_ENTRY, revision


def last_monitor_payload(conn: sqlite3.Connection, destination: str = HUB) -> dict | None:
    """The summary queued last (sent or not), to tell whether a new one says anything new."""
    sql = "SELECT payload FROM outbox WHERE destination = ? AND entry_id = ? ORDER BY revision"
    row = conn.execute(sql + " DESC LIMIT 1", (destination, MONITOR_ENTRY)).fetchone()
    return json.loads(row["payload"]) if row is not None else None


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        row_id=row["id"],
        destination=row["destination"],
        entry_id=row["entry_id"],
        revision=row["revision"],
        kind=row["kind"],
        image_id=row["image_id"],
        payload=json.loads(row["payload"]),
        exported=row["exported_at"] is not None,
    )


# Sent in this order; each later kind in batches of its own, so a hub that does not know
# it yet (a 400) still gets the results and reviews first, at every pass.
BATCHES = (("result", "review"), ("outcome",), ("monitor",))


def pending(conn: sqlite3.Connection, limit: int, destination: str = HUB) -> list[Entry]:
    """The next pending entries: every result before any review, then outcomes, then the
    monitoring summary; oldest first within each kind."""
    for kinds in BATCHES:
        rows: list[sqlite3.Row] = []
        for kind in kinds:  # a full batch asks the next kind for LIMIT 0: nothing
            rows += conn.execute(
                "SELECT * FROM outbox WHERE destination = ? AND state = 'pending' AND kind = ?"
                " ORDER BY id LIMIT ?",
                (destination, kind, limit - len(rows)),
            ).fetchall()
        if rows:
            return [_entry(row) for row in rows]
    return []


def pending_exported(
    conn: sqlite3.Connection, limit: int, after: int = 0, destination: str = HUB
) -> list[Entry]:
    """Pending entries that already left on a data-mule bundle (the receiver may have them)."""
    rows = conn.execute(
        "SELECT * FROM outbox WHERE destination = ? AND state = 'pending'"
        " AND exported_at IS NOT NULL AND id > ? ORDER BY id LIMIT ?",
        (destination, after, limit),
    ).fetchall()
    return [_entry(row) for row in rows]


def all_pending(conn: sqlite3.Connection, destination: str = HUB) -> list[Entry]:
    rows = conn.execute(
        "SELECT * FROM outbox WHERE destination = ? AND state = 'pending' ORDER BY kind, id",
        (destination,),
    ).fetchall()
    return [_entry(row) for row in rows]
