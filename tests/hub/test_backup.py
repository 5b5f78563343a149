"""Backup and restore as docs/hub.md says: ``pg_dump -Fc`` of a hub in use, then
``pg_restore`` into an empty database gives a hub with the same rows, the same
tallies, its schema version, and boxes whose tokens still work."""

from __future__ import annotations

import subprocess

from hub.test_tallies import device, result, review, store
from sync.synckit import box_public_key, postgres_binaries

from appliance.hub import create_app, records, tallies
from appliance.hub.db import HubDatabase
from appliance.hub.migrations import LATEST

TABLES = ("devices", "entries", "tallies", "schema_migrations", "admins", "enrol_codes")


def counts(conn) -> dict[str, int]:
    return {t: conn.one(f"SELECT COUNT(*) AS n FROM {t}")["n"] for t in TABLES}


def test_pg_dump_and_pg_restore_round_trip(tmp_path, postgres):
    source = postgres.create_database()
    database = HubDatabase(tmp_path / "hub", source)
    database.migrate()
    conn = database.connect()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
        code = records.create_enrolment_code(conn, "Clinic A")
        token = records.enrol_device(conn, code, "box", box_public_key())["token"]
        box = device(conn, "Clinic B")
        store(conn, box, [result(n, triage=("urgent", "routine", None)[n % 3]) for n in range(40)])
        store(conn, box, [review(n) for n in range(0, 40, 6)])
        before = counts(conn)
        tallied = tallies.tallied(conn)
    finally:
        conn.close()

    dump = tmp_path / "hub.dump"
    bindir = postgres_binaries()
    subprocess.run([str(bindir / "pg_dump"), "-Fc", "-f", str(dump), source], check=True)
    target = postgres.create_database()
    subprocess.run(
        [str(bindir / "pg_restore"), "--no-owner", "--exit-on-error", "-d", target, str(dump)],
        check=True,
    )

    app = create_app(tmp_path / "restored", target)  # migrate: nothing to do
    conn = app.extensions["hub_database"].connect()
    try:
        assert counts(conn) == before
        assert tallies.tallied(conn) == tallied == tallies.recount(conn)
        assert conn.one("SELECT MAX(version) AS v FROM schema_migrations")["v"] == LATEST
        assert records.check_admin(conn, "manager", "correct horse battery")
    finally:
        conn.close()
    answer = app.test_client().get("/api/v1/ping", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.get_json()["site"] == "Clinic A"
