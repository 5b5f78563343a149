"""The programme view of the dashboard: per site, positivity and refusal week by week,
the threshold in force, how many confirmed cases each box holds for calibration, and
the drift and health warnings its boxes raise.

Read from what the boxes send: results (weekly rates), confirmatory outcomes, and each
box's latest monitoring summary (``monitor:summary``, one entry per box, the newest
revision kept). Same SQL on SQLite and PostgreSQL; the summaries' JSON is read here.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.hub import tallies
from appliance.hub.db import Connection

WEEKS = 8


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def weekly_rates(conn: Connection, sites: list[str]) -> dict[str, list[dict[str, Any]]]:
    """site -> its last ``WEEKS`` weeks with results, newest first: results, positivity,
    refusal (for ``sites``: a page of the dashboard)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in tallies.last_weeks(conn, sites, WEEKS):
        results, refused = row["results"], row["refused"]
        out.setdefault(row["site"], []).append(
            {
                "week": row["week"],
                "results": results,
                "positivity": _rate(row["positive"], results - refused),
                "refusal": _rate(refused, results),
            }
        )
    return out


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


def programme(
    conn: Connection, sites: list[str], per_site: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """For the dashboard's page of ``sites``; drift and health alarms from every site."""
    skipped: list[dict[str, Any]] = []
    boxes = box_summaries(conn, skipped)
    if skipped:
        from appliance.hub import bad_records

        bad_records.note(conn, skipped, "dashboard")
    shown = set(sites)
    return {
        "skipped": len(skipped),
        "weekly": weekly_rates(conn, sites),
        "outcomes": {site: n["outcomes"] for site, n in per_site.items() if n["outcomes"]},
        "boxes": [b for b in boxes if b["site"] in shown],
        "alarms": [b for b in boxes if b["warnings"]],
    }
