"""Finding the hub's results for a FHIR search or read (appliance/hub/fhir/api.py), and
the reports that changed since the last push (fhir/push.py).

Patient, day and site are SQL on indexed columns (``entries.patient_id`` and
``result_day``, copied from the payload when it is stored: migration 4), newest results
first, a page at a time by position (never OFFSET); each row is then checked against
the payload itself (``matches``), which is exact for dates asked to the minute.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from appliance.hub.db import Connection
from appliance.hub.fhir.resources import entry_key

MAX_COUNT = 200
MAX_DATES = 10  # a range is two; thousands made one SQL statement of thousands of terms
MAX_VALUE_CHARS = 200
PREFIXES = ("eq", "ge", "gt", "le", "lt")
SCAN_BATCH = 500
DAY = 10  # len("2026-11-30"): what ``result_day`` holds
DATE = re.compile(r"[0-9]{4}[-0-9T:.+Z]{0,30}")  # a year, then as much of a date as given
SELECT_RESULTS = (
    "SELECT e.device_id, e.entry_id, e.revision, e.image_sha256, e.payload,"
    " e.received_at, d.site FROM entries e JOIN devices d ON d.id = e.device_id"
    " WHERE e.kind = 'result'"
)


@dataclass
class Query:
    patient: str | None = None
    dates: list[tuple[str, str]] = field(default_factory=list)
    site: str | None = None
    count: int = 50


def parse(args: MultiDict) -> Query:
    """The search parameters, or ValueError naming the bad one (answered with 400)."""
    unknown = set(args) - {"patient", "date", "site", "_count", "_format"}
    if unknown:
        raise ValueError(f"unsupported search parameter: {', '.join(sorted(unknown))}")
    for name in sorted(set(args)):
        values = args.getlist(name)
        most = MAX_DATES if name == "date" else 1
        if len(values) > most:
            times = "once" if most == 1 else f"at most {most} times"
            raise ValueError(f"{name} given {len(values)} times: give it {times}")
        if any(len(value) > MAX_VALUE_CHARS for value in values):
            raise ValueError(f"{name}: at most {MAX_VALUE_CHARS} characters")
    query = Query(site=args.get("site") or None)
    patient = args.get("patient")
    if patient:
        query.patient = patient.split("|", 1)[1] if "|" in patient else patient
    for value in args.getlist("date"):
        prefix = value[:2] if value[:2] in PREFIXES else "eq"
        day = value[2:] if value[:2] in PREFIXES else value
        if not DATE.fullmatch(day):
            raise ValueError(f"date {value!r}: expected [eq|ge|gt|le|lt]YYYY[-MM[-DD]]")
        query.dates.append((prefix, day))
    if "_count" in args:
        try:
            query.count = max(1, min(MAX_COUNT, int(args["_count"])))
        except ValueError:
            raise ValueError("_count must be a number") from None
    return query


def _date_matches(when: Any, prefix: str, day: str) -> bool:
    if not when or not isinstance(when, str):
        return False
    own = when[: len(day)]  # compare at the precision asked (a year, month or day)
    return {
        "eq": own == day,
        "ge": own >= day,
        "gt": own > day,
        "le": own <= day,
        "lt": own < day,
    }[prefix]


def matches(data: dict[str, Any], query: Query) -> bool:
    image = data.get("image")
    image = image if isinstance(image, dict) else {}  # anything else: rendering says so
    if query.patient is not None and str(image.get("patient_id") or "") != query.patient:
        return False
    return all(_date_matches(data.get("created_at"), p, d) for p, d in query.dates)


def payload(text: str) -> dict[str, Any] | None:
    """A stored payload as an object, or None where it is not one (nothing the hub wrote
    since it has kept JSON objects, but a reader never dies on one row)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def later_problem(data: dict[str, Any] | None) -> str | None:
    """Why a review or outcome cannot go into a report's conclusion, or None."""
    if data is None:
        return "payload: expected an object"
    reasons = data.get("reasons")
    if reasons is not None and not (
        isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)
    ):
        return "reasons: expected a list of texts"
    return None


def _item(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """A result with the latest review and outcome of its image. A review or outcome
    that cannot be read is passed over (the one before it counts) and listed in
    ``unreadable``; a result whose own payload is not an object is ``broken``."""
    data = payload(row["payload"])
    entry = {**row, "payload": data if data is not None else {}}
    later = {"review": None, "outcome": None}
    unreadable = []
    if row["image_sha256"]:
        for other in conn.execute(
            "SELECT entry_id, kind, payload FROM entries WHERE device_id = ?"
            " AND image_sha256 = ? AND kind IN ('review', 'outcome')"
            " ORDER BY received_at DESC, revision DESC",
            (row["device_id"], row["image_sha256"]),
        ):
            if later[other["kind"]] is not None:
                continue
            found = payload(other["payload"])
            problem = later_problem(found)
            if problem is None:
                later[other["kind"]] = found
            else:
                unreadable.append(
                    {"device_id": row["device_id"], "entry_id": other["entry_id"],
                     "kind": other["kind"], "reason": problem}
                )
    item = {"entry": entry, "site": row["site"], **later, "unreadable": unreadable}
    if data is None:
        item["broken"] = "payload: expected an object"
    return item


def _day_clause(prefix: str, day: str) -> tuple[str, list[str]]:
    """SQL on ``result_day`` for one date parameter, as ranges an index serves: exact up
    to a day's precision (``result_day`` compares byte by byte, so the days that start
    with ``day`` are those from ``day`` up to ``day`` with its last character raised by
    one), a superset beyond it (``matches`` then decides)."""
    if len(day) > DAY:  # a time too: the day's rows, the payload decides
        day = day[:DAY]
        loose = {"eq": "=", "ge": ">=", "gt": ">=", "le": "<=", "lt": "<="}[prefix]
        return f"e.result_day {loose} ?", [day]
    after = day[:-1] + chr(ord(day[-1]) + 1)  # the first text past every day in ``day``
    return {
        "eq": ("e.result_day >= ? AND e.result_day < ?", [day, after]),
        "ge": ("e.result_day >= ?", [day]),
        "gt": ("e.result_day >= ?", [after]),
        "le": ("e.result_day < ?", [after]),
        "lt": ("e.result_day < ?", [day]),
    }[prefix]


def find(conn: Connection, query: Query) -> list[dict[str, Any]]:
    sql = SELECT_RESULTS
    params: list[Any] = []
    if query.site:
        sql += " AND d.site = ?"
        params.append(query.site)
    if query.patient is not None:
        sql += " AND e.patient_id = ?"
        params.append(query.patient)
    for prefix, day in query.dates:
        clause, values = _day_clause(prefix, day)
        sql += f" AND {clause}"
        params.extend(values)
    order = " ORDER BY e.received_at DESC, e.device_id DESC, e.entry_id DESC LIMIT ?"
    found: list[dict[str, Any]] = []
    after: tuple[str, str, str] | None = None
    while len(found) < query.count:
        page_sql, page_params = sql, list(params)
        if after is not None:  # the next page, by position
            page_sql += " AND (e.received_at, e.device_id, e.entry_id) < (?, ?, ?)"
            page_params.extend(after)
        rows = conn.execute(page_sql + order, (*page_params, SCAN_BATCH))
        for row in rows:
            data = payload(row["payload"])
            if data is None or matches(data, query):  # None: counted when rendered
                found.append(_item(conn, row))
                if len(found) == query.count:
                    break
        if len(rows) < SCAN_BATCH:
            break
        after = (rows[-1]["received_at"], rows[-1]["device_id"], rows[-1]["entry_id"])
    return found


def by_key(conn: Connection, device_id: str, entry_id: str) -> dict[str, Any] | None:
    rows = conn.execute(
        SELECT_RESULTS + " AND e.device_id = ? AND e.entry_id = ?", (device_id, entry_id)
    )
    return _item(conn, rows[0]) if rows else None


def by_id(conn: Connection, report_id: str) -> dict[str, Any] | None:
    key = entry_key(report_id)
    return by_key(conn, *key) if key is not None else None


Position = tuple[str, str, str]  # (received_at, device_id, entry_id) of an entry


def changed(
    conn: Connection, after: Position | None, until: str, limit: int = 1000
) -> tuple[list[tuple[str, str]], Position | None]:
    """The results whose report may have changed with the entries received after
    ``after`` and by ``until`` (at most ``limit`` entries, in arrival order): their own
    new revision, or a review or outcome of their image. Returns the results' keys and
    the position of the last entry read (None: nothing new)."""
    sql = (
        "SELECT device_id, entry_id, kind, image_sha256, received_at FROM entries"
        " WHERE received_at <= ?"
    )
    params: list[Any] = [until]
    if after is not None:
        sql += " AND (received_at, device_id, entry_id) > (?, ?, ?)"
        params.extend(after)
    rows = conn.execute(
        sql + " ORDER BY received_at, device_id, entry_id LIMIT ?", (*params, limit)
    )
    keys: dict[tuple[str, str], None] = {}
    for row in rows:
        if row["kind"] == "result":
            keys[(row["device_id"], row["entry_id"])] = None
        elif row["kind"] in ("review", "outcome") and row["image_sha256"]:
            for result in conn.execute(
                "SELECT entry_id FROM entries WHERE device_id = ? AND image_sha256 = ?"
                " AND kind = 'result'",
                (row["device_id"], row["image_sha256"]),
            ):
                keys[(row["device_id"], result["entry_id"])] = None
    if not rows:
        return [], None
    last = rows[-1]
    return list(keys), (last["received_at"], last["device_id"], last["entry_id"])
