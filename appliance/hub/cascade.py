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
period). Screened and flagged are counted by the database (one index range per
period); the outcomes come read already, with their patient (``cascade_outcomes``,
kept on write), only those of flagged patients; a stored outcome that cannot be read
is skipped and counted, never a 500. Without a site, the page shows 50 sites at a time
under the total of all.
"""

from __future__ import annotations

import re
from collections import defaultdict
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


def _patients(since: str, until: str, site: str | None) -> tuple[str, list[Any]]:
    """SQL of one row per (site, route, patient) screened in the period: first day
    screened and first day flagged (NULL: never), with its parameters."""
    sql = (
        "SELECT d.site AS site, e.route AS route,"
        " COALESCE(e.patient_id, 'image:' || e.image_sha256) AS patient,"
        " MIN(e.result_day) AS screened_on,"
        " MIN(CASE WHEN e.triage IN ('urgent', 'review') THEN e.result_day END) AS flagged_on"
        " FROM entries e JOIN devices d ON d.id = e.device_id"
        " WHERE e.kind = 'result' AND e.route IN ('chest_xray', 'fundus')"
        " AND (e.patient_id IS NOT NULL OR e.image_sha256 IS NOT NULL)"
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
    return sql, params


OUTCOME_COLUMNS = (
    "sha", "test", "withdrawn", "positive", "tested_on", "treated_on", "created_at", "local_id"
)


def _read(
    conn: Connection, since: str, until: str, site: str | None, by_day: bool
) -> tuple[list[dict[str, Any]], dict[PatientKey, tuple[str, Tests]]]:
    """One query, the period's patients grouped once: (patients screened and flagged per
    site and route, and per day of their first flag else screening where ``by_day``;
    each flagged patient with a readable outcome, whenever it came and for any of the
    patient's images at the site: first day flagged, and the outcomes)."""
    patients, params = _patients(since, until, site)
    day = "SUBSTR(COALESCE(NULLIF(flagged_on, ''), NULLIF(screened_on, ''), ''), 1, 10)"
    nothing = ", ".join(f"NULL AS {c}" for c in OUTCOME_COLUMNS)
    bucket = day if by_day else "''"
    sql = (
        f"WITH p AS ({patients})"
        f" SELECT site, route, {bucket} AS day, COUNT(*) AS screened,"
        f" COUNT(NULLIF(flagged_on, '')) AS flagged, NULL AS patient, NULL AS flagged_on,"
        f" {nothing} FROM p GROUP BY site, route{', ' + day if by_day else ''}"
        " UNION ALL"
        " SELECT p.site, p.route, NULL, NULL, NULL, p.patient, p.flagged_on,"
        f" {', '.join('t.' + c for c in OUTCOME_COLUMNS)}"
        " FROM p JOIN (SELECT d.site AS site, o.route, o.patient,"
        " o.image_sha256 AS sha, o.test, o.withdrawn, o.positive, o.tested_on,"
        " o.treated_on, o.created_at, o.local_id"
        " FROM cascade_outcomes o JOIN devices d ON d.id = o.device_id"
        " WHERE o.readable = 1 AND o.route <> ''" + (" AND d.site = ?" if site else "")
        + ") AS t"
        " ON t.site = p.site AND t.route = p.route AND t.patient = p.patient"
        " WHERE p.flagged_on IS NOT NULL AND p.flagged_on <> ''"
    )
    counts: list[dict[str, Any]] = []
    found: dict[PatientKey, tuple[str, Tests]] = {}
    for row in conn.execute(sql, [*params, *([site] if site else [])]):
        if row["screened"] is not None:
            counts.append(row)
            continue
        key = (row["site"], PROGRAMMES[row["route"]], row["patient"])
        if key not in found:
            found[key] = (row["flagged_on"], Tests())
        found[key][1].add(row)
    return counts, found


def _skipped(conn: Connection, site: str | None) -> int:
    """Stored outcomes of the site(s) that do not say which test and when."""
    row = conn.one(
        "SELECT COUNT(*) AS n FROM cascade_outcomes o JOIN devices d ON d.id = o.device_id"
        " WHERE o.readable = 0" + (" AND d.site = ?" if site else ""),
        (site,) if site else (),
    )
    return int(row["n"]) if row else 0


def _days(since: str, until: str) -> int | None:
    try:
        return max(0, (date.fromisoformat(until) - date.fromisoformat(since)).days)
    except (TypeError, ValueError):
        return None


@dataclass
class Group:
    """One programme's patients at a site (or all sites) and period: how many were
    screened and flagged, and each tested one's first flag and outcomes."""

    screened: int = 0
    flagged: int = 0
    tested: list[tuple[str, Tests]] = field(default_factory=list)

    def __iadd__(self, other: Group) -> Group:
        self.screened += other.screened
        self.flagged += other.flagged
        self.tested += other.tested
        return self


def _stages(group: Group) -> dict[str, Any]:
    counts = dict.fromkeys(STAGES, 0)
    counts["screened"], counts["flagged"] = group.screened, group.flagged
    waits: list[int] = []
    for flagged_on, tests in group.tested:
        first = tests.first_test
        if first is None:
            continue
        counts["tested"] += 1
        wait = _days(flagged_on[:10], first)
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


def _groups(
    conn: Connection, since: str, until: str, site: str | None, by_week: bool
) -> dict[tuple[str, str, str], Group]:
    """(site, ISO week of the first flag else screening ('' unless ``by_week``),
    programme) -> its patients, counted."""

    def week_of(day: str | None) -> str:
        try:
            return _iso_week(date.fromisoformat((day or "")[:10]))
        except ValueError:
            return ""

    groups: dict[tuple[str, str, str], Group] = defaultdict(Group)
    counts, tested = _read(conn, since, until, site, by_week)
    for row in counts:
        key = (row["site"], week_of(row["day"]) if by_week else "", PROGRAMMES[row["route"]])
        groups[key] += Group(int(row["screened"]), int(row["flagged"]))
    for (name, programme, _), (flagged_on, tests) in tested.items():
        groups[(name, week_of(flagged_on) if by_week else "", programme)].tested.append(
            (flagged_on, tests)
        )
    return groups


SITES_PER_PAGE = 50  # as the programme page (dashboard.SITES_PER_PAGE)


def cascade(
    conn: Connection, since: str = "", until: str = "", site: str | None = None, page: int = 1
) -> dict[str, Any]:
    """What ``hub/_cascade.html`` draws: per site (and all sites together) the stages of
    each programme that screened someone in the period. Without ``site``, the sites come
    in pages of ``SITES_PER_PAGE`` (every enrolled site, as the programme page): the
    stages are counted per site for the page's sites only, the total for every site."""
    groups = _groups(conn, since, until, site, by_week=False)
    everyone: dict[str, Group] = defaultdict(Group)
    by_site: dict[str, dict[str, Group]] = defaultdict(dict)
    for (name, _, programme), group in sorted(groups.items()):
        by_site[name][programme] = group
        everyone[programme] += group
    pager = None
    if site is not None:
        names = [site] if site in by_site else []
    else:
        every_site = [r["site"] for r in conn.execute(
            "SELECT DISTINCT site FROM devices ORDER BY site"
        )]
        pages = max(1, -(-len(every_site) // SITES_PER_PAGE))
        page = min(max(1, page), pages)
        first = (page - 1) * SITES_PER_PAGE
        names = every_site[first : first + SITES_PER_PAGE]
        pager = {
            "page": page,
            "pages": pages,
            "first": first + 1,
            "last": first + len(names),
            "total": len(every_site),
        }
    return {
        "since": since,
        "until": until,
        "first_day": _monday(since),
        "last_day": _monday(until, 6),
        "site": site,
        "pager": pager,
        "sites": [
            {
                "site": name,
                "programmes": _ordered(
                    {p: _stages(group) for p, group in by_site.get(name, {}).items()}
                ),
            }
            for name in names
        ],
        "total": _ordered({p: _stages(group) for p, group in everyone.items()}),
        "skipped": _skipped(conn, site),
    }


def _ordered(programmes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"programme": p, **programmes[p]} for p in PROGRAMMES.values() if p in programmes]


def weekly(
    conn: Connection, since: str, until: str, site: str | None
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(site, ISO week) -> {programme: stages}, each patient in the week they were first
    flagged (else first screened): the exports' cascade columns."""

    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for (name, week, programme), group in _groups(conn, since, until, site, True).items():
        out[(name, week)][programme] = _stages(group)
    return dict(out)


@bp.get("/cascade")
@login_required
def page():
    since, until = period(request.args.get("from", ""), request.args.get("to", ""))
    site = request.args.get("site") or None
    number = request.args.get("page", "1")
    found = cascade(get_db(), since, until, site, int(number) if number.isdigit() else 1)
    return render_template("hub/cascade.html", csrf=csrf_token(), cascade=found)
