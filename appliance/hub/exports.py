"""What a programme reports from (login required): results as CSV per period and site,
and the indicators per site and ISO week as CSV or as a DHIS2 ``dataValueSets`` JSON
document (docs/hub.md says how to import it).

The CSV of results is streamed a device at a time in pages of ``PAGE`` rows by
(device, entry id) — never the whole table in memory, each page one index range
(``entries_device_kind_week``). The indicators come from the tallies (``tallies.py``),
a few thousand rows whatever the number of results.

Every cell goes through ``appliance.wire.csv_safe``: text a spreadsheet would run as a
formula (a site, route or model name starting with ``=``, ``+``, ``-``, ``@``) is written
with a leading apostrophe; the counts, which the hub computes, stay numbers. A stored
record the CSV cannot hold (a revision that is not a whole number, a value that is not
text) is left out, counted and logged, and the export carries on: one box's bad record
never stops another site's report half-way through a download.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, stream_with_context

from appliance.hub import get_db, tallies
from appliance.hub.cascade import PROGRAMMES, weekly
from appliance.hub.dashboard import login_required
from appliance.hub.db import Connection
from appliance.wire.csv_safe import UnwritableCell, safe_cell, safe_row

log = logging.getLogger(__name__)
bp = Blueprint("exports", __name__, url_prefix="/export")
WEEK = re.compile(r"^\d{4}-W\d{2}$")
PAGE = 5000
# RFC 4180's line end. With "\n" alone Python's csv leaves a carriage return in a cell
# unquoted, and a spreadsheet starts a new row there: a row a box could write itself.
LINE_END = "\r\n"
RESULT_COLUMNS = (
    "site",
    "device_id",
    "entry_id",
    "revision",
    "week",
    "route",
    "triage",
    "model_name",
    "model_version",
    "image_sha256",
    "received_at",
)
# Indicator -> DHIS2 data element code (import with dataElementIdScheme=CODE); create
# these data elements (or map the codes to yours) before the first import.
DATA_ELEMENTS = {
    "screened": "SCREEN_IMAGES_SCREENED",
    "positive": "SCREEN_POSITIVE",
    "positivity": "SCREEN_POSITIVITY_PCT",
    "refused": "SCREEN_REFUSED",
    "referred": "SCREEN_REFERRED",
    "reviews_pending": "SCREEN_REVIEWS_PENDING",
}
# The care cascade (cascade.py), by patient and apart for each programme, each patient in
# the week they were first flagged: flagged, tested, confirmed, treatment started, and
# the median days from flag to first test (no value where no one was tested).
CASCADE_STAGES = {
    "flagged": "FLAGGED_PATIENTS",
    "tested": "TESTED",
    "confirmed": "CONFIRMED",
    "treatment_started": "TREATMENT_STARTED",
    "days_to_test": "DAYS_TO_TEST_MEDIAN",
}
DATA_ELEMENTS.update(
    {
        f"{programme}_{stage}": f"SCREEN_{programme.upper()}_{code}"
        for programme in PROGRAMMES.values()
        for stage, code in CASCADE_STAGES.items()
    }
)


def period() -> tuple[str, str, str | None]:
    """``from``/``to`` (ISO weeks, e.g. 2024-W18, each optional) and ``site``."""
    since, until = request.args.get("from", ""), request.args.get("to", "")
    for value in (since, until):
        if value and not WEEK.match(value):
            abort(400, "from and to are ISO weeks such as 2024-W18")
    return since, until, request.args.get("site") or None


def indicators(conn: Connection, since: str, until: str, site: str | None) -> list[dict]:
    """Per site and week: images screened, positive, positivity (%), refused, referred,
    reviews pending; and each programme's cascade (``CASCADE_STAGES``)."""
    out = []
    cascades = weekly(conn, since, until, site)
    for row in tallies.site_weeks(conn, since, until, site):
        screened = row["results"] - row["refused"]
        positivity = round(100 * row["positive"] / screened, 1) if screened else None
        out.append(
            {
                "site": row["site"],
                "week": row["week"],
                "screened": screened,
                "positive": row["positive"],
                "positivity": positivity,
                "refused": row["refused"],
                "referred": row["referred"],
                "reviews_pending": row["pending"],
                **_cascade_cells(cascades.get((row["site"], row["week"]), {})),
            }
        )
    return out


def _cascade_cells(programmes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A programme's cells are empty (no DHIS2 value) where it screened no one that week:
    not screening for eyes at a site is not zero eyes flagged."""
    cells = {}
    for programme in PROGRAMMES.values():
        stages = programmes.get(programme) or {}
        for stage in CASCADE_STAGES:
            cells[f"{programme}_{stage}"] = stages.get(stage)
    return cells


def data_value_sets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """DHIS2's ``dataValueSets`` import format: one data value per indicator, site
    (org unit code) and week (DHIS2's weekly period, 2024W18)."""
    values = []
    for row in rows:
        for name, element in DATA_ELEMENTS.items():
            if row[name] is None:
                continue  # no screened image that week: no positivity to report
            values.append(
                {
                    "dataElement": element,
                    "period": row["week"].replace("-", ""),
                    "orgUnit": row["site"],
                    "value": str(row[name]),
                }
            )
    return {"dataValues": values}


@bp.get("/indicators.json")
@login_required
def indicators_dhis2():
    rows = indicators(get_db(), *period())
    response = jsonify(data_value_sets(rows))
    response.headers["Content-Disposition"] = 'attachment; filename="indicators-dhis2.json"'
    return response


@bp.get("/indicators.csv")
@login_required
def indicators_csv():
    rows = indicators(get_db(), *period())
    columns = ("site", "week", *DATA_ELEMENTS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=LINE_END)
    writer.writerow(columns)
    skipped = Skipped("indicators.csv")
    for row in rows:
        try:
            writer.writerow(safe_row(row[c] for c in columns))
        except UnwritableCell:
            skipped.add(f"{row['site']!r} {row['week']!r}")
    skipped.log()
    return _csv(iter([out.getvalue()]), "indicators.csv")


def result_cells(site: Any, row: dict[str, Any]) -> list[str | int | float]:
    """One result's cells, or UnwritableCell when the stored record is badly typed."""
    if type(row["revision"]) is not int:
        raise UnwritableCell("the revision is not a whole number")
    return [safe_cell(site), *(safe_cell(row[c]) for c in RESULT_COLUMNS[1:])]


def result_rows(since: str, until: str, site: str | None) -> Iterator[str]:
    """The CSV text of the results, a page at a time (the connection is taken inside the
    generator: the one the view had is closed once the view returns)."""
    conn = get_db()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=LINE_END)
    writer.writerow(RESULT_COLUMNS)
    sql = "SELECT id, site FROM devices" + (" WHERE site = ?" if site else "") + " ORDER BY id"
    devices = conn.execute(sql, (site,) if site else ())
    where = " AND week >= ?" if since else ""
    where += " AND week <= ?" if until else ""
    bounds = [v for v in (since, until) if v]
    skipped = Skipped("results.csv")
    for device in devices:
        after = ""
        while True:
            page = conn.execute(
                "SELECT device_id, entry_id, revision, week, route, triage, model_name,"
                " model_version, image_sha256, received_at FROM entries"
                f" WHERE device_id = ? AND kind = 'result'{where} AND entry_id > ?"
                " ORDER BY entry_id LIMIT ?",
                (device["id"], *bounds, after, PAGE),
            )
            for row in page:
                try:
                    writer.writerow(result_cells(device["site"], row))
                except UnwritableCell:
                    skipped.add(f"{device['id']} {row['entry_id']!r}")
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(page) < PAGE:
                break
            after = page[-1]["entry_id"]
    skipped.log()


@bp.get("/results.csv")
@login_required
def results_csv():
    since, until, site = period()
    return _csv(stream_with_context(result_rows(since, until, site)), "results.csv")


class Skipped:
    """The stored records an export left out: counted, the first few named in the log."""

    SHOWN = 20

    def __init__(self, export: str) -> None:
        self.export, self.count = export, 0
        self.names: list[str] = []

    def add(self, name: str) -> None:
        self.count += 1
        if len(self.names) < self.SHOWN:
            self.names.append(name)

    def log(self) -> None:
        if self.count:
            log.warning(
                "%s: %d stored record(s) left out, not text or numbers where expected: %s%s",
                self.export,
                self.count,
                ", ".join(self.names),
                " ..." if self.count > len(self.names) else "",
            )


def _csv(chunks: Iterator[str], name: str) -> Response:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
    response = Response(chunks, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{stamp}-{name}"'
    return response
