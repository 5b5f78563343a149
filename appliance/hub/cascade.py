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
period). Everything is counted by the database from the patients' rows, kept on write
(``cascade_rows``: per site, programme, patient and week, with the patient's outcomes
read already), each patient once without grouping the period's results; a stored
outcome that cannot be read is skipped and counted, never a 500. Without a site, the
page shows 50 sites at a time under the total of all.
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

from appliance.hub import cascade_rows, formats, get_db
from appliance.hub.dashboard import csrf_token, login_required
from appliance.hub.db import Connection

bp = Blueprint("cascade", __name__)
PROGRAMMES = {"chest_xray": "chest", "fundus": "retina"}
STAGES = ("screened", "flagged", "tested", "confirmed", "treatment_started")
POSITIVE = ("urgent", "review")
WEEK = re.compile(r"^\d{4}-W\d{2}$")
DEFAULT_WEEKS = 13  # a quarter, the page's period when none is asked for


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


def _iso_week(day: date) -> str:
    return cascade_rows.iso_week(day.isoformat())


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


def _skipped(conn: Connection, site: str | None) -> int:
    """Stored outcomes of the site(s) that do not say which test and when."""
    row = conn.one(
        "SELECT COUNT(*) AS n FROM cascade_outcomes o JOIN devices d ON d.id = o.device_id"
        " WHERE o.readable = 0" + (" AND d.site = ?" if site else ""),
        (site,) if site else (),
    )
    return int(row["n"]) if row else 0


@dataclass
class Group:
    """One programme's patients at a site (or all sites) and period: how many were
    screened, flagged, tested, confirmed and treated, and each tested one's days from
    flag to test."""

    screened: int = 0
    flagged: int = 0
    tested: int = 0
    confirmed: int = 0
    treated: int = 0
    waits: list[int] = field(default_factory=list)

    def __iadd__(self, other: Group) -> Group:
        self.screened += other.screened
        self.flagged += other.flagged
        self.tested += other.tested
        self.confirmed += other.confirmed
        self.treated += other.treated
        self.waits += other.waits
        return self


def _stages(group: Group) -> dict[str, Any]:
    never = group.flagged - group.tested
    waits = group.waits
    return {
        "screened": group.screened,
        "flagged": group.flagged,
        "tested": group.tested,
        "confirmed": group.confirmed,
        "treatment_started": group.treated,
        "never_tested": never,
        "never_tested_share": never / group.flagged if group.flagged else None,
        "days_to_test": round(float(median(waits)), 1) if waits else None,
        "days_to_test_n": len(waits),
    }


def _groups(
    conn: Connection, since: str, until: str, site: str | None, by_week: bool, **which: Any
) -> dict[tuple[str, str, str], Group]:
    """(site, ISO week of the first flag else screening ('' unless ``by_week``),
    programme) -> its patients, counted from the patients' rows (``cascade_rows``);
    ``which``: ``among``, ``summed`` as ``cascade_rows.counted`` takes them."""
    groups: dict[tuple[str, str, str], Group] = defaultdict(Group)
    for row in cascade_rows.counted(conn, since, until, site, by_week, **which):
        tested = int(row["tested"] or 0)
        wait = row["wait"]
        groups[(row["site"], row["bucket"] or "", PROGRAMMES[row["route"]])] += Group(
            int(row["screened"] or 0),
            int(row["flagged"] or 0),
            tested,
            int(row["confirmed"] or 0),
            int(row["treated"] or 0),
            [int(wait)] * tested if wait is not None else [],
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
    pager = None
    if site is not None:
        groups = _groups(conn, since, until, site, by_week=False)
        names = [site] if groups else []
        total = groups
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
        # two reads of the period's rows: the page's sites by the site index, and every
        # site summed (500 sites' groups are not hashed or sent to be added up here)
        groups = _groups(conn, since, until, None, by_week=False, among=names)
        total = _groups(conn, since, until, None, by_week=False, summed=True)
    everyone: dict[str, Group] = defaultdict(Group)
    for (_, _, programme), group in total.items():
        everyone[programme] += group
    by_site: dict[str, dict[str, Group]] = defaultdict(dict)
    for (name, _, programme), group in groups.items():
        by_site[name][programme] = group
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
