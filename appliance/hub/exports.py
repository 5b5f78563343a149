"""What a programme reports from (login required): results as CSV per period and site,
and the indicators per site and ISO week as CSV or as a DHIS2 ``dataValueSets`` JSON
document (docs/hub.md says how to import it).

The CSV of results is streamed a device at a time in pages of ``PAGE`` rows by
(device, entry id) — never the whole table in memory, each page one index range
(``entries_device_kind_week``). The indicators come from the tallies (``tallies.py``),
a few thousand rows whatever the number of results.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, stream_with_context

from appliance.hub import get_db, tallies
from appliance.hub.dashboard import login_required
from appliance.hub.db import Connection

bp = Blueprint("exports", __name__, url_prefix="/export")
WEEK = re.compile(r"^\d{4}-W\d{2}$")
PAGE = 5000
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


def period() -> tuple[str, str, str | None]:
    """``from``/``to`` (ISO weeks, e.g. 2024-W18, each optional) and ``site``."""
    since, until = request.args.get("from", ""), request.args.get("to", "")
    for value in (since, until):
        if value and not WEEK.match(value):
            abort(400, "from and to are ISO weeks such as 2024-W18")
    return since, until, request.args.get("site") or None


def indicators(conn: Connection, since: str, until: str, site: str | None) -> list[dict]:
    """Per site and week: images screened, positive, positivity (%), refused, referred,
    reviews pending."""
    out = []
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
            }
        )
    return out


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
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return _csv(iter([out.getvalue()]), "indicators.csv")


def result_rows(since: str, until: str, site: str | None) -> Iterator[str]:
    """The CSV text of the results, a page at a time (the connection is taken inside the
    generator: the one the view had is closed once the view returns)."""
    conn = get_db()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    sql = "SELECT id, site FROM devices" + (" WHERE site = ?" if site else "") + " ORDER BY id"
    devices = conn.execute(sql, (site,) if site else ())
    where = " AND week >= ?" if since else ""
    where += " AND week <= ?" if until else ""
    bounds = [v for v in (since, until) if v]
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
                writer.writerow([device["site"], *row.values()])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(page) < PAGE:
                break
            after = page[-1]["entry_id"]


@bp.get("/results.csv")
@login_required
def results_csv():
    since, until, site = period()
    return _csv(stream_with_context(result_rows(since, until, site)), "results.csv")


def _csv(chunks: Iterator[str], name: str) -> Response:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
    response = Response(chunks, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{stamp}-{name}"'
    return response
