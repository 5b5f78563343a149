"""Opening the data directory again (``appliance serve`` does: the service, then the web
app) must not drop the locks SQLite holds for the connections already open."""

from __future__ import annotations

import subprocess
import sys
import threading

from appliance.store.db import Store


def test_a_second_open_keeps_the_first_stores_locks(tmp_path):
    data_dir = tmp_path / "data"
    service = Store.open(data_dir)
    try:
        with service.write() as conn:
            conn.execute("INSERT INTO audit_log (at, actor, action) VALUES ('t', 'a', 'b')")
        web = Store.open(data_dir)  # as create_app does, in the same process
        # Another process (a CLI command, a backup) reads and closes its connection. With
        # the locks dropped, its close found itself the last user, checkpointed and
        # deleted the WAL and shared memory under the open connections ("disk I/O error").
        reader = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            " c.execute('SELECT COUNT(*) FROM audit_log').fetchone(); c.close()"
        )
        subprocess.run([sys.executable, "-c", reader, str(data_dir / "appliance.db")], check=True)
        assert (data_dir / "appliance.db-wal").exists()
        assert (data_dir / "appliance.db-shm").exists()
        assert service.conn().execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == 1
        web.close()
    finally:
        service.close()


def test_a_fresh_connection_after_another_process_closes_finds_the_wal(tmp_path):
    # A web request on a new thread opens a new connection to the second store: it must
    # still find the WAL and its index that another process's close left in place.
    service = Store.open(tmp_path)
    service.conn().execute("SELECT COUNT(*) FROM images").fetchone()
    web = Store.open(tmp_path)
    try:
        web.conn().execute("SELECT COUNT(*) FROM images").fetchone()
        reader = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            " c.execute('PRAGMA journal_mode=WAL');"
            " c.execute('SELECT COUNT(*) FROM images').fetchone(); c.close()"
        )
        subprocess.run([sys.executable, "-c", reader, str(service.db_path)], check=True)
        assert (tmp_path / "appliance.db-shm").exists()
        found = []

        def new_thread():
            found.append(web.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0])

        thread = threading.Thread(target=new_thread)
        thread.start()
        thread.join()
        assert found == [0]
    finally:
        web.close()
        service.close()
