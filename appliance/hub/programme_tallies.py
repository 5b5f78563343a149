"""Results, refusals and positives per device, ISO week and programme (chest, retina,
other), kept exact on write like the tallies (``tallies.kept`` around a batch's upsert,
``bad_records`` around a quarantine or a release): the programme pages draw chest and
retina apart week by week from these rows (``tallies.programme_weeks``), never from the
million entries. Hub migration 8 made the table and counted what the entries held.

A result's programme is its route, else (a refusal) the model it names; a refusal
before routing names neither and counts as "other". A revision that changes a result's
route, model, triage or week takes one from the old (week, programme) and adds one to
the new: the caller passes the old entry with sign -1 and the new one with +1.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from appliance.hub.db import Connection
from appliance.hub.migrations import PROGRAMME_OF_ENTRY

POSITIVE = ("urgent", "review")  # as tallies.POSITIVE: the dashboard's positivity
COUNTERS = ("results", "refused", "positive")
ADD_PROGRAMME = (
    "INSERT INTO programme_tallies (device_id, week, programme, "
    + ", ".join(COUNTERS)
    + ") VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, week, programme) DO UPDATE SET "
    + ", ".join(f"{c} = programme_tallies.{c} + excluded.{c}" for c in COUNTERS)
)


def programme_of(route: str | None, model_name: str | None) -> str:
    """chest, retina or other: the result's route, else (a refusal) the model it names
    (``migrations.PROGRAMME_OF_ENTRY`` and ``tallies.PROGRAMME`` say the same in SQL)."""
    model = model_name if isinstance(model_name, str) else ""
    if route == "chest_xray" or model.startswith("cxr-"):
        return "chest"
    if route == "fundus" or model.startswith("fundus-"):
        return "retina"
    return "other"


def contribution(row: dict[str, Any]) -> tuple[tuple[str, str], list[int]] | None:
    """What one stored result adds to its (week, programme): results, refused, positive."""
    if row["kind"] != "result":
        return None
    key = (row["week"] or "", programme_of(row["route"], row["model_name"]))
    return key, [1, int(row["route"] == "refused"), int(row["triage"] in POSITIVE)]


def add(
    conn: Connection, device_id: str, changes: Iterable[tuple[int, dict[str, Any]]]
) -> None:
    """Add each (sign, entry) of ``changes`` to the box's programme tallies (a sign of -1
    takes a result out), inside the transaction that stores or moves the entries."""
    deltas: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for sign, entry in changes:
        counted = contribution(entry)
        if counted is not None:
            key, counts = counted
            deltas[key] = [held + sign * n for held, n in zip(deltas[key], counts, strict=True)]
    conn.executemany(
        ADD_PROGRAMME,
        [(device_id, *key, *counts) for key, counts in sorted(deltas.items()) if any(counts)],
    )


def recount(conn: Connection) -> dict[tuple[str, str, str], list[int]]:
    """(device, week, programme) -> results, refused, positive, from the entries (the
    slow, exact way the programme tallies stand for)."""
    rows = conn.execute(
        f"SELECT device_id, COALESCE(week, '') AS week, {PROGRAMME_OF_ENTRY} AS programme,"
        " COUNT(*) AS results, SUM(CASE WHEN route = 'refused' THEN 1 ELSE 0 END) AS refused,"
        " SUM(CASE WHEN triage IN ('urgent', 'review') THEN 1 ELSE 0 END) AS positive"
        " FROM entries WHERE kind = 'result'"
        f" GROUP BY device_id, COALESCE(week, ''), {PROGRAMME_OF_ENTRY}"
    )
    return {
        (r["device_id"], r["week"], r["programme"]): [int(r[c] or 0) for c in COUNTERS]
        for r in rows
    }


def tallied(conn: Connection) -> dict[tuple[str, str, str], list[int]]:
    """(device, week, programme) -> results, refused, positive as the tallies hold them."""
    rows = conn.execute(
        "SELECT device_id, week, programme, results, refused, positive FROM programme_tallies"
    )
    out = {
        (r["device_id"], r["week"], r["programme"]): [int(r[c]) for c in COUNTERS]
        for r in rows
    }
    return {k: v for k, v in out.items() if any(v)}
