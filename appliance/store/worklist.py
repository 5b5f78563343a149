"""The queries behind the worklist and the study view (read-only)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from appliance.store import deliveries, outbox
from appliance.store.clinic_day import (  # noqa: F401 - the worklist's names for them
    clinic_zone,
    day_bounds_utc,
    local_midnight_utc,
    local_today,
)
from appliance.store.db import Store, commits_so_far, wait_for_commit
from appliance.store.jobs import SCREEN
from appliance.store.patients import PATIENT_ID_SQL, PATIENT_NAME_SQL

PAGE_SIZE = 50
SEARCH_MAX = 64  # a patient ID is at most 64 characters (store/patients.py)
REGISTER_MAX = 2000  # a day's register; more than a clinic screens in a day

# The order (w.rank) and status come from worklist_items, kept in step with every write.
_FROM = """
    FROM worklist_items w
    JOIN images i ON i.id = w.image_id
    JOIN studies s ON s.id = i.study_id
    LEFT JOIN results r ON r.id = w.result_id
    LEFT JOIN reviews v ON v.id = w.review_id
"""
# Referrals to follow up: the latest result is flagged (urgent or review) and the image
# has no confirmatory outcome yet. An outcome counts when it is a test's latest and says
# positive, negative or a grade: the same rule as calibration's reference (monitoring/
# outcomes.py), so "withdrawn" (entered in error) and "indeterminate" (test again) keep
# the referral on the list. A clinician's review does not take it off: only a result does.
_NO_OUTCOME_YET = """NOT EXISTS (
    SELECT 1 FROM outcomes o WHERE o.image_id = w.image_id AND o.positive IS NOT NULL
      AND o.id = (SELECT MAX(l.id) FROM outcomes l
                  WHERE l.image_id = o.image_id AND l.test = o.test))"""
FILTERS = {
    "all": "1",
    "today": "w.received_at >= :day_start",  # the site's midnight, in UTC
    "needs_review": "w.rank <= 1",  # urgent or review, not yet reviewed
    "refused": "r.route = 'refused'",
    "follow_up": f"r.triage IN ('urgent', 'review') AND {_NO_OUTCOME_YET}",
}
# Most pressing first, newest first within; referrals waiting longest first.
_ORDER = {"follow_up": "w.received_at, w.image_id"}
_DEFAULT_ORDER = "w.rank, w.image_id DESC"
# Filters on the item alone are counted without joining anything.
_ON_ITEMS_ONLY = {"all", "today", "needs_review"}
# A patient ID or name containing the searched text (lower-cased by the caller); a DICOM
# name's ^ separators read as spaces, so "doe jane" finds DOE^JANE. INSTR, not LIKE:
# a typed % or _ is a character, not a wildcard. LOWER folds ASCII letters only.
_TEXT_MATCH = (
    f"(INSTR(LOWER({PATIENT_ID_SQL}), :text) > 0"
    f" OR INSTR(LOWER(REPLACE({PATIENT_NAME_SQL}, '^', ' ')), :text) > 0)"
)
_ON_DAY = "w.received_at >= :day_from AND w.received_at < :day_until"


def search_text(value: str | None) -> str:
    """What was typed in the search box, trimmed and bounded."""
    return " ".join((value or "").split())[:SEARCH_MAX]


def worklist(
    store: Store,
    filter_name: str = "all",
    page: int = 1,
    timezone_name: str = "UTC",
    text: str = "",
    day: date | None = None,
) -> dict[str, Any]:
    """A page of the worklist; ``text``: part of a patient's ID or name; ``day``: the
    clinic's day the images arrived. Only fixed SQL fragments are joined: what was typed
    travels as parameters."""
    conditions = [FILTERS.get(filter_name, "1")]
    text = search_text(text).lower()
    conn = store.conn()
    params: dict[str, Any] = {
        "day_start": local_midnight_utc(timezone_name),
        "limit": PAGE_SIZE,
        "offset": max(0, page - 1) * PAGE_SIZE,
    }
    if text:
        conditions.append(_TEXT_MATCH)
        params["text"] = text.replace("^", " ")
    if day is not None:
        conditions.append(_ON_DAY)
        params["day_from"], params["day_until"] = day_bounds_utc(day, timezone_name)
    where = " AND ".join(f"({c})" for c in conditions)
    items_only = filter_name in _ON_ITEMS_ONLY and not text
    count_from = "FROM worklist_items w" if items_only else _FROM
    total = conn.execute(f"SELECT COUNT(*) {count_from} WHERE {where}", params).fetchone()[0]
    order = _ORDER.get(filter_name, _DEFAULT_ORDER)
    rows = conn.execute(
        f"""SELECT i.id, i.modality, i.file_format, i.received_at, i.source, i.source_detail,
                   i.original_name, i.preview_path, i.laterality,
                   {PATIENT_ID_SQL} AS patient_id, {PATIENT_NAME_SQL} AS patient_name,
                   r.route, r.score, r.triage, r.population, r.id AS result_id,
                   v.id AS review_id,
                   w.status, v.verdict
            {_FROM} WHERE {where}
            ORDER BY {order} LIMIT :limit OFFSET :offset""",
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


def register(store: Store, day: date, timezone_name: str = "UTC") -> dict[str, Any]:
    """The clinic's day ``day``: every image that arrived, in order, with its patient,
    result, review and confirmatory outcomes (each test's latest, none withdrawn)."""
    day_from, day_until = day_bounds_utc(day, timezone_name)
    params = {"day_from": day_from, "day_until": day_until, "limit": REGISTER_MAX + 1}
    conn = store.conn()
    rows = [
        dict(row)
        for row in conn.execute(
            f"""SELECT i.id, i.received_at, i.modality, i.file_format, i.original_name,
                       {PATIENT_ID_SQL} AS patient_id, {PATIENT_NAME_SQL} AS patient_name,
                       r.route, r.population, r.score, r.triage, w.status,
                       v.verdict, u.username AS reviewed_by
                {_FROM} LEFT JOIN users u ON u.id = v.user_id
                WHERE {_ON_DAY} ORDER BY w.received_at, w.image_id LIMIT :limit""",
            params,
        )
    ]
    found: dict[int, list[tuple[str, str]]] = {}
    for row in conn.execute(
        f"""SELECT o.image_id, o.test, o.result FROM outcomes o
            JOIN worklist_items w ON w.image_id = o.image_id
            WHERE {_ON_DAY} AND o.result != 'withdrawn'
              AND o.id = (SELECT MAX(l.id) FROM outcomes l
                          WHERE l.image_id = o.image_id AND l.test = o.test)
            ORDER BY o.image_id, o.test""",
        params,
    ):
        found.setdefault(row["image_id"], []).append((row["test"], row["result"]))
    for row in rows:
        row["outcomes"] = found.get(row["id"], [])
    return {"day": day, "rows": rows[:REGISTER_MAX], "more": len(rows) > REGISTER_MAX}


def _mark_synced(conn, rows: list[dict[str, Any]]) -> None:
    """'synced' once the hub holds the latest result (and review) of a screened row:
    looked up for the page's rows only, not for the whole store."""
    ids = [
        (kind, row[key])
        for row in rows
        for kind, key in (("result", "result_id"), ("review", "review_id"))
        if row[key] is not None
    ]
    latest = deliveries.delivery_states(conn, ids, outbox.HUB)
    for row in rows:
        held = [
            latest.get((k, row[key]))
            for k, key in (("result", "result_id"), ("review", "review_id"))
            if row[key] is not None
        ]
        # A refused image stays "refused" after sync: its retake is still due.
        if (
            row["status"] in ("screened", "reviewed")
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


# Another process (``appliance ingest``, a second box process) commits without waking
# this one: the marker is read again at least this often while a page waits.
MARKER_RECHECK_SECONDS = 0.5
# A film's image row lands a moment before its result (screening takes ~0.1 s): a page
# is answered once the new images are screened, or after this long, so that a film
# reloads it once, not twice, and the reload does not compete with the screening.
SCREENING_SETTLE_SECONDS = 2.0


def wait_for_marker(
    store: Store, seen: str, timeout: float, stopping: Callable[[], bool] = lambda: False
) -> str:
    """The marker once it differs from ``seen`` (new images screened first, see
    ``SCREENING_SETTLE_SECONDS``), else after ``timeout`` seconds (or as soon as
    ``stopping()`` says so) the unchanged one. Woken by this process's commits
    (store.db), so a result reaches a waiting page in milliseconds."""
    now = time.monotonic()
    deadline, settled_by = now + timeout, None
    while True:
        count = commits_so_far()
        marker = latest_marker(store)
        now = time.monotonic()
        if stopping() or now >= deadline:
            return marker
        if marker != seen:
            if settled_by is None:
                settled_by = min(now + SCREENING_SETTLE_SECONDS, deadline)
            if now >= settled_by or not _screening_new_images(store, seen):
                return marker
        until = settled_by if settled_by is not None else deadline
        wait_for_commit(count, min(until - now, MARKER_RECHECK_SECONDS))


def _screening_new_images(store: Store, seen: str) -> bool:
    """Whether an image that arrived after the marker ``seen`` is still to be screened."""
    try:
        seen_image = int(seen.split("-", 1)[0])
    except ValueError:
        return False
    row = store.conn().execute(
        "SELECT 1 FROM jobs WHERE kind=? AND state IN ('queued', 'running') AND image_id > ?"
        " LIMIT 1",
        (SCREEN, seen_image),
    ).fetchone()
    return row is not None


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
