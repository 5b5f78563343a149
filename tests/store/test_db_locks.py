"""Opening the store again in a process (``appliance serve`` opens it for its workers and
again for its web page) must keep that process's lock on the database: otherwise any
other process that closes its last connection (``appliance ingest``, ``appliance
calibrate``...) takes the WAL and its index away from under the running box."""

from __future__ import annotations

import subprocess
import sys
import threading

from appliance.store.db import Store

ANOTHER_PROCESS = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1])\n"
    "conn.execute('PRAGMA journal_mode=WAL')\n"
    "conn.execute('SELECT COUNT(*) FROM images').fetchone()\n"
    "conn.close()\n"
)


def test_a_second_store_in_the_process_keeps_the_wal_safe_from_other_processes(tmp_path):
    service = Store.open(tmp_path)
    service.conn().execute("SELECT COUNT(*) FROM images").fetchone()
    web = Store.open(tmp_path)  # the same process opens the store again
    web.conn().execute("SELECT COUNT(*) FROM images").fetchone()
    subprocess.run([sys.executable, "-c", ANOTHER_PROCESS, str(service.db_path)], check=True)
    assert (tmp_path / "appliance.db-shm").exists()
    found = []

    def new_thread():  # a web request on a fresh thread opens a fresh connection
        found.append(web.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0])

    thread = threading.Thread(target=new_thread)
    thread.start()
    thread.join()
    assert found == [0]
    web.close()
    service.close()
