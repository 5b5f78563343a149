"""Shadow against active, on this site's own images.

Agreement: of the images both screened, how often the shadow version gave the same
route and the same call (refer: review or urgent; else not), and how far apart the
scores were. Where a reference exists (a confirmatory outcome, else a clinician's
review of the active result: agree keeps its call, disagree flips it), each version's
sensitivity and specificity on those images.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.monitoring.outcomes import references

REFER = ("review", "urgent")


def _review_references(conn: sqlite3.Connection) -> dict[int, bool]:
    """image id -> what the latest review says the truth is (about the active result)."""
    found = {}
    for row in conn.execute(
        "SELECT v.image_id, v.verdict, r.triage FROM reviews v JOIN results r"
        " ON r.id = v.result_id WHERE v.id IN (SELECT MAX(id) FROM reviews GROUP BY image_id)"
    ):
        called = row["triage"] in REFER
        found[row["image_id"]] = called if row["verdict"] == "agree" else not called
    return found


def _rates(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    """Sensitivity and specificity from (called, truth) pairs."""
    tp = sum(1 for called, truth in pairs if called and truth)
    pos = sum(1 for _, truth in pairs if truth)
    tn = sum(1 for called, truth in pairs if not called and not truth)
    neg = len(pairs) - pos
    return {
        "positives": pos,
        "negatives": neg,
        "sensitivity": round(tp / pos, 4) if pos else None,
        "specificity": round(tn / neg, 4) if neg else None,
    }


def compare(conn: sqlite3.Connection, name: str, version: str | None = None) -> list[dict]:
    """One report per shadow version of ``name`` (or just ``version``)."""
    sql = (
        "SELECT s.image_id, s.model_version, s.active_version, s.route AS s_route,"
        " s.probability AS s_prob, s.triage AS s_triage, r.route AS a_route,"
        " r.probability AS a_prob, r.triage AS a_triage, r.model_name AS a_model"
        " FROM shadow_results s JOIN results r ON r.id = s.result_id WHERE s.model_name=?"
    )
    args: list[Any] = [name]
    if version:
        sql += " AND s.model_version=?"
        args.append(version)
    truth = {**_review_references(conn), **references(conn)}  # outcomes win
    by_version: dict[str, list[sqlite3.Row]] = {}
    for row in conn.execute(sql + " ORDER BY s.id", args):
        by_version.setdefault(row["model_version"], []).append(row)
    return [_report(name, v, rows, truth) for v, rows in sorted(by_version.items())]


def _report(name: str, version: str, rows: list, truth: dict[int, bool]) -> dict[str, Any]:
    same_route = sum(1 for r in rows if r["s_route"] == r["a_route"])
    scored = [r for r in rows if r["s_prob"] is not None and r["a_prob"] is not None]
    same_call = sum(1 for r in scored if (r["s_triage"] in REFER) == (r["a_triage"] in REFER))
    referenced = [r for r in scored if r["image_id"] in truth]
    return {
        "name": name,
        "shadow_version": version,
        "active_versions": sorted({r["active_version"] or "?" for r in rows}),
        "images": len(rows),
        "route_agreement": round(same_route / len(rows), 4) if rows else None,
        "scored": len(scored),
        "call_agreement": round(same_call / len(scored), 4) if scored else None,
        "mean_abs_score_difference": (
            round(sum(abs(r["s_prob"] - r["a_prob"]) for r in scored) / len(scored), 4)
            if scored
            else None
        ),
        "with_reference": len(referenced),
        "active": _rates([(r["a_triage"] in REFER, truth[r["image_id"]]) for r in referenced]),
        "shadow": _rates([(r["s_triage"] in REFER, truth[r["image_id"]]) for r in referenced]),
    }
