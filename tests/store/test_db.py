import sqlite3

import pytest

from appliance.store.db import Store, audit
from appliance.store.migrations import migrations


def test_database_is_wal_with_full_sync_and_migrations_are_idempotent(data_dir):
    store = Store.open(data_dir)
    conn = store.conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    applied = store.applied_migrations()
    registered = [m.name for m in migrations._migrations]  # noqa: SLF001 - the set's own list
    assert applied == registered and applied[:3] == [
        "m001_initial",
        "m002_results",
        "m003_users_reviews",
    ]
    assert store.migrate() == []  # nothing left to apply
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"studies", "images", "jobs", "quarantine", "audit_log", "volumes", "results"} <= tables
    store.close()
    # A second start on the same directory finds everything applied.
    again = Store.open(data_dir)
    assert again.migrate() == []
    again.close()


def test_audit_log_is_append_only(store):
    with store.write() as conn:
        audit(conn, "tester", "thing.done", "image:1", "detail")
    conn = store.conn()
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET action='rewritten'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    assert conn.execute("SELECT action FROM audit_log").fetchall()[0][0] == "thing.done"


def test_write_rolls_back_everything_on_error(store):
    with pytest.raises(RuntimeError):
        with store.write() as conn:
            audit(conn, "tester", "half.done")
            raise RuntimeError("crash in the middle")
    assert store.conn().execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == 0
