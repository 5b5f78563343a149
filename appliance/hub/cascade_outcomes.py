"""Each confirmatory outcome the hub holds, read once when it arrives, with the patient
it is about: the care cascade (``cascade.py``) counts tested, confirmed and treated
patients from these rows, never parsing 60,000 payloads nor looking up their images per
page (issue 29; hub migration 9 made the table and read what the entries held).

One row per (outcome, route and patient of a result the box holds for its image):
usually one; none yet (route and patient '') when the outcome came before its result.
Kept in the transaction that stores the entries (``tallies.kept`` around a batch's
upsert, ``bad_records`` around a quarantine or a release): ``refresh`` reads the named
outcomes, and those of the named images (a result arrived, was revised or moved), again
as they stand after the change.

``readable`` is 0 for a stored outcome that does not say which test and when (an older
hub's record): the cascade skips and counts it (one row, no patient), as it did reading
the payload.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from appliance.hub import cascade_rows
from appliance.hub.db import Connection

COLUMNS = (
    "device_id",
    "entry_id",
    "route",
    "patient",
    "image_sha256",
    "readable",
    "test",
    "withdrawn",
    "positive",
    "tested_on",
    "treated_on",
    "created_at",
    "local_id",
)
INSERT = (
    f"INSERT INTO cascade_outcomes ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in COLUMNS)})"
)
NO_PATIENT = ("", "")


def facts(payload: Any) -> tuple[Any, ...]:
    """An outcome's payload as its columns from ``readable`` on (as ``cascade_rows.Tests``
    read the payload before: the latest entry per image and test, ``withdrawn`` no test)."""
    try:
        data = json.loads(payload)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        data = {}
    readable = all(isinstance(data.get(k), str) for k in ("test", "tested_on"))
    treatment = data.get("treatment")
    treated = None
    if isinstance(treatment, dict) and isinstance(treatment.get("started_on"), str):
        treated = treatment["started_on"][:10]
    try:
        local_id = int(data.get("local_id") or 0)
    except (TypeError, ValueError):
        local_id = 0
    return (
        int(readable),
        str(data["test"]) if readable else None,
        int(data.get("result") == "withdrawn"),
        int(data.get("positive") is True),
        str(data["tested_on"])[:10] if readable else None,
        treated,
        str(data.get("created_at") or ""),
        local_id,
    )


def _chunks(values: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def patients(conn: Connection, device_id: str, shas: Iterable[str]) -> dict[str, set]:
    """image sha256 -> {(route, patient)} of the box's chest and retina results for it."""
    out: dict[str, set] = defaultdict(set)
    for part in _chunks(shas):
        marks = ", ".join("?" for _ in part)
        for row in conn.execute(
            "SELECT image_sha256 AS sha, route,"
            " COALESCE(patient_id, 'image:' || image_sha256) AS patient FROM entries"
            f" WHERE device_id = ? AND image_sha256 IN ({marks}) AND kind = 'result'"
            " AND route IN ('chest_xray', 'fundus')",
            (device_id, *part),
        ):
            out[row["sha"]].add((row["route"], row["patient"]))
    return out


def _rows(conn: Connection, device_id: str, outcomes: list[dict[str, Any]]) -> list[tuple]:
    read = {o["entry_id"]: (o, facts(o["payload"])) for o in outcomes}
    shas = {o["image_sha256"] for o, f in read.values() if f[0] and o["image_sha256"]}
    found = patients(conn, device_id, {s for s in shas if isinstance(s, str)})
    rows = []
    for entry_id, (outcome, columns) in sorted(read.items()):
        sha = outcome["image_sha256"] if isinstance(outcome["image_sha256"], str) else None
        whose = sorted(found.get(sha, ())) if columns[0] and sha else []
        for route, patient in whose or [NO_PATIENT]:
            rows.append((device_id, entry_id, route, patient, sha, *columns))
    return rows


def refresh(
    conn: Connection, device_id: str, entry_ids: Iterable[str], shas: Iterable[str] = ()
) -> set[tuple[str, str]]:
    """Make the box's rows for the outcomes ``entry_ids`` and those of the images
    ``shas`` say what ``entries`` holds now (inside the transaction that changed them).
    Returns the (route, patient) those rows were and are about."""
    outcomes: list[dict[str, Any]] = []
    about: set[tuple[str, str]] = set()
    for column, values in (("entry_id", entry_ids), ("image_sha256", shas)):
        for part in _chunks(values):
            marks = ", ".join("?" for _ in part)
            where = f" WHERE device_id = ? AND {column} IN ({marks})"
            about |= {
                (r["route"], r["patient"])
                for r in conn.execute(f"SELECT route, patient FROM cascade_outcomes{where}",
                                      (device_id, *part))
            }
            conn.execute(f"DELETE FROM cascade_outcomes{where}", (device_id, *part))
            outcomes += conn.execute(
                "SELECT entry_id, image_sha256, payload FROM entries WHERE device_id = ?"
                f" AND {column} IN ({marks}) AND kind = 'outcome'",
                (device_id, *part),
            )
    rows = _rows(conn, device_id, outcomes)
    conn.executemany(INSERT, rows)
    return about | {(r[2], r[3]) for r in rows}


def follow(conn: Connection, device_id: str, rows: Iterable[dict[str, Any]]) -> None:
    """After entries of one box were stored, revised or moved (``rows``: them as they
    were and are, with kind, entry_id and image_sha256; the patient_id of those as they
    were): read again the outcomes among them and those of images whose results came or
    changed (whom an outcome is about), and write again the cascade's rows of every
    patient whose results or outcomes these were (``cascade_rows``)."""
    rows = list(rows)
    outcome_ids = {r["entry_id"] for r in rows if r["kind"] == "outcome"}
    result_shas = {
        r["image_sha256"]
        for r in rows
        if r["kind"] == "result" and isinstance(r["image_sha256"], str)
    }
    if not outcome_ids and not result_shas:
        return
    about = refresh(conn, device_id, outcome_ids, result_shas)
    for found in patients(conn, device_id, result_shas).values():
        about |= found
    site = cascade_rows.site_of(conn, device_id)
    if site is not None:
        keys = {(site, route, patient) for route, patient in about}
        cascade_rows.refresh(conn, keys | cascade_rows.result_keys(site, rows))


def rebuild(conn: Connection) -> None:
    """Read every stored outcome again (migration 9; bench/hub_dashboard.py after its
    bulk load)."""
    conn.execute("DELETE FROM cascade_outcomes")
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(
        "SELECT device_id, entry_id, image_sha256, payload FROM entries WHERE kind = 'outcome'"
    ):
        by_device[row["device_id"]].append(row)
    for device_id, outcomes in sorted(by_device.items()):
        conn.executemany(INSERT, _rows(conn, device_id, outcomes))
