"""The hub's schema is versioned: the same numbered migrations on SQLite and PostgreSQL,
applied once (``appliance hub migrate`` is idempotent, and so is every start), a hub
created before the numbering upgraded in place with its counts, and a database newer
than the code refused with a message that says what to do."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sync.synckit import hub_database_from_the_future

from appliance.cli import main
from appliance.errors import HubDatabaseError
from appliance.hub import create_app, records
from appliance.hub.db import HubDatabase
from appliance.hub.migrations import INITIAL, LATEST, MIGRATIONS


def run(*args: str):
    result = CliRunner().invoke(main, list(args), env={"APPLIANCE_DATA_DIR": None})
    return result


def test_migrate_applies_every_migration_once(tmp_path, database_url):
    args = ["hub", "migrate", "--data-dir", str(tmp_path)]
    if database_url:
        args += ["--database-url", database_url]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert f"applied {', '.join(str(m.version) for m in MIGRATIONS)}" in first.output
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert f"already at version {LATEST}" in again.output
    conn = HubDatabase(tmp_path, database_url).connect()
    try:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        conn.close()
    assert [r["version"] for r in rows] == [m.version for m in MIGRATIONS]


def test_a_hub_from_before_the_numbering_is_upgraded_with_its_counts(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    conn = database.connect()
    try:
        with conn.transaction():  # what an older hub's migrate() created, and its rows
            for statement in INITIAL:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO devices (id, site, name, token_hash, public_key, enrolled_at)"
                " VALUES ('dev-1', 'Clinic A', 'box', 'h', 'k', '2024-01-01')"
            )
            for n, triage in enumerate(["urgent", "routine", "review", None]):
                conn.execute(
                    "INSERT INTO entries (device_id, entry_id, revision, kind, image_sha256,"
                    " route, triage, week, payload, received_at) VALUES"
                    " ('dev-1', ?, 1, 'result', ?, ?, ?, '2024-W18', '{}', '2024-05-01')",
                    (f"result:{n}", f"sha{n}", "refused" if triage is None else "cxr", triage),
                )
            conn.execute(
                "INSERT INTO entries (device_id, entry_id, revision, kind, image_sha256,"
                " week, payload, received_at) VALUES"
                " ('dev-1', 'review:sha0', 1, 'review', 'sha0', '2024-W19', '{}', '2024-05-09')"
            )
        assert database.migrate() == [m.version for m in MIGRATIONS]
        rows = conn.execute(
            "SELECT week, SUM(results) AS results, SUM(refused) AS refused,"
            " SUM(positive) AS positive, SUM(reviews) AS reviews, SUM(pending) AS pending"
            " FROM tallies GROUP BY week ORDER BY week"
        )
    finally:
        conn.close()
    counts = [{k: (int(v) if k != "week" else v) for k, v in r.items()} for r in rows]
    assert counts == [
        {"week": "2024-W18", "results": 4, "refused": 1, "positive": 2, "reviews": 0, "pending": 1},
        {"week": "2024-W19", "results": 0, "refused": 0, "positive": 0, "reviews": 1, "pending": 0},
    ]


def test_a_newer_database_is_refused(tmp_path, database_url):
    hub_database_from_the_future(tmp_path, database_url)
    with pytest.raises(HubDatabaseError, match=f"schema version {LATEST + 1}, newer"):
        create_app(tmp_path, database_url)
    args = ["hub", "migrate", "--data-dir", str(tmp_path)]
    result = run(*args, *(["--database-url", database_url] if database_url else []))
    assert result.exit_code != 0
    assert "newer than this hub knows" in result.output


def test_a_hub_at_version_3_gets_patient_and_day_columns_from_its_payloads(tmp_path, database_url):
    from appliance.hub.migrations import LEDGER

    database = HubDatabase(tmp_path, database_url)
    conn = database.connect()
    payloads = {
        "result:1": {
            "image": {"sha256": "a", "patient_id": "P-7"},
            "created_at": "2026-03-02T10:00",
        },
        "result:2": {"image": {"sha256": "b", "patient_id": ""}, "created_at": "2026-03-03T11:00"},
        "result:3": {"image": {"sha256": "c"}},
    }
    try:
        with conn.transaction():  # the hub as the previous release left it
            conn.execute(LEDGER)
            for migration in MIGRATIONS[:3]:
                for statement in migration.for_backend(conn.backend):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, records.now()),
                )
            conn.execute(
                "INSERT INTO devices (id, site, name, token_hash, public_key, enrolled_at)"
                " VALUES ('dev-1', 'Clinic A', 'box', 'h', 'k', '2024-01-01')"
            )
            for entry_id, payload in payloads.items():
                conn.execute(
                    "INSERT INTO entries (device_id, entry_id, revision, kind, payload,"
                    " received_at) VALUES ('dev-1', ?, 1, 'result', ?, '2026-03-04')",
                    (entry_id, json.dumps(payload)),
                )
        assert database.migrate() == list(range(4, LATEST + 1))
        rows = conn.execute(
            "SELECT entry_id, patient_id, result_day FROM entries ORDER BY entry_id"
        )
    finally:
        conn.close()
    assert [(r["entry_id"], r["patient_id"], r["result_day"]) for r in rows] == [
        ("result:1", "P-7", "2026-03-02"),
        ("result:2", None, "2026-03-03"),
        ("result:3", None, None),
    ]
