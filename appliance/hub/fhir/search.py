"""Finding the hub's results for a FHIR search or read (appliance/hub/fhir/api.py).

Patient and date are matched on the decoded payload (the hub's ``entries`` keep it as
JSON, on SQLite and PostgreSQL alike), newest results first, until ``_count`` match;
the site narrows the SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from appliance.hub.db import Connection
from appliance.hub.fhir.resources import entry_key

MAX_COUNT = 200
PREFIXES = ("eq", "ge", "gt", "le", "lt")
SCAN_BATCH = 500


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
    query = Query(site=args.get("site") or None)
    patient = args.get("patient")
    if patient:
        query.patient = patient.split("|", 1)[1] if "|" in patient else patient
    for value in args.getlist("date"):
        prefix = value[:2] if value[:2] in PREFIXES else "eq"
        day = value[2:] if value[:2] in PREFIXES else value
        if len(day) < 4 or not day[:4].isdigit():
            raise ValueError(f"date {value!r}: expected [eq|ge|gt|le|lt]YYYY[-MM[-DD]]")
        query.dates.append((prefix, day))
    if "_count" in args:
        try:
            query.count = max(1, min(MAX_COUNT, int(args["_count"])))
        except ValueError:
            raise ValueError("_count must be a number") from None
    return query


def _date_matches(when: str | None, prefix: str, day: str) -> bool:
    if not when:
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
    image = data.get("image") or {}
    if query.patient is not None and str(image.get("patient_id") or "") != query.patient:
        return False
    return all(_date_matches(data.get("created_at"), p, d) for p, d in query.dates)


def _item(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    entry = {**row, "payload": json.loads(row["payload"])}
    later = {"review": None, "outcome": None}
    if row["image_sha256"]:
        for other in conn.execute(
            "SELECT kind, payload FROM entries WHERE device_id = ? AND image_sha256 = ?"
            " AND kind IN ('review', 'outcome') ORDER BY received_at DESC, revision DESC",
            (row["device_id"], row["image_sha256"]),
        ):
            if later[other["kind"]] is None:
                later[other["kind"]] = json.loads(other["payload"])
    return {"entry": entry, "site": row["site"], **later}


def find(conn: Connection, query: Query) -> list[dict[str, Any]]:
    sql = (
        "SELECT e.device_id, e.entry_id, e.revision, e.image_sha256, e.payload,"
        " e.received_at, d.site FROM entries e JOIN devices d ON d.id = e.device_id"
        " WHERE e.kind = 'result'"
    )
    params: list[Any] = []
    if query.site:
        sql += " AND d.site = ?"
        params.append(query.site)
    sql += " ORDER BY e.received_at DESC, e.entry_id LIMIT ? OFFSET ?"
    found: list[dict[str, Any]] = []
    offset = 0
    while len(found) < query.count:
        rows = conn.execute(sql, (*params, SCAN_BATCH, offset))
        for row in rows:
            if matches(json.loads(row["payload"]), query):
                found.append(_item(conn, row))
                if len(found) == query.count:
                    break
        if len(rows) < SCAN_BATCH:
            break
        offset += SCAN_BATCH
    return found


def by_id(conn: Connection, report_id: str) -> dict[str, Any] | None:
    key = entry_key(report_id)
    if key is None:
        return None
    rows = conn.execute(
        "SELECT e.device_id, e.entry_id, e.revision, e.image_sha256, e.payload,"
        " e.received_at, d.site FROM entries e JOIN devices d ON d.id = e.device_id"
        " WHERE e.kind = 'result' AND e.device_id = ? AND e.entry_id = ?",
        key,
    )
    return _item(conn, rows[0]) if rows else None
