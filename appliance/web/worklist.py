"""The worklist: what needs a person first, a search by patient or day, the referrals
still waiting for a result, the day's register (printable, and as CSV), and a way to
notice new results. Login is required as on every page (auth.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, jsonify, render_template, request
from flask_babel import format_time
from flask_babel import gettext as _

from appliance.store import worklist as queries
from appliance.web.spreadsheet import csv_response
from appliance.web.views import person_name

bp = Blueprint("worklist", __name__)

REGISTER_COLUMNS = (
    "time",
    "patient_id",
    "patient_name",
    "screened",
    "score",
    "triage",
    "reviewed_by",
    "verdict",
    "outcome",
    "image_id",
)


def _store():
    return current_app.extensions["appliance_store"]


def _timezone() -> str:
    return current_app.config["APPLIANCE"].timezone


def _day_arg() -> tuple[date | None, str]:
    """The ``day`` asked for (YYYY-MM-DD, as a date field sends it): (None, "") when none
    was, (None, why) when it cannot be read."""
    text = request.args.get("day", "").strip()
    if not text:
        return None, ""
    if len(text) == 10:
        try:
            return date.fromisoformat(text), ""
        except ValueError:
            pass
    return None, _("Choose the date with the calendar (year-month-day).")


@bp.get("/")
def index():
    current = request.args.get("filter", "all")
    if current not in queries.FILTERS:
        current = "all"
    page = max(1, request.args.get("page", 1, type=int))
    text = queries.search_text(request.args.get("q"))
    day, day_error = _day_arg()
    data = queries.worklist(_store(), current, page, _timezone(), text=text, day=day)
    # Kept on every tab and page link, so a search survives paging and changing tab.
    search = {"q": text or None, "day": day.isoformat() if day else None}
    return render_template(
        "worklist/index.html",
        data=data,
        current=current,
        search=search,
        day_error=day_error,
        search_max=queries.SEARCH_MAX,
        marker=queries.latest_marker(_store()),
    )


# A page may hold a request open until news lands (``?after=``), at most this long; the
# browser then asks again. Few of them at once: each holds one of waitress's threads, and
# the rest must stay free for pages and pictures (a waiter past the limit is answered at
# once and asks again a few seconds later, as the page did before).
MARKER_WAIT_SECONDS = 25.0
MARKER_WAITERS = 2


@bp.get("/worklist/marker")
def marker():
    """What the page watches to reload when a result, review or image lands. Without
    ``after`` the marker now; with ``after=<the page's marker>`` it is answered as soon as
    the marker differs (a new result reaches the screen in milliseconds, not at the next
    poll) or after ``MARKER_WAIT_SECONDS`` unchanged. ``waited`` says whether it waited."""
    seen = request.args.get("after", type=str)
    store = _store()
    if seen is None:
        return jsonify({"marker": queries.latest_marker(store), "waited": False})
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    waiters = app.extensions.setdefault(
        "worklist_waiters",
        threading.BoundedSemaphore(app.config.get("MARKER_WAITERS", MARKER_WAITERS)),
    )
    if not waiters.acquire(blocking=False):
        return jsonify({"marker": queries.latest_marker(store), "waited": False})
    # Set by `appliance serve` as it stops (an app without it never stops waiting early).
    stop = app.extensions.get("appliance_stop") or threading.Event()
    try:
        news = queries.wait_for_marker(
            store,
            seen[:64],
            app.config.get("MARKER_WAIT_SECONDS", MARKER_WAIT_SECONDS),
            stopping=stop.is_set,
        )
    finally:
        waiters.release()
    # A stopping box did not wait: the page then asks again in a few seconds, not at once.
    return jsonify({"marker": news, "waited": not stop.is_set()})


def _register_day() -> tuple[date, str]:
    """The register's day: the one asked for, else today where the clinic is."""
    day, error = _day_arg()
    return day or queries.local_today(_timezone()), error


@bp.get("/register")
def register():
    """One day's images, as a clinic's paper register lists them (A4 when printed)."""
    day, day_error = _register_day()
    data = queries.register(_store(), day, _timezone())
    for row in data["rows"]:  # the clinic's clock, 24-hour, as a paper register writes it
        row["time"] = format_time(datetime.fromisoformat(row["received_at"]), "HH:mm")
    return render_template(
        "worklist/register.html",
        data=data,
        day=day,
        day_error=day_error,
        previous_day=day - timedelta(days=1),
        next_day=day + timedelta(days=1),
        today=queries.local_today(_timezone()),
    )


def _local_time(value: str, zone: ZoneInfo) -> str:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _screened(row: dict[str, Any]) -> str:
    """What was screened, as stored: "chest_xray adult", "fundus", "refused"."""
    if row["route"]:
        return " ".join(part for part in (row["route"], row["population"]) if part)
    return row["status"] or ""


def register_csv_rows(data: dict[str, Any], timezone_name: str) -> Iterator[tuple]:
    zone = queries.clinic_zone(timezone_name)
    for row in data["rows"]:
        yield (
            _local_time(row["received_at"], zone),
            row["patient_id"] or "",
            person_name(row["patient_name"]),
            _screened(row),
            "" if row["score"] is None else row["score"],
            row["triage"] or "",
            row["reviewed_by"] or "",
            row["verdict"] or "",
            "; ".join(f"{test}: {result}" for test, result in row["outcomes"]),
            row["id"],
        )


@bp.get("/register.csv")
def register_csv():
    """The day's register for a spreadsheet: column names and values as codes (the same
    in every language); cells that would run as formulas are written as text."""
    day, error = _register_day()
    if error:
        abort(400, error)
    data = queries.register(_store(), day, _timezone())
    rows = register_csv_rows(data, _timezone())
    return csv_response(REGISTER_COLUMNS, rows, f"register-{day.isoformat()}.csv")
