"""The queries behind the worklist and the study view (read-only)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.store import outbox
from appliance.store.db import Store
from appliance.store.patients import PATIENT_ID_SQL, PATIENT_NAME_SQL

PAGE_SIZE = 50

# The order (w.rank) and status come from worklist_items, kept in step with every write.
_FROM = """
    FROM worklist_items w
    JOIN images i ON i.id = w.image_id
    JOIN studies s ON s.id = i.study_id
    LEFT JOIN results r ON r.id = w.result_id
    LEFT JOIN reviews v ON v.id = w.review_id
"""
FILTERS = {
    "all": "1",
    "today": "w.received_at >= :day_start",  # the site's midnight, in UTC
    "needs_review": "w.rank <= 1",  # urgent or review, not yet reviewed
    "refused": "r.route = 'refused'",
}
# Filters on the item alone are counted without joining anything.
_ON_ITEMS_ONLY = {"all", "today", "needs_review"}


def local_midnight_utc(timezone_name: str) -> str:
    """Start of today where the clinic is, as the UTC timestamp text images are stored with."""
    try:
        zone = ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def worklist(
    store: Store, filter_name: str = "all", page: int = 1, timezone_name: str = "UTC"
) -> dict[str, Any]:
    where = FILTERS.get(filter_name, "1")
    conn = store.conn()
    count_from = "FROM worklist_items w" if filter_name in _ON_ITEMS_ONLY else _FROM
    params = {
        "day_start": local_midnight_utc(timezone_name),
        "limit": PAGE_SIZE,
        "offset": max(0, page - 1) * PAGE_SIZE,
    }
    total = conn.execute(f"SELECT COUNT(*) {count_from} WHERE {where}", params).fetchone()[0]
    rows = conn.execute(
        f"""SELECT i.id, i.modality, i.file_format, i.received_at, i.source, i.source_detail,
                   i.original_name, i.preview_path,
                   {PATIENT_ID_SQL} AS patient_id, {PATIENT_NAME_SQL} AS patient_name,
                   r.route, r.score, r.triage, r.population, r.id AS result_id,
                   v.id AS review_id,
                   w.status, v.verdict
            {_FROM} WHERE {where}
            ORDER BY w.rank, w.image_id DESC LIMIT :limit OFFSET :offset""",
        params,
    ).fetchall()
    rows = [dict(r) for r in rows]
    _mark_synced(conn, rows)
    return {
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
    }


def _mark_synced(conn, rows: list[dict[str, Any]]) -> None:
    """'synced' once the hub holds the latest result (and review) of a row: looked up for
    the page's rows only, not for the whole store."""
    ids = [
        (kind, row[key])
        for row in rows
        for kind, key in (("result", "result_id"), ("review", "review_id"))
        if row[key] is not None
    ]
    latest = outbox.delivery_states(conn, ids, outbox.HUB)
    for row in rows:
        held = [
            latest.get((k, row[key]))
            for k, key in (("result", "result_id"), ("review", "review_id"))
            if row[key] is not None
        ]
        if (
            row["status"] in ("screened", "reviewed", "refused")
            and held
            and all(state == "acked" for state in held)
        ):
            row["status"] = "synced"


def latest_marker(store: Store) -> str:
    """Changes whenever a result, review or image lands: the page polls it to refresh."""
    conn = store.conn()
    parts = [
        conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0]
        for t in ("images", "results", "reviews")
    ]
    return "-".join(map(str, parts))


def study(store: Store, image_id: int) -> dict[str, Any] | None:
    conn = store.conn()
    row = conn.execute(
        f"SELECT i.*, {PATIENT_ID_SQL} AS patient_id, {PATIENT_NAME_SQL} AS patient_name,"
        " s.patient_id AS received_patient_id, s.entered_by, s.entered_at,"
        " s.study_instance_uid, s.study_date, s.accession_number"
        " FROM images i JOIN studies s ON s.id = i.study_id WHERE i.id=?",
        (image_id,),
    ).fetchone()
    if row is None:
        return None
    item = dict(row)
    result = conn.execute(
        "SELECT * FROM results WHERE image_id=? ORDER BY id DESC LIMIT 1", (image_id,)
    ).fetchone()
    screening = conn.execute(
        "SELECT state, disk_waits FROM jobs WHERE image_id=? AND kind='screen'", (image_id,)
    ).fetchone()
    item["screening"] = dict(screening) if screening else None  # its job, if it has one
    item["result"] = None
    if result is not None:
        item["result"] = dict(result)
        for name in ("hints", "router", "quality", "timings"):
            value = item["result"].get(name)
            item["result"][name] = json.loads(value) if value else None
    return item
