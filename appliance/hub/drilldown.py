"""The programme's drill-down (login required): programme -> site -> box -> day ->
result. A site's page: its boxes (last seen, silent ones first), results per week and,
per programme, positivity and refusal against the model's validation, each model's
score distribution against its validation histogram (drift you can see), thresholds,
calibration, model versions and alarms. A box's page: the same for the one box and its
clinic days. A day: its results. A result: what the box synced, de-identified as the
box sent it (the hub never holds more), with the reviews and outcomes of its image.

Read only, through the indexes the exports use (a site's or a box's entries by
``(device_id, kind, week)``), so a page costs the site's rows, not the programme's.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import abort, render_template
from flask_babel import gettext as _

from appliance.hub import (
    cascade,
    charts,
    distribution,
    formats,
    get_db,
    programme,
    readable,
    reference,
    tallies,
)
from appliance.hub.dashboard import bp, csrf_token, device_or_404, login_required

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_BINS = 20  # the box's drift histogram (monitoring/drift.py) where no reference says


def _probability(payload: str) -> float | None:
    try:
        value = json.loads(payload).get("probability")
    except (ValueError, AttributeError, RecursionError):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return None


def _bin(index: int, total: int) -> str:
    return f"{readable.decimal(index / total, 2)}–{readable.decimal((index + 1) / total, 2)}"


def drift_charts(rows: list[dict[str, Any]], refs: dict, where: str) -> list[dict[str, Any]]:
    """Per model version scored here: its scores' shares per bin against the shares
    of its validation (the bundle's manifest, where the hub holds that bundle)."""
    scores: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        found = _probability(row["payload"])
        if found is not None and row["model_name"]:
            scores.setdefault((row["model_name"], row["model_version"] or ""), []).append(found)
    out = []
    for (name, version), values in sorted(scores.items()):
        ref = refs.get((name, version))
        bins = len(ref["score_histogram"]) if ref else DEFAULT_BINS
        counts = [0] * bins
        for value in values:
            counts[min(int(value * bins), bins - 1)] += 1
        shares = [c / len(values) for c in counts]

        chart = charts.distribution_chart(
            shares,
            ref["score_histogram"] if ref else None,
            title=_("Scores of %(model)s %(version)s at %(where)s against its validation",
                    model=name, version=version, where=where),
            site_name=_("%(where)s (%(n)s results)", where=where, n=readable.count(len(values))),
            reference_name=_("the model's validation"),
            bin_label=_bin,
            percent=formats.percent,
        )
        out.append({"model": name, "version": version, "n": len(values), "counts": counts,
                    "known": ref is not None, "chart": chart})
    return out


def _figures(where: str, *, site: str | None = None, device: str | None = None) -> dict:
    """Weekly charts and drift for a site or a box, over the programme's chart weeks."""
    conn = get_db()
    weeks = programme.chart_weeks(conn)
    since = weeks[0] if weeks else "9999"
    counts = programme.per_programme(
        tallies.programme_weeks(conn, since, site=site, device=device), weeks
    )
    in_use = {(m["model_name"], m["model_version"]) for m in tallies.models(conn)}
    refs = reference.references(conn)
    bands = {p: programme.reference_band(p, refs, in_use) for p in programme.PROGRAMMES}
    return {
        "weeks": weeks,
        "headline": {p: programme.totals(c) for p, c in counts.items()},
        "bands": bands,
        "charts": programme.weekly_charts(counts, weeks, bands, where),
        "drift": drift_charts(
            tallies.scored_results(conn, since, site=site, device=device), refs, where
        ),
        "names": programme.programme_names(),
        "silent_days": programme.SILENT_DAYS,
    }


def _boxes(site: str) -> list[dict[str, Any]]:
    conn = get_db()
    return conn.execute(
        "SELECT id, site, name, enrolled_at, revoked_at, last_seen_at, software FROM devices"
        " WHERE site = ? ORDER BY name, id",
        (site,),
    )


@bp.get("/sites/<site>")
@login_required
def site_page(site: str):
    boxes = _boxes(site)
    if not boxes:
        abort(404)
    conn = get_db()
    silent = {b["id"] for b in programme.silent_boxes(conn)}
    summaries = [b for b in programme.box_summaries(conn) if b["site"] == site]
    models = distribution.device_models(conn)
    return render_template(
        "hub/site.html",
        csrf=csrf_token(),
        site=site,
        boxes=[{**b, "silent": b["id"] in silent, "models": models.get(b["id"], [])}
               for b in boxes],
        summaries=summaries,
        cascade=cascade.cascade(conn, *cascade.period("", ""), site),
        **_figures(site, site=site),
    )


@bp.get("/boxes/<device_id>")
@login_required
def box_page(device_id: str):
    device = device_or_404(device_id)
    conn = get_db()
    where = _("%(site)s, box %(box)s", site=device["site"], box=device["name"])
    return render_template(
        "hub/box.html",
        csrf=csrf_token(),
        device=device,
        silent=any(b["id"] == device_id for b in programme.silent_boxes(conn)),
        summaries=[b for b in programme.box_summaries(conn) if b["device"] == device_id],
        models=distribution.device_models(conn).get(device_id, []),
        days=tallies.box_days(conn, device_id),
        **_figures(where, device=device_id),
    )


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A synced result as the day's and the result's pages show it."""
    try:
        data = json.loads(row["payload"])
    except (ValueError, RecursionError):
        data = {}
    data = data if isinstance(data, dict) else {}
    image = data.get("image") if isinstance(data.get("image"), dict) else {}
    return {**row, "data": data, "image": image, "probability": _probability(row["payload"])}


@bp.get("/boxes/<device_id>/days/<day>")
@login_required
def day_page(device_id: str, day: str):
    device = device_or_404(device_id)
    if not DAY.match(day):
        abort(404)
    results = [_shown(r) for r in tallies.day_entries(get_db(), device_id, day)]
    return render_template(
        "hub/day.html", csrf=csrf_token(), device=device, day=day, results=results,
        names=programme.programme_names(),
    )


@bp.get("/boxes/<device_id>/results/<path:entry_id>")
@login_required
def result_page(device_id: str, entry_id: str):
    device = device_or_404(device_id)
    conn = get_db()
    row = conn.one(
        "SELECT entry_id, revision, kind, image_sha256, route, triage, model_name,"
        " model_version, payload, received_at, result_day FROM entries"
        " WHERE device_id = ? AND entry_id = ? AND kind = 'result'",
        (device_id, entry_id),
    )
    if row is None:
        abort(404)
    related = []
    if row["image_sha256"]:
        related = [
            _shown(r)
            for r in conn.execute(
                "SELECT entry_id, kind, payload, received_at FROM entries WHERE device_id = ?"
                " AND image_sha256 = ? AND kind IN ('review', 'outcome') ORDER BY received_at",
                (device_id, row["image_sha256"]),
            )
        ]
    return render_template(
        "hub/result.html", csrf=csrf_token(), device=device, result=_shown(row),
        related=related,
    )
