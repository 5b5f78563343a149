import os
import sqlite3
import stat
import subprocess
import sys

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


def modes(data_dir) -> dict[str, int]:
    names = ["", "appliance.db", "appliance.db-wal", "appliance.db-shm"]
    return {name or ".": stat.S_IMODE((data_dir / name).stat().st_mode) for name in names}


PRIVATE = {".": 0o700, "appliance.db": 0o600, "appliance.db-wal": 0o600, "appliance.db-shm": 0o600}


@pytest.fixture
def lax_umask():
    """A umask that would leave new files world-readable (the default on most systems)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_data_dir_and_database_are_the_owners_alone(data_dir, lax_umask):
    store = Store.open(data_dir)
    with store.write() as conn:  # the WAL and shared-memory files exist from here
        audit(conn, "tester", "thing.done")
    assert modes(data_dir) == PRIVATE
    store.close()


def test_an_older_install_is_tightened_at_start_up(data_dir, lax_umask):
    data_dir.mkdir(mode=0o755)
    conn = sqlite3.connect(data_dir / "appliance.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()  # left open: -wal and -shm stay, world-readable like the database
    assert modes(data_dir)["appliance.db-shm"] == 0o644
    store = Store.open(data_dir)
    assert modes(data_dir) == PRIVATE
    store.close()
    conn.close()


def test_a_commit_that_need_not_wait_for_the_disk_is_one_commit_only(store):
    """Issue 28: a lease or a 'decode began' note commits with synchronous=NORMAL; the
    connection is FULL again after it, whether it committed or rolled back."""
    with store.write(durable=False) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        audit(conn, "tester", "lease.taken")
    assert store.conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(RuntimeError):
        with store.write(durable=False) as conn:
            audit(conn, "tester", "half.done")
            raise RuntimeError("crash in the middle")
    assert store.conn().execute("PRAGMA synchronous").fetchone()[0] == 2
    with store.write() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    actions = [r[0] for r in store.conn().execute("SELECT action FROM audit_log")]
    assert actions == ["lease.taken"]


def test_a_process_that_dies_after_a_commit_not_waited_onto_the_disk_has_written_it(data_dir):
    """What ``durable=False`` still promises: the process killed right after the commit
    (no close, no checkpoint) -- the row is there for the next one."""
    Store.open(data_dir).close()
    child = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from appliance.store.db import Store, audit\n"
        "store = Store.open(Path(sys.argv[1]))\n"
        "with store.write(durable=False) as conn:\n"
        "    audit(conn, 'child', 'decode.began')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(data_dir)], timeout=60)
    assert done.returncode == -9
    again = Store.open(data_dir)
    assert [r[0] for r in again.conn().execute("SELECT action FROM audit_log")] == [
        "decode.began"
    ]
    again.close()
