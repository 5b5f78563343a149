"""What became of the entries the outbox sent (store/outbox.py writes them): a
receiver's acknowledgements and refusals, data-mule exports, and the states the System
page, ``sync status`` and the worklist read. A refused row is kept with its reason and
never sent again; a later revision of the same entry is a new pending row."""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.store.db import Store, utc_now
from appliance.store.outbox import HUB


def mark_acked(store: Store, keys: list[tuple[str, int]], destination: str = HUB) -> int:
    """Record the receiver's acknowledgement; returns how many rows changed state."""
    if not keys:
        return 0
    now = utc_now()
    with store.write() as conn:
        before = conn.total_changes
        conn.executemany(
            "UPDATE outbox SET state = 'acked', acked_at = ?"
            " WHERE destination = ? AND entry_id = ? AND revision = ? AND state = 'pending'",
            [(now, destination, entry_id, revision) for entry_id, revision in keys],
        )
        return conn.total_changes - before


REASON_CHARS = 500  # of the receiver's reason, kept with a refused row


def mark_refused(store: Store, refusals: list[dict[str, Any]], destination: str = HUB) -> int:
    """Record the receiver's refusals (``{"id", "rev", "message"}`` each, as the hub
    answers them): the row is kept, with the reason, and never sent again. Returns how
    many rows changed state."""
    now = utc_now()
    rows = [
        (now, str(r.get("message") or "refused")[:REASON_CHARS], destination, r["id"], r["rev"])
        for r in refusals
        if isinstance(r, dict) and isinstance(r.get("id"), str) and type(r.get("rev")) is int
    ]
    if not rows:
        return 0
    with store.write() as conn:
        before = conn.total_changes
        conn.executemany(
            "UPDATE outbox SET state = 'refused', refused_at = ?, last_error = ?"
            " WHERE destination = ? AND entry_id = ? AND revision = ? AND state = 'pending'",
            rows,
        )
        return conn.total_changes - before


def refused(conn: sqlite3.Connection, latest: int = 5, destination: str = HUB) -> dict[str, Any]:
    """The entries the receiver refused and that no later revision replaced: how many,
    and the ``latest`` (kind, local id, when, the receiver's reason), newest first."""
    still = (
        " FROM outbox o WHERE o.destination = ? AND o.state = 'refused' AND NOT EXISTS ("
        "SELECT 1 FROM outbox n WHERE n.destination = o.destination"
        " AND n.entry_id = o.entry_id AND n.revision > o.revision)"
    )
    count = conn.execute("SELECT COUNT(*)" + still, (destination,)).fetchone()[0]
    rows = conn.execute(
        "SELECT o.entry_id, o.revision, o.kind, o.local_id, o.image_id, o.refused_at,"
        " o.last_error" + still + " ORDER BY o.refused_at DESC, o.id DESC LIMIT ?",
        (destination, latest),
    ).fetchall()
    return {"count": int(count), "latest": [dict(r) for r in rows]}


def mark_exported(store: Store, row_ids: list[int]) -> None:
    now = utc_now()
    with store.write() as conn:
        conn.executemany(
            "UPDATE outbox SET exported_at = ? WHERE id = ?", [(now, i) for i in row_ids]
        )


def counts(conn: sqlite3.Connection, destination: str = HUB) -> dict[str, int]:
    """Pending and acknowledged entries by kind, e.g. ``{"result_pending": 3, ...}``."""
    found = {
        f"{kind}_{state}": 0 for kind in ("result", "review") for state in ("pending", "acked")
    }
    for row in conn.execute(
        "SELECT kind, state, COUNT(*) AS n FROM outbox WHERE destination = ? GROUP BY kind, state",
        (destination,),
    ):
        key = f"{row['kind']}_{row['state']}"
        if key in found:  # results and reviews (what the System page and status show)
            found[key] = row["n"]
    return found


def delivery_states(
    conn: sqlite3.Connection, items: list[tuple[str, int]], destination: str = HUB
) -> dict[tuple[str, int], str]:
    """The state of the latest revision of each (kind, local id), where there is one."""
    if not items:
        return {}
    latest: dict[tuple[str, int], str] = {}
    marks = ", ".join("(?, ?)" for _ in items)
    for kind, local_id, state in conn.execute(
        f"SELECT kind, local_id, state FROM outbox WHERE destination = ?"
        f" AND (kind, local_id) IN ({marks}) ORDER BY revision",
        [destination, *(value for pair in items for value in pair)],
    ):
        latest[(kind, local_id)] = state
    return latest
