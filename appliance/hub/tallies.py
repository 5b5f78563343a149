"""Counts per device and ISO week, and results per device and model, kept exact in
the entries' own transaction.

The dashboard, the programme view and the DHIS2 export read ``tallies`` (a row per
device and week: 26,000 rows for 500 boxes' year) and ``model_tallies``, never the
million entries. They stay exact because ``kept`` runs inside the transaction that
upserts a batch: it reads what the hub held for those entries, lets the upsert run,
and adds the difference — nothing for a resend (the same revision), the new
revision's counts minus the old one's for a revision, everything for a first arrival.
The box's device row is locked first (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``
already serialises writers), so two overlapping requests from one box (a retry while
the first is still being written) are counted one after the other. The same difference
moves the programme tallies (``programme_tallies.py``: chest and retina apart per week),
and the outcomes it changed are read again for the care cascade (``cascade_outcomes.py``).

A review is *pending* for an image that has a positive result (triage urgent or
review) and no review yet; it is counted in the week of that first positive result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from appliance.hub import cascade_outcomes, programme_tallies
from appliance.hub.db import Connection
from appliance.hub.migrations import TALLY_COUNTERS

POSITIVE = ("urgent", "review")
REFERRED = "urgent"  # the box's "refer now" tier
COLUMNS = (
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
)

ADD = (
    "INSERT INTO tallies (device_id, week, "
    + ", ".join(TALLY_COUNTERS)
    + ") VALUES (?, ?, "
    + ", ".join("?" for _ in TALLY_COUNTERS)
    + ") ON CONFLICT (device_id, week) DO UPDATE SET "
    + ", ".join(f"{c} = tallies.{c} + excluded.{c}" for c in TALLY_COUNTERS)
)
ADD_MODEL = (
    "INSERT INTO model_tallies (device_id, model_name, model_version, results, last_received)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, model_name, model_version) DO UPDATE"
    " SET results = model_tallies.results + excluded.results,"
    " last_received = CASE WHEN excluded.last_received IS NULL THEN model_tallies.last_received"
    " WHEN model_tallies.last_received IS NULL"
    " OR excluded.last_received > model_tallies.last_received"
    " THEN excluded.last_received ELSE model_tallies.last_received END"
)


def contribution(row: dict[str, Any]) -> tuple[str, dict[str, int]] | None:
    """What one stored entry adds to its week (a monitor summary adds nothing)."""
    week = row["week"] or ""
    if row["kind"] == "result":
        return week, {
            "results": 1,
            "refused": int(row["route"] == "refused"),
            "positive": int(row["triage"] in POSITIVE),
            "referred": int(row["triage"] == REFERRED),
        }
    if row["kind"] == "review":
        return week, {"reviews": 1}
    if row["kind"] == "outcome":
        return week, {"outcomes": 1}
    return None


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def held(conn: Connection, device_id: str, entry_ids: Sequence[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for part in _chunks(sorted(set(entry_ids))):
        marks = ", ".join("?" for _ in part)
        for row in conn.execute(
            f"SELECT {', '.join(COLUMNS)}, patient_id FROM entries"
            f" WHERE device_id = ? AND entry_id IN ({marks})",
            (device_id, *part),
        ):
            out[row["entry_id"]] = row
    return out


def pending_images(conn: Connection, device_id: str, shas: set[str]) -> dict[str, str]:
    """image sha256 -> the week its pending review counts in, for those pending now."""
    positive: dict[str, str] = {}
    reviewed: set[str] = set()
    for part in _chunks(sorted(shas)):
        marks = ", ".join("?" for _ in part)
        for row in conn.execute(
            "SELECT image_sha256, kind, triage, week FROM entries WHERE device_id = ?"
            f" AND image_sha256 IN ({marks}) AND kind IN ('result', 'review')",
            (device_id, *part),
        ):
            sha = row["image_sha256"]
            if row["kind"] == "review":
                reviewed.add(sha)
            elif row["triage"] in POSITIVE:
                week = row["week"] or ""
                positive[sha] = min(week, positive.get(sha, week))
    return {sha: week for sha, week in positive.items() if sha not in reviewed}


@contextmanager
def kept(conn: Connection, device_id: str, rows: Sequence[Sequence[Any]]) -> Iterator[None]:
    """Around the upsert of ``rows`` (``records._row`` tuples, in order): keep the
    tallies exact. Call inside the batch's transaction."""
    if conn.backend == "postgresql":
        conn.execute("SELECT id FROM devices WHERE id = ? FOR UPDATE", (device_id,))
    new = [dict(zip(COLUMNS, row[: len(COLUMNS)], strict=True)) for row in rows]
    received = rows[0][11] if rows else None
    before = held(conn, device_id, [r["entry_id"] for r in new])
    shas = {r["image_sha256"] for r in (*new, *before.values()) if r["image_sha256"]}
    shas = {s for s in shas if isinstance(s, str)}
    pending_before = pending_images(conn, device_id, shas) if shas else {}
    yield
    weeks: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TALLY_COUNTERS, 0))
    models: dict[tuple[str, str], list] = defaultdict(lambda: [0, None])
    state = dict(before)
    changes: list[tuple[int, dict[str, Any]]] = []
    for row in new:  # the upsert's rule, row by row: a higher revision replaces
        old = state.get(row["entry_id"])
        if old is not None and old["revision"] >= row["revision"]:
            continue
        for sign, entry in ((-1, old), (1, row)):
            counted = contribution(entry) if entry is not None else None
            if counted is None:
                continue
            changes.append((sign, entry))
            week, counts = counted
            for name, n in counts.items():
                weeks[week][name] += sign * n
            if entry["kind"] == "result" and entry["model_name"]:
                model = models[(entry["model_name"], entry["model_version"] or "")]
                model[0] += sign
                if sign == 1:
                    model[1] = received
        state[row["entry_id"]] = row
    pending_after = pending_images(conn, device_id, shas) if shas else {}
    for week in pending_before.values():
        weeks[week]["pending"] -= 1
    for week in pending_after.values():
        weeks[week]["pending"] += 1
    conn.executemany(
        ADD,
        [
            (device_id, week, *(counts[c] for c in TALLY_COUNTERS))
            for week, counts in sorted(weeks.items())
            if any(counts.values())
        ],
    )
    conn.executemany(
        ADD_MODEL,
        [(device_id, *key, n, last) for key, (n, last) in sorted(models.items()) if n or last],
    )
    programme_tallies.add(conn, device_id, changes)
    cascade_outcomes.follow(conn, device_id, [*new, *before.values()])


# -- reading ---------------------------------------------------------------------
SUMS = ", ".join(f"SUM(t.{c}) AS {c}" for c in TALLY_COUNTERS)


def per_site(conn: Connection, sites: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """site -> its counts over all weeks, for every site or only ``sites``."""
    where = f" WHERE d.site IN ({', '.join('?' for _ in sites)})" if sites else ""
    rows = conn.execute(
        f"SELECT d.site, {SUMS} FROM tallies t JOIN devices d ON d.id = t.device_id{where}"
        " GROUP BY d.site",
        list(sites or ()),
    )
    return {r["site"]: {c: int(r[c] or 0) for c in TALLY_COUNTERS} for r in rows}


def site_weeks(
    conn: Connection, since: str = "", until: str = "", site: str | None = None
) -> list[dict[str, Any]]:
    """Counts per site and ISO week (``since`` <= week <= ``until``, '' = open), by site
    then week; weeks without any result, review, outcome or pending review are left out."""
    sql = (
        f"SELECT d.site, t.week, {SUMS} FROM tallies t JOIN devices d ON d.id = t.device_id"
        " WHERE t.week <> ''"
    )
    params: list[Any] = []
    if since:
        sql += " AND t.week >= ?"
        params.append(since)
    if until:
        sql += " AND t.week <= ?"
        params.append(until)
    if site is not None:
        sql += " AND d.site = ?"
        params.append(site)
    rows = conn.execute(sql + " GROUP BY d.site, t.week ORDER BY d.site, t.week", params)
    out = []
    for r in rows:
        counts = {c: int(r[c] or 0) for c in TALLY_COUNTERS}
        if any(counts.values()):
            out.append({"site": r["site"], "week": r["week"], **counts})
    return out


def last_weeks(conn: Connection, sites: list[str], weeks: int) -> list[dict[str, Any]]:
    """Per site of ``sites``, its last ``weeks`` weeks with results, newest first."""
    if not sites:
        return []
    marks = ", ".join("?" for _ in sites)
    rows = conn.execute(
        "SELECT site, week, results, refused, positive FROM (SELECT d.site, t.week,"
        " SUM(t.results) AS results, SUM(t.refused) AS refused, SUM(t.positive) AS positive,"
        " ROW_NUMBER() OVER (PARTITION BY d.site ORDER BY t.week DESC) AS n"
        " FROM tallies t JOIN devices d ON d.id = t.device_id"
        f" WHERE t.week <> '' AND t.results > 0 AND d.site IN ({marks})"
        " GROUP BY d.site, t.week) AS ranked WHERE n <= ? ORDER BY site, week DESC",
        (*sites, weeks),
    )
    return [{**r, **{c: int(r[c] or 0) for c in ("results", "refused", "positive")}} for r in rows]


def recent_weeks(conn: Connection, limit: int = 12) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT week, SUM(results) AS n FROM tallies WHERE week <> ''"
        " GROUP BY week HAVING SUM(results) > 0 ORDER BY week DESC LIMIT ?",
        (limit,),
    )


def models(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT model_name, model_version, COUNT(DISTINCT device_id) AS devices,"
        " SUM(results) AS results, MAX(last_received) AS last_used FROM model_tallies"
        " WHERE results > 0 GROUP BY model_name, model_version"
        " ORDER BY model_name, model_version"
    )


def recount(conn: Connection) -> dict[tuple[str, str], dict[str, int]]:
    """(device, week) -> counts recomputed from the entries themselves: the slow, exact
    way the tallies stand for (tests and ``bench/hub_load.py`` compare the two)."""
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(TALLY_COUNTERS, 0)
    )
    for row in conn.execute(
        "SELECT device_id, COALESCE(week, '') AS week,"
        " SUM(CASE WHEN kind = 'result' THEN 1 ELSE 0 END) AS results,"
        " SUM(CASE WHEN kind = 'result' AND route = 'refused' THEN 1 ELSE 0 END) AS refused,"
        " SUM(CASE WHEN kind = 'result' AND triage IN ('urgent', 'review') THEN 1 ELSE 0 END)"
        " AS positive,"
        " SUM(CASE WHEN kind = 'result' AND triage = 'urgent' THEN 1 ELSE 0 END) AS referred,"
        " SUM(CASE WHEN kind = 'review' THEN 1 ELSE 0 END) AS reviews,"
        " SUM(CASE WHEN kind = 'outcome' THEN 1 ELSE 0 END) AS outcomes"
        " FROM entries GROUP BY device_id, COALESCE(week, '')"
    ):
        out[(row["device_id"], row["week"])].update(
            {c: int(row[c] or 0) for c in TALLY_COUNTERS if c != "pending"}
        )
    for row in conn.execute(
        "SELECT device_id, week, COUNT(*) AS n FROM (SELECT r.device_id,"
        " COALESCE(MIN(r.week), '') AS week FROM entries r WHERE r.kind = 'result'"
        " AND r.triage IN ('urgent', 'review') AND r.image_sha256 IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM entries v WHERE v.device_id = r.device_id AND v.kind = 'review'"
        " AND v.image_sha256 = r.image_sha256) GROUP BY r.device_id, r.image_sha256) AS p"
        " GROUP BY device_id, week"
    ):
        out[(row["device_id"], row["week"])]["pending"] = int(row["n"])
    return {k: v for k, v in out.items() if any(v.values())}


def tallied(conn: Connection) -> dict[tuple[str, str], dict[str, int]]:
    """(device, week) -> counts as the tallies hold them."""
    rows = conn.execute(
        f"SELECT t.device_id, t.week, {SUMS} FROM tallies t GROUP BY t.device_id, t.week"
    )
    out = {(r["device_id"], r["week"]): {c: int(r[c] or 0) for c in TALLY_COUNTERS} for r in rows}
    return {k: v for k, v in out.items() if any(v.values())}


def models_recount(conn: Connection) -> dict[tuple[str, str, str], int]:
    rows = conn.execute(
        "SELECT device_id, model_name, COALESCE(model_version, '') AS model_version,"
        " COUNT(*) AS n FROM entries WHERE kind = 'result' AND model_name IS NOT NULL"
        " GROUP BY device_id, model_name, COALESCE(model_version, '')"
    )
    return {(r["device_id"], r["model_name"], r["model_version"]): int(r["n"]) for r in rows}


def models_tallied(conn: Connection) -> dict[tuple[str, str, str], int]:
    rows = conn.execute(
        "SELECT device_id, model_name, model_version, results FROM model_tallies WHERE results <> 0"
    )
    return {(r["device_id"], r["model_name"], r["model_version"]): int(r["results"]) for r in rows}


# -- the programme pages (read only): chest and retina apart --------------------------
# Which screening programme a result belongs to: its route, else (a refusal) the model
# named on it; a refusal before routing names neither and counts as "other". The weekly
# figures come from ``programme_tallies`` (kept on write, as the tallies); what needs a
# result's own fields (scores, days, a day's results) reads the entries, always within a
# window of weeks and (for a site, a box) through the (device_id, kind, week) index.
PROGRAMME = (
    "CASE WHEN e.route = 'chest_xray' OR SUBSTR(e.model_name, 1, 4) = 'cxr-' THEN 'chest'"
    " WHEN e.route = 'fundus' OR SUBSTR(e.model_name, 1, 7) = 'fundus-' THEN 'retina'"
    " ELSE 'other' END"
)
RESULT_SUMS = (
    "COUNT(*) AS results, SUM(CASE WHEN e.route = 'refused' THEN 1 ELSE 0 END) AS refused,"
    " SUM(CASE WHEN e.triage IN ('urgent', 'review') THEN 1 ELSE 0 END) AS positive"
)


def _scope(
    site: str | None, device: str | None, alias: str = "e", sites: Sequence[str] = ()
) -> tuple[str, list[Any]]:
    if device is not None:
        return f" AND {alias}.device_id = ?", [device]
    if site is not None:
        return f" AND {alias}.device_id IN (SELECT id FROM devices WHERE site = ?)", [site]
    if sites:
        marks = ", ".join("?" for _ in sites)
        sql = f" AND {alias}.device_id IN (SELECT id FROM devices WHERE site IN ({marks}))"
        return sql, list(sites)
    return "", []


def programme_weeks(
    conn: Connection, since: str, *, site: str | None = None, device: str | None = None,
    sites: Sequence[str] = (), by_site: bool = False,
) -> list[dict[str, Any]]:
    """Results, refusals and positives per ISO week (>= ``since``) and programme, for
    every site, one ``site``, the ``sites`` named or one ``device``; per site too with
    ``by_site``. From the programme tallies: 500 boxes' 12 weeks are 18,000 rows at
    most, whatever the entries hold."""
    where, params = _scope(site, device, "t", sites)
    site_column = "d.site" if by_site else "''"
    join = " JOIN devices d ON d.id = t.device_id" if by_site else ""
    sums = ", ".join(f"SUM(t.{c}) AS {c}" for c in programme_tallies.COUNTERS)
    rows = conn.execute(
        f"SELECT {site_column} AS site, t.week, t.programme, {sums}"
        f" FROM programme_tallies t{join} WHERE t.week >= ? AND t.results > 0{where}"
        f" GROUP BY {'d.site, ' if by_site else ''}t.week, t.programme",
        (since, *params),
    )
    return [{**r, **{c: int(r[c] or 0) for c in programme_tallies.COUNTERS}} for r in rows]


def scored_results(
    conn: Connection, since: str, *, site: str | None = None, device: str | None = None
) -> list[dict[str, Any]]:
    """Each scored result's model, version and payload (its probability is in there),
    for a site's or a box's score distribution since ``since``."""
    where, params = _scope(site, device)
    return conn.execute(
        "SELECT e.model_name, e.model_version, e.payload FROM entries e"
        f" WHERE e.kind = 'result' AND e.week >= ? AND e.route <> 'refused'{where}",
        (since, *params),
    )


def box_days(conn: Connection, device: str, limit: int = 60) -> list[dict[str, Any]]:
    """A box's last ``limit`` clinic days with results (the result's own day)."""
    rows = conn.execute(
        f"SELECT e.result_day AS day, {RESULT_SUMS} FROM entries e WHERE e.device_id = ?"
        " AND e.kind = 'result' AND e.result_day IS NOT NULL GROUP BY e.result_day"
        " ORDER BY e.result_day DESC LIMIT ?",
        (device, limit),
    )
    return [{**r, **{c: int(r[c] or 0) for c in ("results", "refused", "positive")}} for r in rows]


def day_entries(conn: Connection, device: str, day: str) -> list[dict[str, Any]]:
    """A box's results of one day, as synced (de-identified by the box), in order."""
    return conn.execute(
        f"SELECT e.entry_id, e.route, e.triage, e.model_name, e.model_version, e.payload,"
        f" e.received_at, {PROGRAMME} AS programme FROM entries e WHERE e.device_id = ?"
        " AND e.kind = 'result' AND e.result_day = ? ORDER BY e.entry_id",
        (device, day),
    )
