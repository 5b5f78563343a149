"""The outbox: what the hub must receive, written in the transaction that creates it.

``record_result`` and ``record_review`` take the caller's connection, inside its write
transaction, so a crash can never leave a result without its outbox entry (or the other
way round). Each entry has a stable id and a revision:

- a result is ``result:<uuid4>``, revision 1 (results never change);
- the reviews of one image share ``review:<image sha256>``; each new review is the next
  revision and supersedes the pending older ones (the hub keeps the highest revision).

Nothing is deleted: the sync worker marks rows ``acked`` once the hub has them durably.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from appliance.store.db import Store, utc_now


@dataclass(frozen=True)
class Entry:
    row_id: int
    entry_id: str
    revision: int
    kind: str
    image_id: int
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
    entry_id: str,
    revision: int,
    kind: str,
    local_id: int,
    image_id: int,
    payload: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO sync_outbox (entry_id, revision, kind, local_id, image_id, payload,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
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
    return {
        "image": _image_facts(conn, row["image_id"]),
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
        "backend": row["backend"],
        "created_at": row["created_at"],
        "local_id": result_id,
        "image_id": row["image_id"],
    }


def record_result(conn: sqlite3.Connection, result_id: int) -> str:
    """Queue a stored result for the hub (call inside the transaction that stored it)."""
    payload = _result_payload(conn, result_id)
    entry_id = f"result:{uuid.uuid4().hex}"
    _add(
        conn,
        entry_id=entry_id,
        revision=1,
        kind="result",
        local_id=result_id,
        image_id=payload.pop("image_id"),
        payload=payload,
    )
    return entry_id


def refresh_result(conn: sqlite3.Connection, result_id: int) -> tuple[str, int] | None:
    """Send a result again with what is now known of its image (e.g. a patient typed in
    later): same entry id, next revision; a pending older revision is superseded."""
    first = conn.execute(
        "SELECT entry_id FROM sync_outbox WHERE kind = 'result' AND local_id = ?"
        " ORDER BY revision LIMIT 1",
        (result_id,),
    ).fetchone()
    if first is None:
        return None
    entry_id = first["entry_id"]
    revision = conn.execute(
        "SELECT MAX(revision) + 1 FROM sync_outbox WHERE entry_id = ?", (entry_id,)
    ).fetchone()[0]
    conn.execute(
        "UPDATE sync_outbox SET state = 'superseded' WHERE entry_id = ? AND state = 'pending'",
        (entry_id,),
    )
    payload = _result_payload(conn, result_id)
    _add(
        conn,
        entry_id=entry_id,
        revision=revision,
        kind="result",
        local_id=result_id,
        image_id=payload.pop("image_id"),
        payload=payload,
    )
    return entry_id, revision


def record_review(conn: sqlite3.Connection, review_id: int) -> tuple[str, int]:
    """Queue a review; it supersedes the image's earlier reviews (same id, next revision)."""
    row = conn.execute(
        "SELECT r.*, u.username FROM reviews r JOIN users u ON u.id = r.user_id WHERE r.id = ?",
        (review_id,),
    ).fetchone()
    image = _image_facts(conn, row["image_id"])
    result_entry = conn.execute(
        "SELECT entry_id FROM sync_outbox WHERE kind = 'result' AND local_id = ?",
        (row["result_id"],),
    ).fetchone()
    entry_id = f"review:{image['sha256']}"
    revision = conn.execute(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM sync_outbox WHERE entry_id = ?", (entry_id,)
    ).fetchone()[0]
    conn.execute(
        "UPDATE sync_outbox SET state = 'superseded' WHERE entry_id = ? AND state = 'pending'",
        (entry_id,),
    )
    payload = {
        "image": {"sha256": image["sha256"]},
        "result_entry": result_entry["entry_id"] if result_entry else None,
        "verdict": row["verdict"],
        "reasons": json.loads(row["reasons"]),
        "note": row["note"],
        "reviewer": row["username"],
        "created_at": row["created_at"],
        "local_id": review_id,
    }
    _add(
        conn,
        entry_id=entry_id,
        revision=revision,
        kind="review",
        local_id=review_id,
        image_id=row["image_id"],
        payload=payload,
    )
    return entry_id, revision


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        row_id=row["id"],
        entry_id=row["entry_id"],
        revision=row["revision"],
        kind=row["kind"],
        image_id=row["image_id"],
        payload=json.loads(row["payload"]),
        exported=row["exported_at"] is not None,
    )


def pending(conn: sqlite3.Connection, limit: int) -> list[Entry]:
    """The next pending entries: every result before any review, oldest first."""
    rows = conn.execute(
        "SELECT * FROM sync_outbox WHERE state = 'pending' AND kind = 'result' ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    if len(rows) < limit:
        rows += conn.execute(
            "SELECT * FROM sync_outbox WHERE state = 'pending' AND kind = 'review'"
            " ORDER BY id LIMIT ?",
            (limit - len(rows),),
        ).fetchall()
    return [_entry(row) for row in rows]


def pending_exported(conn: sqlite3.Connection, limit: int, after: int = 0) -> list[Entry]:
    """Pending entries that already left on a data-mule bundle (the hub may have them)."""
    rows = conn.execute(
        "SELECT * FROM sync_outbox WHERE state = 'pending' AND exported_at IS NOT NULL"
        " AND id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [_entry(row) for row in rows]


def all_pending(conn: sqlite3.Connection) -> list[Entry]:
    rows = conn.execute(
        "SELECT * FROM sync_outbox WHERE state = 'pending' ORDER BY kind, id"
    ).fetchall()
    return [_entry(row) for row in rows]


def mark_acked(store: Store, keys: list[tuple[str, int]]) -> int:
    """Record the hub's acknowledgement; returns how many rows changed state."""
    if not keys:
        return 0
    now = utc_now()
    with store.write() as conn:
        before = conn.total_changes
        conn.executemany(
            "UPDATE sync_outbox SET state = 'acked', acked_at = ?"
            " WHERE entry_id = ? AND revision = ? AND state = 'pending'",
            [(now, entry_id, revision) for entry_id, revision in keys],
        )
        return conn.total_changes - before


def mark_exported(store: Store, row_ids: list[int]) -> None:
    now = utc_now()
    with store.write() as conn:
        conn.executemany(
            "UPDATE sync_outbox SET exported_at = ? WHERE id = ?", [(now, i) for i in row_ids]
        )


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Pending and acknowledged entries by kind, e.g. ``{"result_pending": 3, ...}``."""
    found = {
        f"{kind}_{state}": 0 for kind in ("result", "review") for state in ("pending", "acked")
    }
    for row in conn.execute(
        "SELECT kind, state, COUNT(*) AS n FROM sync_outbox GROUP BY kind, state"
    ):
        if row["state"] != "superseded":
            found[f"{row['kind']}_{row['state']}"] = row["n"]
    return found
