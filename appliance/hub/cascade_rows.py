"""The care cascade's patients, one row per (site, programme, patient, ISO week), kept
as results and outcomes arrive: the cascade (``cascade.py``) and the indicator exports
count these rows, never grouping 250,000 results into patients per page (issue 29; hub
migration 10 made the table and filled it from what the hub held).

A row holds the week's first day screened and first day flagged (its results' own,
as ``MIN(result_day)``), where the patient's row before it and its rows with a flag
before and from it are (``prev_week``, ``prev_flag_week``, ``next_flag_week``), and the
patient's outcomes as the cascade reads them (``Tests``: first test, confirmed,
treatment started; ``wait``: days from this row's flag to the first test). So a period
[since, until] counts each patient once without grouping: screened on the patient's
first row in the period (no row before it in the period), flagged on its first row
with a flag, the ISO week of those days its bucket in the exports. A result's week is
its day's, so a period's first row holds the period's first days; a result without a
readable week (an older hub's record, week ''), counted only where no period is asked
for, comes first and holds the patient's first days of all their rows.

Kept in the transaction that changes them: ``cascade_outcomes.follow`` names the
patients whose results or outcomes changed (as they were and are) and ``refresh``
writes their rows again from ``entries`` and ``cascade_outcomes``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from appliance.hub.db import Connection

ROUTES = ("chest_xray", "fundus")
PatientKey = tuple[str, str, str]  # site, route, patient
COLUMNS = (
    "site", "route", "patient", "week", "screened_on", "flagged_on", "prev_week",
    "prev_flag_week", "next_flag_week", "screen_bucket", "flag_bucket", "first_test",
    "confirmed", "treated", "wait",
)
INSERT = (
    f"INSERT INTO cascade_rows ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in COLUMNS)})"
)
PATIENT = "COALESCE(e.patient_id, 'image:' || e.image_sha256)"
WEEKS = (
    f"SELECT d.site AS site, e.route AS route, {PATIENT} AS patient,"
    " COALESCE(e.week, '') AS week, MIN(e.result_day) AS screened_on,"
    " MIN(CASE WHEN e.triage IN ('urgent', 'review') THEN e.result_day END) AS flagged_on"
    " FROM entries e JOIN devices d ON d.id = e.device_id"
    " WHERE e.kind = 'result' AND e.route IN ('chest_xray', 'fundus')"
    " AND (e.patient_id IS NOT NULL OR e.image_sha256 IS NOT NULL){where}"
    f" GROUP BY d.site, e.route, {PATIENT}, COALESCE(e.week, '')"
)
OUTCOMES = (
    "SELECT d.site AS site, o.route, o.patient, o.image_sha256 AS sha, o.test, o.withdrawn,"
    " o.positive, o.tested_on, o.treated_on, o.created_at, o.local_id"
    " FROM cascade_outcomes o JOIN devices d ON d.id = o.device_id"
    " WHERE o.readable = 1 AND o.route <> ''{where}"
)


@dataclass
class Tests:
    """What the outcomes say of one patient: per (image, test), its latest entry."""

    latest: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    treated_on: str | None = None

    def add(self, row: dict[str, Any]) -> None:
        """One ``cascade_outcomes`` row (a readable outcome, read when it arrived)."""
        order = (str(row["created_at"] or ""), int(row["local_id"] or 0))
        key = (row["sha"], str(row["test"]))
        held = self.latest.get(key)
        if held is None or order > held[:2]:
            self.latest[key] = (*order, row)
        started = row["treated_on"]
        if started is not None:
            self.treated_on = min(started, self.treated_on or started)

    def results(self) -> list[dict[str, Any]]:
        return [d for _, _, d in self.latest.values() if not d["withdrawn"]]

    @property
    def first_test(self) -> str | None:
        return min((str(d["tested_on"])[:10] for d in self.results()), default=None)

    @property
    def confirmed(self) -> bool:
        return any(d["positive"] for d in self.results())


def iso_week(day: str | None) -> str:
    """The ISO week of a YYYY-MM-DD day (its first 10 characters), or ''."""
    try:
        year, week, _ = date.fromisoformat((day or "")[:10]).isocalendar()
    except ValueError:
        return ""
    return f"{year}-W{week:02d}"


def days_between(since: str, until: str) -> int | None:
    try:
        return max(0, (date.fromisoformat(until) - date.fromisoformat(since)).days)
    except (TypeError, ValueError):
        return None


def _rows(key: PatientKey, weeks: dict[str, dict[str, Any]], tests: Tests | None) -> list:
    """One patient's rows, from its weeks ({week: {screened_on, flagged_on}})."""
    order = sorted(weeks)
    days = {w: (weeks[w]["screened_on"], weeks[w]["flagged_on"]) for w in order}
    if order[0] == "":  # no readable week: first, holding the first days of all
        days[""] = tuple(
            min((d[i] for d in days.values() if d[i] is not None), default=None) for i in (0, 1)
        )
    first_test = tests.first_test if tests is not None else None
    confirmed = int(first_test is not None and tests is not None and tests.confirmed)
    treated = int(first_test is not None and tests is not None and tests.treated_on is not None)
    flag_weeks = [w for w in order if days[w][1] is not None]
    out = []
    for n, week in enumerate(order):
        screened_on, flagged_on = days[week]
        before = [w for w in flag_weeks if w < week]
        after = [w for w in flag_weeks if w >= week]
        wait = None
        if first_test is not None and flagged_on:
            wait = days_between(flagged_on[:10], first_test)
        out.append((
            *key, week, screened_on, flagged_on, order[n - 1] if n else None,
            before[-1] if before else None, after[0] if after else None,
            iso_week(screened_on), iso_week(flagged_on), first_test, confirmed, treated, wait,
        ))
    return out


def _chunks(values: Iterable[Any], size: int = 400) -> Iterable[list[Any]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def _weeks_into(found: dict, rows: Iterable[dict[str, Any]]) -> None:
    """Add grouped rows of ``WEEKS`` into {key: {week: days}} (the MIN of both)."""
    for row in rows:
        weeks = found[(row["site"], row["route"], row["patient"])]
        held = weeks.get(row["week"])
        if held is None:
            weeks[row["week"]] = {k: row[k] for k in ("screened_on", "flagged_on")}
            continue
        for name in ("screened_on", "flagged_on"):
            values = [v for v in (held[name], row[name]) if v is not None]
            held[name] = min(values, default=None)


def _write(conn: Connection, found: dict, tests: dict[PatientKey, Tests]) -> None:
    rows = []
    for key, weeks in sorted(found.items()):
        rows += _rows(key, weeks, tests.get(key))
    conn.executemany(INSERT, rows)


def refresh(conn: Connection, keys: Iterable[PatientKey]) -> None:
    """Write the rows of the patients ``keys`` again from what the hub holds now (inside
    the transaction that changed their results or outcomes)."""
    by_site: dict[str, set[str]] = defaultdict(set)
    wanted = {k for k in keys if k[1] in ROUTES and k[2]}
    for site, _, patient in wanted:
        by_site[site].add(patient)
    conn.executemany(
        "DELETE FROM cascade_rows WHERE site = ? AND route = ? AND patient = ?", sorted(wanted)
    )
    found: dict[PatientKey, dict[str, dict[str, Any]]] = defaultdict(dict)
    tests: dict[PatientKey, Tests] = defaultdict(Tests)
    for site, patients in sorted(by_site.items()):
        devices = [r["id"] for r in conn.execute("SELECT id FROM devices WHERE site = ?", (site,))]
        for part in _chunks(patients):
            marks = ", ".join("?" for _ in part)
            shas = [p[6:] for p in part if p.startswith("image:")]
            _weeks_into(found, conn.execute(
                WEEKS.format(where=f" AND d.site = ? AND e.patient_id IN ({marks})"),
                (site, *part),
            ))
            for shas_part in _chunks(shas) if devices else ():
                _weeks_into(found, conn.execute(
                    WEEKS.format(
                        where=f" AND e.device_id IN ({', '.join('?' for _ in devices)})"
                        " AND e.patient_id IS NULL"
                        f" AND e.image_sha256 IN ({', '.join('?' for _ in shas_part)})"
                    ),
                    (*devices, *shas_part),
                ))
            for row in conn.execute(
                OUTCOMES.format(where=f" AND d.site = ? AND o.patient IN ({marks})"),
                (site, *part),
            ):
                tests[(row["site"], row["route"], row["patient"])].add(row)
    _write(conn, {k: v for k, v in found.items() if k in wanted}, tests)


def rebuild(conn: Connection) -> None:
    """Every patient's rows again, a site at a time (migration 10; bench/hub_dashboard.py
    after its bulk load)."""
    conn.execute("DELETE FROM cascade_rows")
    for site in [r["site"] for r in conn.execute("SELECT DISTINCT site FROM devices")]:
        found: dict[PatientKey, dict[str, dict[str, Any]]] = defaultdict(dict)
        _weeks_into(found, conn.execute(WEEKS.format(where=" AND d.site = ?"), (site,)))
        tests: dict[PatientKey, Tests] = defaultdict(Tests)
        for row in conn.execute(OUTCOMES.format(where=" AND d.site = ?"), (site,)):
            tests[(row["site"], row["route"], row["patient"])].add(row)
        _write(conn, found, tests)
    if conn.backend == "postgresql":  # a period's rows together, as arrivals leave them
        conn.execute("CLUSTER cascade_rows USING cascade_rows_week")


def site_of(conn: Connection, device_id: str) -> str | None:
    row = conn.one("SELECT site FROM devices WHERE id = ?", (device_id,))
    return row["site"] if row else None


def result_keys(site: str, rows: Iterable[dict[str, Any]]) -> set[PatientKey]:
    """The patients of these result rows as they were (those that name their patient
    column: a quarantined or released row, one held before a revision)."""
    keys = set()
    for row in rows:
        if row["kind"] != "result" or row["route"] not in ROUTES or "patient_id" not in row:
            continue
        sha = row["image_sha256"] if isinstance(row["image_sha256"], str) else None
        patient = row["patient_id"] or (f"image:{sha}" if sha else None)
        if patient:
            keys.add((site, row["route"], patient))
    return keys


# -- reading: a period's patients counted from their rows -----------------------------
def _first(column: str, since: str, until: str) -> tuple[str, list[str]]:
    """SQL: the row is its patient's first (with a flag, for ``prev_flag_week``) in the
    period [since, until] ('' = open), whose rows are the ones read."""
    if since:
        return f"({column} IS NULL OR {column} < ?)", [since]
    if until:
        return f"({column} IS NULL OR {column} = '')", []
    return f"{column} IS NULL", []


def counted(
    conn: Connection,
    since: str,
    until: str,
    site: str | None,
    by_week: bool,
    *,
    among: Sequence[str] | None = None,
    summed: bool = False,
) -> list[dict[str, Any]]:
    """Per site, programme (route), bucket (the ISO week of the patient's first flag in
    the period, else first screening: '' unless ``by_week``) and days to test: patients
    screened, flagged, tested, confirmed, treated. Each patient once. ``among``: those
    sites only (a page of them, read by the site index); ``summed``: all sites as one
    (site ''), fewer groups to hash than 500 sites'."""
    where, params = "", []
    for clause, value in (
        (" AND week >= ?", since), (" AND week <= ?", until), (" AND site = ?", site)
    ):
        if value:
            where += clause
            params.append(value)
    if among is not None:
        if not among:
            return []
        where += f" AND site IN ({', '.join('?' for _ in among)})"
        params += list(among)
    if (since or until) and not since:
        where += " AND week <> ''"
    first, first_params = _first("prev_week", since, until)
    flag_first, flag_params = _first("prev_flag_week", since, until)
    # the patient's first row in the period, and no row with a flag in it
    unflagged = "next_flag_week IS NULL OR (next_flag_week = '' AND flagged_on = '')"
    unflagged_params: list[str] = []
    if until:
        unflagged += " OR next_flag_week > ?"
        unflagged_params = [until]
    # a row counts once at most: as its patient's first flag in the period, or as the
    # first row of a patient without one (one scan of the period's rows)
    flag = f"(flagged_on IS NOT NULL AND flagged_on <> '' AND {flag_first})"
    plain = f"({first} AND ({unflagged}))"
    bucket = f", CASE WHEN {flag} THEN flag_bucket ELSE screen_bucket END" if by_week else ""
    who = "'' AS site" if summed else "site"
    # ``wait`` as it is: a row counted without its flag has none (no flag in the period:
    # no flag of its own), and grouped by the column PostgreSQL knows ~1,000 groups come
    # (hashed in memory), where by a CASE it guessed 70,000 and sorted 200,000 rows on disk
    sql = (
        f"SELECT {who}, route{bucket or ', NULL'} AS bucket, wait, COUNT(*) AS screened,"
        f" SUM(CASE WHEN {flag} THEN 1 ELSE 0 END) AS flagged,"
        f" SUM(CASE WHEN {flag} AND first_test IS NOT NULL THEN 1 ELSE 0 END) AS tested,"
        f" SUM(CASE WHEN {flag} THEN confirmed ELSE 0 END) AS confirmed,"
        f" SUM(CASE WHEN {flag} THEN treated ELSE 0 END) AS treated"
        f" FROM cascade_rows WHERE ({flag} OR {plain}){where}"
        f" GROUP BY {'' if summed else 'site, '}route{', 3' if by_week else ''}, wait"
    )
    flags = [*flag_params]
    params_in_order = (
        (flags if by_week else []) + flags * 4 + flags + first_params + unflagged_params
        + params
    )
    return conn.execute(sql, params_in_order)
