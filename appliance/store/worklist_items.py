"""Each image's place in the worklist, kept in step with what is stored.

Computing "latest result, latest review, rank" for every image on every page load grows
with the store (~150 ms at 50,000 images). Instead one row per image holds its status
and rank, rewritten in the same transaction that stores the image, a result or a
review, so the worklist reads 50 rows off an index however large the store grows.
"""

from __future__ import annotations

import sqlite3

# What needs a person first: urgent and review findings, then what a person must act on
# before it can be screened at all, newest first: refusals (a retake) and chest X-rays
# without an age waiting for "adult or child?" (one tap on the study page, and it may
# turn out urgent), and images whose screening failed (someone must try again); then
# images still being screened, then routine, then what is reviewed. A waiting X-ray
# shares rank 2 with refusals rather than going ahead of review findings: those already
# have a score at or over the threshold. A refusal a clinician chose to screen anyway
# (store/routes.py) is waiting again until its new result lands. ('screen' is
# store.jobs.SCREEN, which imports this module.)
ITEM_SELECT = """
    SELECT i.id AS image_id,
           CASE
               WHEN r.route = 'refused' AND i.route_chosen IS NOT NULL
                    AND j.state IN ('queued', 'running') THEN 'waiting'
               WHEN r.id IS NULL AND i.waiting_for = 'population' THEN 'needs_population'
               WHEN r.id IS NULL AND j.state = 'failed' THEN 'failed'
               WHEN r.id IS NULL THEN 'waiting'
               WHEN v.id IS NOT NULL THEN 'reviewed'
               WHEN r.route = 'refused' THEN 'refused'
               ELSE 'screened'
           END AS status,
           CASE
               WHEN r.route = 'refused' AND i.route_chosen IS NOT NULL
                    AND j.state IN ('queued', 'running') THEN 3
               WHEN r.id IS NOT NULL AND v.id IS NOT NULL THEN 6
               WHEN r.triage = 'urgent' THEN 0
               WHEN r.triage = 'review' THEN 1
               WHEN r.route = 'refused' THEN 2
               WHEN r.id IS NULL AND i.waiting_for = 'population' THEN 2
               WHEN r.id IS NULL AND j.state = 'failed' THEN 2
               WHEN r.id IS NULL THEN 3
               ELSE 4
           END AS rank,
           i.received_at, r.id AS result_id, v.id AS review_id
    FROM images i
    LEFT JOIN results r ON r.id = (SELECT MAX(id) FROM results WHERE image_id = i.id)
    LEFT JOIN reviews v ON v.id = (SELECT MAX(id) FROM reviews WHERE image_id = i.id)
    LEFT JOIN jobs j ON j.image_id = i.id AND j.kind = 'screen'
"""
_UPSERT = (
    "INSERT OR REPLACE INTO worklist_items (image_id, status, rank, received_at, result_id,"
    " review_id) "
)


def refresh_item(conn: sqlite3.Connection, image_id: int) -> None:
    """Recompute one image's row (inside the caller's transaction)."""
    conn.execute(_UPSERT + ITEM_SELECT + " WHERE i.id = ?", (image_id,))


def rebuild(conn: sqlite3.Connection) -> None:
    """Recompute every row (after rows were written outside the store's functions)."""
    conn.execute(_UPSERT + ITEM_SELECT)
