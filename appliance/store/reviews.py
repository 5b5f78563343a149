"""Clinician reviews of AI results: structured, attributed, append-only."""

from __future__ import annotations

import json
from typing import Any

from appliance.errors import ApplianceError
from appliance.store import outbox, pacs_outbox
from appliance.store.db import Store, audit, utc_now
from appliance.store.worklist_items import refresh_item

# Reason codes a clinician can tick when disagreeing (or qualifying agreement).
REASON_CODES = (
    "finding_missed",
    "false_alarm",
    "poor_image_quality",
    "wrong_body_part",
    "artefact",
    "known_condition",
    "other",
)


class ReviewError(ApplianceError):
    """A review that cannot be recorded as given."""


def add_review(
    store: Store,
    *,
    image_id: int,
    user: dict[str, Any],
    verdict: str,
    reasons: list[str],
    note: str,
) -> int:
    if verdict not in ("agree", "disagree"):
        raise ReviewError("Choose agree or disagree.")
    unknown = [r for r in reasons if r not in REASON_CODES]
    if unknown:
        raise ReviewError(f"Unknown reason code: {', '.join(unknown)}")
    if verdict == "disagree" and not reasons:
        raise ReviewError("Give at least one reason when you disagree.")
    with store.write() as conn:
        result = conn.execute(
            "SELECT id, route FROM results WHERE image_id=? ORDER BY id DESC LIMIT 1",
            (image_id,),
        ).fetchone()
        if result is None:
            raise ReviewError("This image has no result to review yet.")
        if result["route"] == "refused":  # a retake or a resend, not a reading
            raise ReviewError("This image was not screened: there is no result to review.")
        cur = conn.execute(
            "INSERT INTO reviews (result_id, image_id, user_id, verdict, reasons, note, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                result["id"],
                image_id,
                user["id"],
                verdict,
                json.dumps(reasons),
                note.strip()[:2000] or None,
                utc_now(),
            ),
        )
        outbox.record_review(conn, int(cur.lastrowid))  # same transaction as the review
        pacs_outbox.record_change(conn, image_id, "review")  # a new SR version
        refresh_item(conn, image_id)
        audit(
            conn,
            user["username"],
            "review.added",
            f"image:{image_id}",
            json.dumps({"result": result["id"], "verdict": verdict, "reasons": reasons}),
        )
        return int(cur.lastrowid)


def reviews_for(store: Store, image_id: int) -> list[dict[str, Any]]:
    rows = store.conn().execute(
        "SELECT r.*, u.username FROM reviews r JOIN users u ON u.id = r.user_id"
        " WHERE r.image_id=? ORDER BY r.id DESC",
        (image_id,),
    )
    return [{**dict(row), "reasons": json.loads(row["reasons"])} for row in rows]
