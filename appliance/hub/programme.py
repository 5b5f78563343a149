"""The programme view of the dashboard: per programme (chest, retina: never mixed) and
site, results, positivity and refusal week by week against the model's validation
(``reference.py``), the threshold in force, how many confirmed cases each box holds for
calibration, the drift and health warnings its boxes raise, and boxes gone silent.

Read from what the boxes send: results (weekly rates), confirmatory outcomes, and each
box's latest monitoring summary (``monitor:summary``, one entry per box, the newest
revision kept). Same SQL on SQLite and PostgreSQL; the summaries' JSON is read here.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from flask_babel import gettext as _

from appliance.hub import charts, formats, readable
from appliance.hub.db import Connection

WEEKS = 8


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class UnreadableSummary(ValueError):
    """A stored monitoring summary the dashboard cannot show (a field of the wrong type)."""


def _typed(value: Any, kinds: tuple[type, ...], field: str, what: str) -> Any:
    if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
        return value
    raise UnreadableSummary(f"{field}: expected {what}, got {type(value).__name__}")


def _object(value: Any, field: str) -> dict[str, Any]:
    return _typed(value, (dict,), field, "an object") or {}


def _text(value: Any, field: str) -> str | None:
    return _typed(value, (str,), field, "text")


def _number(value: Any, field: str) -> float | None:
    return _typed(value, (int, float), field, "a number")


def summary_view(summary: Any) -> dict[str, Any]:
    """What the dashboard shows of one box's summary, every field of the type the page
    writes it with, or ``UnreadableSummary`` naming the first one that is not."""
    summary = _object(summary, "summary")
    positivity = _object(summary.get("models"), "models")
    models = []
    for name, status in sorted(_object(summary.get("calibration"), "calibration").items()):
        field = f"calibration.{name}"
        status = _object(status, field)
        facts = _object(positivity.get(name), f"models.{name}")
        models.append(
            {
                "name": name,
                "version": _typed(status.get("version"), (str, int, float), f"{field}.version",
                                  "text"),
                "threshold": _number(status.get("threshold"), f"{field}.threshold"),
                "source": _text(status.get("source"), f"{field}.source"),
                "calibrated_at": _text(status.get("calibrated_at"), f"{field}.calibrated_at"),
                "n_positive": _number(status.get("n_positive"), f"{field}.n_positive"),
                "n_negative": _number(status.get("n_negative"), f"{field}.n_negative"),
                "positivity": _number(facts.get("positivity"), f"models.{name}.positivity"),
            }
        )
    warnings = _typed(summary.get("warnings"), (list,), "warnings", "a list") or []
    messages = []
    for index, warning in enumerate(warnings):
        warning = _object(warning, f"warnings[{index}]")
        messages.append(_text(warning.get("message"), f"warnings[{index}].message") or "")
    return {
        "generated_at": _text(summary.get("generated_at"), "generated_at"),
        "models": models,
        "refused": _number(summary.get("refused"), "refused"),
        "warnings": messages,
    }


def box_summaries(
    conn: Connection, skipped: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Each box's latest monitoring summary: thresholds, calibration status, warnings.
    A summary that cannot be shown is left out and added to ``skipped`` (device, entry,
    reason): one box never takes the page down for every admin."""
    rows = conn.execute(
        "SELECT d.site, d.name, d.id, e.entry_id, e.payload, e.received_at FROM entries e"
        " JOIN devices d ON d.id = e.device_id WHERE e.kind = 'monitor'"
        " ORDER BY d.site, d.name"
    )
    boxes = []
    for row in rows:
        try:
            view = summary_view(json.loads(row["payload"]))
        except (ValueError, RecursionError) as exc:  # UnreadableSummary, bad JSON
            if skipped is not None:
                skipped.append(
                    {"device_id": row["id"], "entry_id": row["entry_id"], "kind": "monitor",
                     "reason": str(exc)[:300]}
                )
            continue
        boxes.append(
            {
                "site": row["site"],
                "name": row["name"],
                "device": row["id"],
                "received_at": row["received_at"],
                **view,
            }
        )
    return boxes


def programme(conn: Connection, sites: list[str]) -> dict[str, Any]:
    """For the dashboard's page of ``sites``; drift and health alarms from every site."""
    skipped: list[dict[str, Any]] = []
    boxes = box_summaries(conn, skipped)
    if skipped:
        from appliance.hub import bad_records

        bad_records.note(conn, skipped, "dashboard")
    shown = set(sites)
    return {
        "skipped": len(skipped),
        "boxes": [b for b in boxes if b["site"] in shown],
        "alarms": [b for b in boxes if b["warnings"]],
    }


# -- the programme pages' figures and charts (dashboard.py, drilldown.py) --------------
PROGRAMMES = ("chest", "retina")  # never one figure for both: other diseases, other bases
MODEL_PREFIX = {"chest": "cxr-", "retina": "fundus-"}  # as tallies.PROGRAMME decides
CHART_WEEKS = 12
SILENT_DAYS = 3  # a box not heard from for longer is flagged at the top of the pages


def programme_names() -> dict[str, str]:
    return {
        "chest": _("Chest X-ray"),
        "retina": _("Retina (eye photos)"),
        "other": _("Refused before the box could tell chest from retina"),
    }


def chart_weeks(conn: Connection) -> list[str]:
    """The chart's weeks: ``CHART_WEEKS`` up to the newest week with results."""
    newest = conn.one("SELECT MAX(week) AS w FROM tallies WHERE week <> '' AND results > 0")
    return readable.weeks_up_to(newest["w"] if newest and newest["w"] else "", CHART_WEEKS)


def per_programme(rows: list[dict[str, Any]], weeks: list[str]) -> dict[str, dict[str, list]]:
    """programme -> results, refused, positive lists along ``weeks`` (rows from
    ``tallies.programme_weeks``; a programme with no result in them is left out)."""
    place = {w: i for i, w in enumerate(weeks)}
    out: dict[str, dict[str, list]] = {}
    for row in rows:
        if row["week"] not in place:
            continue
        counts = out.setdefault(
            row["programme"], {c: [0] * len(weeks) for c in ("results", "refused", "positive")}
        )
        for name in counts:
            counts[name][place[row["week"]]] += row[name]
    return {p: out[p] for p in (*PROGRAMMES, "other") if p in out}


def totals(counts: dict[str, list]) -> dict[str, Any]:
    results, refused, positive = (sum(counts[c]) for c in ("results", "refused", "positive"))
    return {
        "results": results,
        "refused": refused,
        "positive": positive,
        "positivity": _rate(positive, results - refused),
        "refusal": _rate(refused, results),
    }


def reference_band(
    programme: str, references: dict[tuple[str, str], dict[str, Any]],
    in_use: set[tuple[str, str]],
) -> tuple[float, float] | None:
    """The validation positivity of the programme's model versions in use (lowest to
    highest), from the bundles the hub holds; None where it holds none of them."""
    found = [
        ref["positivity"]
        for (name, version), ref in references.items()
        if name.startswith(MODEL_PREFIX[programme]) and ref["positivity"] is not None
        and (name, version) in in_use
    ]
    return (min(found), max(found)) if found else None


def weekly_charts(
    counts: dict[str, dict[str, list]], weeks: list[str], bands: dict[str, Any], where: str
) -> dict[str, Any]:
    """The results-per-week chart (a bar per programme) and, per programme, its
    positivity and refusal per week over its reference band; ``where``: whose."""
    names = programme_names()
    labels = [readable.week_short(w) for w in weeks]
    titles = [readable.week_range(w) for w in weeks]
    span = f"{titles[0]} … {titles[-1]}" if titles else ""
    results = charts.bar_chart(
        labels, titles,
        [charts.Series(p, names[p], c["results"]) for p, c in counts.items()],
        title=_("Results per week, %(where)s, %(span)s", where=where, span=span),
        number=readable.count,
    )
    rates = {}
    for name in (p for p in PROGRAMMES if p in counts):
        c = counts[name]
        band = bands.get(name)
        rates[name] = charts.rate_chart(
            labels, titles,
            [
                charts.Series(name, _("positivity"), [
                    _rate(p, n - r) for p, n, r in zip(c["positive"], c["results"],
                                                         c["refused"], strict=True)]),
                charts.Series("refusal", _("refusal"), [
                    _rate(r, n) for r, n in zip(c["refused"], c["results"], strict=True)]),
            ],
            title=_("%(programme)s: positivity and refusal per week, %(where)s",
                    programme=names[name], where=where),
            percent=formats.percent,
            band=band,
            band_name=_("validation positivity of the model") if band else "",
        )
    return {"results": results, "rates": rates}


def silent_boxes(conn: Connection, days: int = SILENT_DAYS) -> list[dict[str, Any]]:
    """Boxes in service not heard from for more than ``days`` days (one enrolled that
    long ago and never heard from too), the longest silent first."""
    cutoff = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(
        timespec="milliseconds"
    )
    return conn.execute(
        "SELECT id, site, name, last_seen_at FROM devices WHERE revoked_at IS NULL"
        " AND COALESCE(last_seen_at, enrolled_at) < ?"
        " ORDER BY COALESCE(last_seen_at, enrolled_at), site, name",
        (cutoff,),
    )
