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


def box_summaries(conn: Connection) -> list[dict[str, Any]]:
    """Each box's latest monitoring summary: thresholds, calibration status, warnings."""
    rows = conn.execute(
        "SELECT d.site, d.name, d.id, e.payload, e.received_at FROM entries e"
        " JOIN devices d ON d.id = e.device_id WHERE e.kind = 'monitor'"
        " ORDER BY d.site, d.name"
    )
    boxes = []
    for row in rows:
        try:
            summary = json.loads(row["payload"])
        except ValueError:
            continue
        models = []
        for name, status in sorted((summary.get("calibration") or {}).items()):
            models.append(
                {
                    "name": name,
                    "version": status.get("version"),
                    "threshold": status.get("threshold"),
                    "source": status.get("source"),
                    "calibrated_at": status.get("calibrated_at"),
                    "n_positive": status.get("n_positive"),
                    "n_negative": status.get("n_negative"),
                    "positivity": ((summary.get("models") or {}).get(name) or {}).get("positivity"),
                }
            )
        boxes.append(
            {
                "site": row["site"],
                "name": row["name"],
                "device": row["id"],
                "generated_at": summary.get("generated_at"),
                "received_at": row["received_at"],
                "models": models,
                "refused": summary.get("refused"),
                "warnings": [w.get("message", "") for w in summary.get("warnings") or []],
            }
        )
    return boxes


def programme(
    conn: Connection, sites: list[str], per_site: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """For the dashboard's page of ``sites``; drift and health alarms from every site."""
    boxes = box_summaries(conn)
    shown = set(sites)
    return {
        "weekly": weekly_rates(conn, sites),
        "outcomes": {site: n["outcomes"] for site, n in per_site.items() if n["outcomes"]},
        "boxes": [b for b in boxes if b["site"] in shown],
        "alarms": [b for b in boxes if b["warnings"]],
    }
