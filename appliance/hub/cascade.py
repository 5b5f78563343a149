"""The care cascade, per site and period: screened → flagged → tested → confirmed →
treatment started, counted by patient, chest and retina apart (issue 29).

- **Patient**: as the box synced it (``image.patient_id``, a keyed hash from a
  de-identified box), within one site and one programme (chest X-ray or retina); an
  image without a patient counts as a patient of its own.
- **Screened**: a result (not refused) in the period (its ISO week, as the exports).
- **Flagged**: one of those results was positive (triage urgent or review, as the
  dashboard's positivity).
- **Tested**: a flagged patient with a confirmatory outcome whose test's latest entry
  is a result (``withdrawn``, entered in error, is not a test).
- **Confirmed**: tested, and a test's latest result positive (a grade from 2 up), as
  the box's calibration reads it.
- **Treatment started**: a tested patient whose treatment start the box sent with an
  outcome (``treatment``: a date and where), whatever the test said (a clinical
  diagnosis is treated too), so it may exceed *confirmed*.
- **Flagged, never tested**: flagged minus tested, and its share of flagged: the figure a
  programme chases. **Days to test**: median of (first test's date − first flagged
  result's day), a test dated before the flag counting 0.

Outcomes are followed whenever they came (the cohort is who was screened in the
period). Read from the entries: patients grouped in SQL (one index range per period),
the outcomes (a few per flagged patient) parsed here; a stored outcome that cannot be
read is skipped and counted, never a 500.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from statistics import median
from typing import Any

from flask import Blueprint, abort, render_template, request
from flask_babel import format_decimal

from appliance.hub import formats, get_db
from appliance.hub.dashboard import csrf_token, login_required
from appliance.hub.db import Connection

bp = Blueprint("cascade", __name__)
PROGRAMMES = {"chest_xray": "chest", "fundus": "retina"}
STAGES = ("screened", "flagged", "tested", "confirmed", "treatment_started")
POSITIVE = ("urgent", "review")
WEEK = re.compile(r"^\d{4}-W\d{2}$")
DEFAULT_WEEKS = 13  # a quarter, the page's period when none is asked for
PatientKey = tuple[str, str, str]  # site, programme, patient


@dataclass
class Tests:
    """What the outcomes say of one patient: per (image, test), its latest entry."""

    latest: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    treated_on: str | None = None

    def add(self, sha: str, data: dict[str, Any]) -> None:
        order = (str(data.get("created_at") or ""), int(data.get("local_id") or 0))
        key = (sha, str(data["test"]))
        held = self.latest.get(key)
        if held is None or order > held[:2]:
            self.latest[key] = (*order, data)
        treatment = data.get("treatment")
        if isinstance(treatment, dict) and isinstance(treatment.get("started_on"), str):
            started = treatment["started_on"][:10]
            self.treated_on = min(started, self.treated_on or started)

    def results(self) -> list[dict[str, Any]]:
        return [d for _, _, d in self.latest.values() if d.get("result") != "withdrawn"]

    @property
    def first_test(self) -> str | None:
        return min((str(d["tested_on"])[:10] for d in self.results()), default=None)

    @property
    def confirmed(self) -> bool:
        return any(d.get("positive") is True for d in self.results())


def period(weeks: str, until: str) -> tuple[str, str]:
    """``from``/``to`` as ISO weeks; empty: the last ``DEFAULT_WEEKS`` weeks to this one."""
    for value in (weeks, until):
        if value and not WEEK.match(value):
            abort(400, "from and to are ISO weeks such as 2024-W18")
    if not weeks and not until:
        today = date.today()
        weeks = _iso_week(today - timedelta(weeks=DEFAULT_WEEKS - 1))
        until = _iso_week(today)
    return weeks, until


def _monday(week: str, plus: int = 0) -> str | None:
    """The ISO week's Monday (plus days) as YYYY-MM-DD, or None."""
    if not WEEK.match(week or ""):
        return None
    try:
        monday = date.fromisocalendar(int(week[:4]), int(week[6:]), 1)
    except ValueError:
        return None
    return (monday + timedelta(days=plus)).isoformat()


@bp.app_template_filter("decimal")
def decimal(value: float | None) -> str:
    """A number as the reader writes it (one decimal at most), or a dash."""
    return formats.DASH if value is None else format_decimal(value, format="#,##0.#")


def _iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _patients(conn: Connection, since: str, until: str, site: str | None) -> list[dict[str, Any]]:
    """One row per (site, route, patient) screened in the period: first day screened and
    first day flagged (NULL: never)."""
    sql = (
        "SELECT d.site AS site, e.route AS route,"
        " COALESCE(e.patient_id, 'image:' || e.image_sha256) AS patient,"
        " MIN(e.result_day) AS screened_on,"
        " MIN(CASE WHEN e.triage IN ('urgent', 'review') THEN e.result_day END) AS flagged_on"
        " FROM entries e JOIN devices d ON d.id = e.device_id"
        " WHERE e.kind = 'result' AND e.route IN ('chest_xray', 'fundus')"
    )
    params: list[Any] = []
    for clause, value in (
        (" AND e.week >= ?", since),
        (" AND e.week <= ?", until),
        (" AND d.site = ?", site),
    ):
        if value:
            sql += clause
            params.append(value)
    sql += " GROUP BY d.site, e.route, COALESCE(e.patient_id, 'image:' || e.image_sha256)"
    return [r for r in conn.execute(sql, params) if r["patient"] is not None]


def _tests(conn: Connection, site: str | None) -> tuple[dict[PatientKey, Tests], int]:
    """Each patient's outcomes (sites' outcomes, whenever they came), and how many
    stored outcomes could not be read."""
    sql = (
        "SELECT d.site AS site, e.device_id AS device_id, e.image_sha256 AS sha, e.payload"
        " FROM entries e JOIN devices d ON d.id = e.device_id WHERE e.kind = 'outcome'"
    )
    rows = conn.execute(sql + (" AND d.site = ?" if site else ""), (site,) if site else ())
    by_device: dict[str, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    skipped = 0
    for row in rows:
        try:
            data = json.loads(row["payload"])
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("test", "tested_on")
        ):
            skipped += 1
            continue
        if isinstance(row["sha"], str):
            by_device[row["device_id"]].append((row["site"], row["sha"], data))
    found: dict[PatientKey, Tests] = defaultdict(Tests)
    for device_id, outcomes in by_device.items():
        patients = _image_patients(conn, device_id, {sha for _, sha, _ in outcomes})
        for site_name, sha, data in outcomes:
            for route, patient in patients.get(sha, ()):
                found[(site_name, PROGRAMMES[route], patient)].add(sha, data)
    return found, skipped


def _image_patients(
    conn: Connection, device_id: str, shas: Iterable[str]
) -> dict[str, set[tuple[str, str]]]:
    """image sha256 -> {(route, patient)} of the box's results for it."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    values = sorted(shas)
    for start in range(0, len(values), 500):
        part = values[start : start + 500]
        marks = ", ".join("?" for _ in part)
        for row in conn.execute(
            "SELECT image_sha256 AS sha, route,"
            " COALESCE(patient_id, 'image:' || image_sha256) AS patient FROM entries"
            f" WHERE device_id = ? AND image_sha256 IN ({marks}) AND kind = 'result'"
            " AND route IN ('chest_xray', 'fundus')",
            (device_id, *part),
        ):
            out[row["sha"]].add((row["route"], row["patient"]))
    return out


def _days(since: str, until: str) -> int | None:
    try:
        return max(0, (date.fromisoformat(until) - date.fromisoformat(since)).days)
    except (TypeError, ValueError):
        return None


def _stages(patients: list[tuple[dict[str, Any], Tests | None]]) -> dict[str, Any]:
    counts = dict.fromkeys(STAGES, 0)
    waits: list[int] = []
    for row, tests in patients:
        counts["screened"] += 1
        if not row["flagged_on"]:
            continue
        counts["flagged"] += 1
        first = tests.first_test if tests else None
        if first is None:
            continue
        counts["tested"] += 1
        wait = _days(row["flagged_on"][:10], first)
        if wait is not None:
            waits.append(wait)
        counts["confirmed"] += int(tests.confirmed)
        counts["treatment_started"] += int(tests.treated_on is not None)
    never = counts["flagged"] - counts["tested"]
    return {
        **counts,
        "never_tested": never,
        "never_tested_share": never / counts["flagged"] if counts["flagged"] else None,
        "days_to_test": round(float(median(waits)), 1) if waits else None,
        "days_to_test_n": len(waits),
    }


Group = list[tuple[dict[str, Any], "Tests | None"]]


def _groups(
    conn: Connection,
    since: str,
    until: str,
    site: str | None,
    bucket: Callable[[dict[str, Any]], str],
) -> tuple[dict[tuple[str, str, str], Group], int]:
    """(site, bucket(patient row), programme) -> its patients with their outcomes, and
    the outcomes skipped."""
    tests, skipped = _tests(conn, site)
    groups: dict[tuple[str, str, str], Group] = defaultdict(list)
    for row in _patients(conn, since, until, site):
        programme = PROGRAMMES[row["route"]]
        key = (row["site"], programme, row["patient"])
        groups[(row["site"], bucket(row), programme)].append((row, tests.get(key)))
    return groups, skipped


def cascade(
    conn: Connection, since: str = "", until: str = "", site: str | None = None
) -> dict[str, Any]:
    """What ``hub/_cascade.html`` draws: per site (and all sites together) the stages of
    each programme that screened someone in the period."""
    groups, skipped = _groups(conn, since, until, site, lambda row: "")
    per_site: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    everyone: dict[str, Group] = defaultdict(list)
    for (name, _, programme), patients in sorted(groups.items()):
        per_site[name][programme] = _stages(patients)
        everyone[programme] += patients
    return {
        "since": since,
        "until": until,
        "first_day": _monday(since),
        "last_day": _monday(until, 6),
        "site": site,
        "sites": [
            {"site": name, "programmes": _ordered(programmes)}
            for name, programmes in sorted(per_site.items())
        ],
        "total": _ordered({p: _stages(patients) for p, patients in everyone.items()}),
        "skipped": skipped,
    }


def _ordered(programmes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"programme": p, **programmes[p]} for p in PROGRAMMES.values() if p in programmes]


def weekly(
    conn: Connection, since: str, until: str, site: str | None
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(site, ISO week) -> {programme: stages}, each patient in the week they were first
    flagged (else first screened): the exports' cascade columns."""

    def week_of(row: dict[str, Any]) -> str:
        day = (row["flagged_on"] or row["screened_on"] or "")[:10]
        try:
            return _iso_week(date.fromisoformat(day))
        except ValueError:
            return ""

    groups, _ = _groups(conn, since, until, site, week_of)
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for (name, week, programme), patients in groups.items():
        out[(name, week)][programme] = _stages(patients)
    return dict(out)


@bp.get("/cascade")
@login_required
def page():
    since, until = period(request.args.get("from", ""), request.args.get("to", ""))
    site = request.args.get("site") or None
    return render_template(
        "hub/cascade.html", csrf=csrf_token(), cascade=cascade(get_db(), since, until, site)
    )
