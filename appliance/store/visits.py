"""Photos of one visit: a camera card or an upload holds several photos of each patient.

A visit is the photos of one source (one USB stick or camera card, one upload batch, one
DICOM sender: ``images.visit_key``) taken on one clock (``images.taken_from``) with no
more than ``visit_gap_minutes`` between one photo and the next. It is worked out when
asked, never stored: nothing to keep in step, and a changed setting applies to every
photo at once. Images stored before visits existed have no key and stand alone.

Read-only; typing one patient for a visit's photos is ``patients.set_patients``.
"""

from __future__ import annotations

from typing import Any

from appliance.store.db import Store
from appliance.store.patients import PATIENT_ID_SQL, PATIENT_NAME_SQL

# No visit lasts longer than this: photos further apart are never looked at together.
LONGEST_VISIT_SECONDS = 12 * 3600

_SELECT = f"""
    SELECT i.id, i.original_name, i.taken_at, i.preview_path, i.received_at,
           s.patient_id AS received_patient_id,
           {PATIENT_ID_SQL} AS patient_id, {PATIENT_NAME_SQL} AS patient_name
    FROM images i JOIN studies s ON s.id = i.study_id
"""


def _anchor(conn, image_id: int):
    return conn.execute(
        "SELECT id, visit_key, taken_from, taken_at FROM images WHERE id = ?", (image_id,)
    ).fetchone()


def _neighbours(conn, anchor) -> list[dict[str, Any]]:
    """The same source's images on the same clock within LONGEST_VISIT_SECONDS, in order."""
    rows = conn.execute(
        _SELECT + " WHERE i.visit_key = ? AND i.taken_from = ?"
        " AND i.taken_at BETWEEN ? AND ? ORDER BY i.taken_at, i.id",
        (
            anchor["visit_key"],
            anchor["taken_from"],
            anchor["taken_at"] - LONGEST_VISIT_SECONDS,
            anchor["taken_at"] + LONGEST_VISIT_SECONDS,
        ),
    )
    return [dict(row) for row in rows]


def visit_of(store: Store, image_id: int, gap_minutes: float) -> list[dict[str, Any]]:
    """The photos of ``image_id``'s visit in the order they were taken (itself included;
    only itself when it has no source key or ``gap_minutes`` is 0)."""
    conn = store.conn()
    anchor = _anchor(conn, image_id)
    if anchor is None:
        return []
    if not anchor["visit_key"] or anchor["taken_at"] is None or gap_minutes <= 0:
        return [dict(row) for row in conn.execute(_SELECT + " WHERE i.id = ?", (image_id,))]
    photos = _neighbours(conn, anchor)
    visits: list[list[dict[str, Any]]] = []
    for photo in photos:
        if visits and photo["taken_at"] - visits[-1][-1]["taken_at"] <= gap_minutes * 60:
            visits[-1].append(photo)
        else:
            visits.append([photo])
    return next(v for v in visits if any(p["id"] == image_id for p in v))


def previous_photo(store: Store, image_id: int) -> dict[str, Any] | None:
    """The photo taken just before this one from the same source (any gap up to
    LONGEST_VISIT_SECONDS), whatever its patient; None when there is none."""
    conn = store.conn()
    anchor = _anchor(conn, image_id)
    if anchor is None or not anchor["visit_key"] or anchor["taken_at"] is None:
        return None
    earlier = [
        p
        for p in _neighbours(conn, anchor)
        if (p["taken_at"], p["id"]) < (anchor["taken_at"], anchor["id"])
    ]
    return earlier[-1] if earlier else None
