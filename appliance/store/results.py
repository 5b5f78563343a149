"""Screening results: written once, in the transaction that completes their job."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance.store import outbox, pacs_outbox
from appliance.store.db import Store, audit, utc_now
from appliance.store.eyes import day_results, revise_patient_days
from appliance.store.patients import PATIENT_ID_SQL, PATIENT_NAME_SQL
from appliance.store.worklist_items import refresh_item

_JSON_FIELDS = ("hints", "router", "quality", "timings", "image_stats")


def insert_result(
    conn: sqlite3.Connection,
    image_id: int,
    job_id: int | None,
    result: dict[str, Any],
    heatmap_path: str | None,
) -> int:
    model = result.get("model") or {}
    cur = conn.execute(
        "INSERT INTO results (image_id, job_id, route, reason, hints, probability, score,"
        " threshold, triage, model_name, model_version, model_sha256, backend, router,"
        " quality, heatmap_path, timings, created_at, population, population_source, image_stats,"
        " route_source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            image_id,
            job_id,
            result["route"],
            result.get("reason"),
            json.dumps(result.get("hints") or []),
            result.get("probability"),
            result.get("score"),
            result.get("threshold"),
            result.get("triage"),
            model.get("name"),
            model.get("version"),
            model.get("sha256"),
            result.get("backend"),
            json.dumps(result.get("router") or {}),
            json.dumps(result.get("quality")) if result.get("quality") is not None else None,
            heatmap_path,
            json.dumps(result.get("timings_ms") or {}),
            utc_now(),
            result.get("population"),
            result.get("population_source"),
            json.dumps(result["image_stats"]) if result.get("image_stats") else None,
            result.get("route_source"),
        ),
    )
    result_id = int(cur.lastrowid)
    refresh_item(conn, image_id)
    outbox.record_result(conn, result_id)  # same transaction: never a result the hub misses
    pacs_outbox.record_result(conn, result_id)  # and one row per configured PACS
    # A retina photo's result changes its patient's (per eye, worse eye): the day's
    # other photos go again with it (store/eyes.py).
    revise_patient_days(conn, day_results(conn, [image_id]), done=[result_id])
    audit(
        conn,
        "worker",
        "result.created",
        f"image:{image_id}",
        json.dumps(
            {"route": result["route"], "score": result.get("score"), "triage": result.get("triage")}
        ),
    )
    return result_id


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    for name in _JSON_FIELDS:
        if item.get(name):
            item[name] = json.loads(item[name])
    return item


def list_results(store: Store, limit: int = 500) -> list[dict[str, Any]]:
    """Newest first, with the image's patient and source (for ``appliance results``)."""
    rows = store.conn().execute(
        "SELECT r.*, i.modality, i.body_part, i.source, i.original_name, i.sop_instance_uid,"
        f" {PATIENT_ID_SQL} AS patient_id, {PATIENT_NAME_SQL} AS patient_name FROM results r"
        " JOIN images i ON i.id = r.image_id JOIN studies s ON s.id = i.study_id"
        " ORDER BY r.id DESC LIMIT ?",
        (limit,),
    )
    return [_decode(row) for row in rows]
