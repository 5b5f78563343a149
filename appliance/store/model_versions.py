"""Which model version the box runs, in shadow or not, and what shadows found.

One row per (name, version) in ``model_versions`` (m017). A name with no row runs the
bundle the appliance ships (``source='bundled'``); the first install of that name
writes the shipped version down as active, so there is always something to roll back
to. Activation and rollback are one transaction each (the partial unique index keeps
one active version per name) that also bumps ``model_generation``: a running worker
compares that number between jobs and loads the new set in the background.

Shadow results go to ``shadow_results`` only: nothing that reads ``results`` or the
outbox (the worklist, the hub, PACS) ever sees them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from appliance.store.db import utc_now

ACTIVE, SHADOW, INSTALLED, REFUSED = "active", "shadow", "installed", "refused"
BUNDLED = "bundled"


def rows(conn: sqlite3.Connection, name: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM model_versions"
    args: tuple = ()
    if name:
        sql, args = sql + " WHERE name=?", (name,)
    return [dict(r) for r in conn.execute(sql + " ORDER BY name, installed_at, version", args)]


def row(conn: sqlite3.Connection, name: str, version: str) -> dict[str, Any] | None:
    found = conn.execute(
        "SELECT * FROM model_versions WHERE name=? AND version=?", (name, version)
    ).fetchone()
    return dict(found) if found else None


def active_row(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    found = conn.execute(
        "SELECT * FROM model_versions WHERE name=? AND state='active'", (name,)
    ).fetchone()
    return dict(found) if found else None


def generation(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.execute("SELECT generation FROM model_generation").fetchone()[0])
    except sqlite3.OperationalError:  # a database not migrated to m017 yet
        return 0


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE model_generation SET generation = generation + 1")


def remember_bundled(conn: sqlite3.Connection, name: str, version: str) -> None:
    """Write the shipped version down as active, once, before anything replaces it
    (a refused file of that name changes nothing: the shipped version still runs)."""
    if conn.execute(
        "SELECT 1 FROM model_versions WHERE name=? AND (state='active' OR version=?)",
        (name, version),
    ).fetchone():
        return
    now = utc_now()
    conn.execute(
        "INSERT INTO model_versions (name, version, state, source, key_id, installed_at,"
        " activated_at, updated_at) VALUES (?, ?, 'active', 'bundled', ?, ?, ?, ?)",
        (name, version, BUNDLED, now, now, now),
    )


def record_installed(conn: sqlite3.Connection, name: str, version: str, key_id: str) -> None:
    """An installed version starts in shadow (a refused row of it is replaced)."""
    now = utc_now()
    conn.execute(
        "INSERT INTO model_versions (name, version, state, source, key_id, installed_at,"
        " updated_at) VALUES (?, ?, 'shadow', 'installed', ?, ?, ?)"
        " ON CONFLICT (name, version) DO UPDATE SET state='shadow', source='installed',"
        " key_id=excluded.key_id, reason=NULL, installed_at=excluded.installed_at,"
        " updated_at=excluded.updated_at",
        (name, version, key_id, now, now),
    )
    _bump(conn)


def record_refused(
    conn: sqlite3.Connection, name: str, version: str, key_id: str | None, reason: str
) -> None:
    """A refused file of a version the box already has leaves that version alone."""
    now = utc_now()
    conn.execute(
        "INSERT INTO model_versions (name, version, state, source, key_id, reason,"
        " updated_at) VALUES (?, ?, 'refused', 'installed', ?, ?, ?)"
        " ON CONFLICT (name, version) DO UPDATE SET reason=excluded.reason,"
        " key_id=excluded.key_id, updated_at=excluded.updated_at"
        " WHERE model_versions.state = 'refused'",
        (name, version, key_id, reason, now),
    )


def activate(conn: sqlite3.Connection, name: str, version: str) -> str | None:
    """Make ``version`` the active one (inside the caller's transaction); returns the
    version it replaces. The one it replaces stays installed, for a rollback."""
    current = active_row(conn, name)
    previous = current["version"] if current else None
    now = utc_now()
    if current:
        conn.execute(
            "UPDATE model_versions SET state='installed', updated_at=? WHERE name=? AND version=?",
            (now, name, previous),
        )
    conn.execute(
        "UPDATE model_versions SET state='active', activated_at=?, previous_version=?,"
        " updated_at=? WHERE name=? AND version=?",
        (now, previous, now, name, version),
    )
    _bump(conn)
    return previous


def set_state(conn: sqlite3.Connection, name: str, version: str, state: str) -> None:
    conn.execute(
        "UPDATE model_versions SET state=?, updated_at=? WHERE name=? AND version=?",
        (state, utc_now(), name, version),
    )
    _bump(conn)


def read_selection(data_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """(generation, active and shadow rows) for the model loader, read without opening
    a Store (no migration, no writes); nothing yet: (0, [])."""
    db_path = Path(data_dir) / "appliance.db"
    if not db_path.exists():
        return 0, []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        found = [
            dict(r)
            for r in conn.execute(
                "SELECT * FROM model_versions WHERE state IN ('active', 'shadow')"
            )
        ]
        return generation(conn), found
    except sqlite3.OperationalError:  # not migrated to m017 yet: the shipped bundles
        return 0, []
    finally:
        conn.close()


def insert_shadow_result(
    conn: sqlite3.Connection,
    image_id: int,
    job_id: int | None,
    result_id: int | None,
    active_version: str | None,
    result: dict[str, Any],
    version: str,
    name: str,
) -> int:
    cur = conn.execute(
        "INSERT INTO shadow_results (image_id, job_id, result_id, model_name, model_version,"
        " active_version, route, probability, score, threshold, triage, timings, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            image_id,
            job_id,
            result_id,
            name,
            version,
            active_version,
            result.get("route"),
            result.get("probability"),
            result.get("score"),
            result.get("threshold"),
            result.get("triage"),
            json.dumps(result.get("timings_ms") or {}),
            utc_now(),
        ),
    )
    return int(cur.lastrowid)
