"""Stored records the hub's readers cannot render, and the admin's quarantine for them.

A box enrolled before the hub checked every field at its door could store a result
with ``"threshold": null`` or a monitoring summary whose warnings are text. Readers of
many records (FHIR search and read, the pusher, the dashboard) skip such a record,
count it and ``note`` it here (``bad_records``: one row per record, the reader and the
reason), so the admin sees it on the dashboard and with ``appliance hub bad-records``.
``scan`` checks every record of one box the same way.

The admin can then ``quarantine`` a record: its row is moved whole out of ``entries``
into ``quarantined_entries`` (kept for audit), and the tallies lose what it counted, so
no reader, push, dashboard figure or export sees it any more; ``release`` puts it back
(unless the box has sent a newer revision since: that one stays). Each action is kept
in ``admin_actions`` with who did it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from appliance.hub import cascade_outcomes, programme_tallies, tallies
from appliance.hub.db import Connection
from appliance.hub.migrations import TALLY_COUNTERS

log = logging.getLogger(__name__)
ENTRY_COLUMNS = (
    "device_id",
    "entry_id",
    "revision",
    "kind",
    "image_sha256",
    "route",
    "triage",
    "model_name",
    "model_version",
    "week",
    "payload",
    "received_at",
    "patient_id",
    "result_day",
)
SCAN_PAGE = 500
MAX_ENTRIES_PER_ACTION = 1000


def _now() -> str:
    from appliance.hub.records import now

    return now()


# -- noticing -------------------------------------------------------------------------
def note(conn: Connection, found: Iterable[dict[str, Any]], reader: str) -> None:
    """Keep what a reader skipped (dicts of device_id, entry_id, kind, reason). Never
    raises: a reader that could not write this still answers (and logs)."""
    found = list(found)
    if not found:
        return
    for item in found:
        log.warning(
            "%s: skipped %s %s of %s: %s",
            reader, item["kind"], item["entry_id"], item["device_id"], item["reason"],
        )
    at = _now()
    try:
        with conn.transaction():
            conn.executemany(
                "INSERT INTO bad_records (device_id, entry_id, kind, reader, reason,"
                " first_seen_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (device_id, entry_id) DO UPDATE SET kind = excluded.kind,"
                " reader = excluded.reader, reason = excluded.reason,"
                " last_seen_at = excluded.last_seen_at",
                [
                    (i["device_id"], i["entry_id"], i["kind"], reader, i["reason"][:300], at, at)
                    for i in {(i["device_id"], i["entry_id"]): i for i in found}.values()
                ],
            )
    except Exception:  # the reader's answer matters more than the note
        log.exception("%s: could not note %s unreadable records", reader, len(found))


def problem(conn: Connection, row: dict[str, Any], site: str) -> str | None:
    """Why a stored entry (an ``entries`` row) cannot be rendered by the readers of its
    kind, or None: results as FHIR, reviews and outcomes in a report's conclusion,
    monitoring summaries on the dashboard."""
    from appliance.hub import programme
    from appliance.hub.fhir import search
    from appliance.hub.fhir.resources import UnrenderableRecord, rendered

    data = search.payload(row["payload"])
    if data is None:
        return "payload: expected an object"
    if row["kind"] == "result":
        item = {"entry": {**row, "payload": data}, "site": site, "review": None,
                "outcome": None}
        try:
            rendered(item)
        except UnrenderableRecord as exc:
            return str(exc)
        return None
    if row["kind"] in ("review", "outcome"):
        return search.later_problem(data)
    if row["kind"] == "monitor":
        try:
            programme.summary_view(data)
        except programme.UnreadableSummary as exc:
            return str(exc)
    return None


def scan(conn: Connection, device_id: str) -> dict[str, int]:
    """Check every record of one box now: the bad ones are noted, those noted before
    that read well now (a newer revision arrived) are forgotten."""
    device = conn.one("SELECT site FROM devices WHERE id = ?", (device_id,))
    if device is None:
        raise LookupError(f"no device {device_id}")
    checked, bad, good = 0, [], []
    after = ""
    while True:
        page = conn.execute(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE device_id = ?"
            " AND entry_id > ? ORDER BY entry_id LIMIT ?",
            (device_id, after, SCAN_PAGE),
        )
        for row in page:
            checked += 1
            reason = problem(conn, row, device["site"])
            if reason is None:
                good.append(row["entry_id"])
            else:
                bad.append({"device_id": device_id, "entry_id": row["entry_id"],
                            "kind": row["kind"], "reason": reason})
        if len(page) < SCAN_PAGE:
            break
        after = page[-1]["entry_id"]
    note(conn, bad, "check")
    _forget(conn, device_id, _noted_ids(conn, device_id) & set(good))
    return {"checked": checked, "bad": len(bad)}


def _noted_ids(conn: Connection, device_id: str) -> set[str]:
    rows = conn.execute("SELECT entry_id FROM bad_records WHERE device_id = ?", (device_id,))
    return {r["entry_id"] for r in rows}


def _forget(conn: Connection, device_id: str, entry_ids: Iterable[str]) -> None:
    ids = sorted(entry_ids)
    if ids:
        with conn.transaction():
            conn.executemany(
                "DELETE FROM bad_records WHERE device_id = ? AND entry_id = ?",
                [(device_id, e) for e in ids],
            )


# -- listing --------------------------------------------------------------------------
def counts(conn: Connection) -> dict[str, dict[str, int]]:
    """device id -> {"bad": noted and not quarantined, "quarantined": n} (cheap: the
    dashboard shows it on every page)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"bad": 0, "quarantined": 0})
    for row in conn.execute(
        "SELECT device_id, COUNT(*) AS n FROM bad_records GROUP BY device_id"
    ):
        out[row["device_id"]]["bad"] = int(row["n"])
    for row in conn.execute(
        "SELECT device_id, COUNT(*) AS n FROM quarantined_entries GROUP BY device_id"
    ):
        out[row["device_id"]]["quarantined"] = int(row["n"])
    return dict(out)


def listed(conn: Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    """The noted bad records (of one box, or all), each checked again against what the
    hub holds now: one that is gone or reads well is forgotten, not listed."""
    sql = (
        "SELECT b.device_id, b.entry_id, b.kind, b.reader, b.reason, b.first_seen_at,"
        " b.last_seen_at, d.site, d.name FROM bad_records b"
        " JOIN devices d ON d.id = b.device_id"
    )
    rows = conn.execute(
        sql + (" WHERE b.device_id = ?" if device_id else "") + " ORDER BY b.device_id,"
        " b.entry_id",
        (device_id,) if device_id else (),
    )
    out, stale = [], defaultdict(list)
    for row in rows:
        entry = conn.one(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE device_id = ?"
            " AND entry_id = ?",
            (row["device_id"], row["entry_id"]),
        )
        reason = problem(conn, entry, row["site"]) if entry is not None else None
        if reason is None:
            stale[row["device_id"]].append(row["entry_id"])
            continue
        out.append({**row, "reason": reason, "revision": entry["revision"],
                    "received_at": entry["received_at"]})
    for device, ids in stale.items():
        _forget(conn, device, ids)
    return out


def quarantined(conn: Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    sql = (
        "SELECT q.device_id, q.entry_id, q.kind, q.revision, q.received_at, q.reason,"
        " q.quarantined_by, q.quarantined_at, d.site, d.name FROM quarantined_entries q"
        " JOIN devices d ON d.id = q.device_id"
    )
    return conn.execute(
        sql + (" WHERE q.device_id = ?" if device_id else "")
        + " ORDER BY q.device_id, q.entry_id",
        (device_id,) if device_id else (),
    )


def actions(conn: Connection, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT at, actor, action, device_id, entry_id, detail FROM admin_actions"
        " WHERE device_id = ? ORDER BY at DESC LIMIT ?",
        (device_id, limit),
    )


# -- quarantine -------------------------------------------------------------------------
@contextmanager
def _tallies_follow(
    conn: Connection, device_id: str, rows: Sequence[dict[str, Any]], sign: int
) -> Iterator[None]:
    """Around moving ``rows`` out of (sign -1) or back into (+1) ``entries``: the tallies
    lose or regain what they counted, pending reviews included (as ``tallies.kept``)."""
    if conn.backend == "postgresql":  # the same lock as a batch of this box takes
        conn.execute("SELECT id FROM devices WHERE id = ? FOR UPDATE", (device_id,))
    shas = {r["image_sha256"] for r in rows if isinstance(r["image_sha256"], str)}
    pending_before = tallies.pending_images(conn, device_id, shas) if shas else {}
    yield
    pending_after = tallies.pending_images(conn, device_id, shas) if shas else {}
    weeks: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TALLY_COUNTERS, 0))
    models: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        counted = tallies.contribution(row)
        if counted is not None:
            week, found = counted
            for name, n in found.items():
                weeks[week][name] += sign * n
        if row["kind"] == "result" and row["model_name"]:
            models[(row["model_name"], row["model_version"] or "")] += sign
    for week in pending_before.values():
        weeks[week]["pending"] -= 1
    for week in pending_after.values():
        weeks[week]["pending"] += 1
    conn.executemany(
        tallies.ADD,
        [
            (device_id, week, *(counts[c] for c in TALLY_COUNTERS))
            for week, counts in sorted(weeks.items())
            if any(counts.values())
        ],
    )
    conn.executemany(
        tallies.ADD_MODEL,
        [(device_id, *key, n, None) for key, n in sorted(models.items()) if n],
    )
    programme_tallies.add(conn, device_id, [(sign, row) for row in rows])
    cascade_outcomes.follow(conn, device_id, rows)


def _audit(
    conn: Connection, actor: str, action: str, device_id: str, entry_id: str, detail: str
) -> None:
    conn.execute(
        "INSERT INTO admin_actions (at, actor, action, device_id, entry_id, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (_now(), actor[:100], action, device_id, entry_id, detail[:500]),
    )


def _checked_ids(entry_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(e for e in entry_ids if e))
    if not ids:
        raise ValueError("name at least one record")
    if len(ids) > MAX_ENTRIES_PER_ACTION:
        raise ValueError(f"at most {MAX_ENTRIES_PER_ACTION} records at once")
    return ids


def quarantine(
    conn: Connection, device_id: str, entry_ids: Sequence[str], actor: str, reason: str = ""
) -> dict[str, list[str]]:
    """Move these records of one box out of every reader's sight (kept, reversible).
    Returns {"quarantined": [...], "missing": [...]} (missing: not held, or already in
    quarantine)."""
    ids = _checked_ids(entry_ids)
    done, missing = [], []
    with conn.transaction():
        rows = []
        for entry_id in ids:
            row = conn.one(
                f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE device_id = ?"
                " AND entry_id = ?",
                (device_id, entry_id),
            )
            if row is None:
                missing.append(entry_id)
            else:
                rows.append(row)
        if not rows:
            return {"quarantined": [], "missing": missing}
        noted = {
            r["entry_id"]: r["reason"]
            for r in conn.execute(
                "SELECT entry_id, reason FROM bad_records WHERE device_id = ?", (device_id,)
            )
        }
        at = _now()
        with _tallies_follow(conn, device_id, rows, -1):
            for row in rows:
                why = reason or noted.get(row["entry_id"]) or "quarantined by the admin"
                conn.execute(
                    "DELETE FROM quarantined_entries WHERE device_id = ? AND entry_id = ?",
                    (device_id, row["entry_id"]),
                )
                conn.execute(
                    f"INSERT INTO quarantined_entries ({', '.join(ENTRY_COLUMNS)}, reason,"
                    " quarantined_by, quarantined_at) VALUES"
                    f" ({', '.join('?' for _ in ENTRY_COLUMNS)}, ?, ?, ?)",
                    (*(row[c] for c in ENTRY_COLUMNS), why[:300], actor[:100], at),
                )
                conn.execute(
                    "DELETE FROM entries WHERE device_id = ? AND entry_id = ?",
                    (device_id, row["entry_id"]),
                )
                conn.execute(
                    "DELETE FROM bad_records WHERE device_id = ? AND entry_id = ?",
                    (device_id, row["entry_id"]),
                )
                _audit(conn, actor, "quarantine", device_id, row["entry_id"],
                       f"{row['kind']} revision {row['revision']}: {why}")
                done.append(row["entry_id"])
    return {"quarantined": done, "missing": missing}


def release(
    conn: Connection, device_id: str, entry_ids: Sequence[str], actor: str
) -> dict[str, list[str]]:
    """Put quarantined records back where every reader sees them again. A record the
    box has since sent again (a newer revision is held) keeps that revision."""
    ids = _checked_ids(entry_ids)
    done, missing = [], []
    with conn.transaction():
        back, superseded = [], []
        for entry_id in ids:
            row = conn.one(
                f"SELECT {', '.join(ENTRY_COLUMNS)} FROM quarantined_entries"
                " WHERE device_id = ? AND entry_id = ?",
                (device_id, entry_id),
            )
            if row is None:
                missing.append(entry_id)
                continue
            held = conn.one(
                "SELECT revision FROM entries WHERE device_id = ? AND entry_id = ?",
                (device_id, entry_id),
            )
            (superseded if held is not None else back).append(row)
        with _tallies_follow(conn, device_id, back, 1):
            conn.executemany(
                f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) VALUES"
                f" ({', '.join('?' for _ in ENTRY_COLUMNS)})",
                [tuple(row[c] for c in ENTRY_COLUMNS) for row in back],
            )
        for row in (*back, *superseded):
            conn.execute(
                "DELETE FROM quarantined_entries WHERE device_id = ? AND entry_id = ?",
                (device_id, row["entry_id"]),
            )
            detail = f"{row['kind']} revision {row['revision']}" + (
                ": the box had sent a newer revision, kept" if row in superseded else ""
            )
            _audit(conn, actor, "release", device_id, row["entry_id"], detail)
            done.append(row["entry_id"])
    return {"released": done, "missing": missing}
