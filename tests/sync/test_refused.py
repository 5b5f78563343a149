"""An entry the hub refuses (issue 25): the box keeps it, marked refused with the hub's
reason, shows it on the System page, and never sends it again; a later revision of the
same entry (a patient typed in) is tried again.

A real ``appliance hub serve`` process, the box's real sync worker, outbox and web app
on a real SQLite file.
"""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from helpers import PIN, free_port, logged_in
from sync.synckit import FAST_RETRIES, HubProcess, enrol, enrolment_code, make_backlog

from appliance.config import load_config
from appliance.store import outbox, users
from appliance.sync.client import HubClient
from appliance.sync.worker import SyncWorker
from appliance.web import create_app


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.fixture
def box(tmp_path):
    """An enrolled box's web app (an admin and a nurse) and a real ``hub serve``."""
    hub_dir, port = tmp_path / "hub", free_port()
    hub = HubProcess(hub_dir, port)
    config = load_config(tmp_path / "box", environ={}, usb_roots=[], min_free_mb=1, **FAST_RETRIES)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    users.create_user(store, "boss", PIN, "admin")
    users.create_user(store, "nurse", PIN, "operator")
    enrol(config.data_dir, f"http://127.0.0.1:{port}", enrolment_code(hub_dir))
    yield app, config, hub
    store.close()
    hub.kill()


def poison_first_result(store) -> int:
    """A box's bug: the first result's payload says no threshold. Returns its result id."""
    with store.write() as conn:
        row = conn.execute(
            "SELECT id, local_id, payload FROM outbox WHERE kind = 'result' ORDER BY id LIMIT 1"
        ).fetchone()
        payload = {**json.loads(row["payload"]), "probability": 0.9, "threshold": None}
        conn.execute(
            "UPDATE outbox SET payload = ? WHERE id = ?", (json.dumps(payload), row["id"])
        )
    return row["local_id"]


def states(store) -> dict[str, str]:
    rows = store.conn().execute("SELECT entry_id, revision, state FROM outbox ORDER BY id")
    return {f"{r['entry_id']}@{r['revision']}": r["state"] for r in rows}


def test_refused_entries_are_kept_shown_and_not_sent_again(box):
    app, config, hub = box
    store = app.extensions["appliance_store"]
    make_backlog(store, 3)
    result_id = poison_first_result(store)
    with store.write() as conn:
        outbox.record_monitor(
            conn,
            {
                "generated_at": "2026-03-02T10:00:00+00:00",
                "warnings": ["boom"],
                "calibration": {"cxr": "x"},
            },
        )
    worker = SyncWorker(store, config)

    first = worker.sync_once()  # the pass goes through: nothing is left to block it
    assert (first["acked"], first["refused"]) == (2, 2)
    refused = store.conn().execute(
        "SELECT kind, last_error, refused_at FROM outbox WHERE state = 'refused' ORDER BY id"
    ).fetchall()
    assert [r["kind"] for r in refused] == ["result", "monitor"]
    assert refused[0]["last_error"].startswith("threshold: ")
    assert refused[1]["last_error"].startswith("calibration.cxr: ")
    assert all(r["refused_at"] for r in refused)
    kept = states(store)

    second = worker.sync_once()  # nothing is resent: no loop on what the hub will not take
    assert (second["sent"], second["refused"]) == (0, 0)
    assert states(store) == kept
    assert worker.state().get("last_error") is None

    page = text_of(logged_in(app, "boss").get("/system").text)
    assert "The hub refused 2 entries as malformed." in page
    assert "threshold: a scored result (with a probability) needs its threshold" in page
    assert "Monitoring summary" in page and "calibration.cxr: must be an object" in page
    nurse = text_of(logged_in(app, "nurse").get("/system").text)
    assert "The hub refused 2 entries as malformed." in nurse
    assert "threshold:" not in nurse  # the reasons are for the admin

    # A patient typed in: the result's next revision is what the box knows now, and goes.
    with store.write() as conn:
        entry_id, revision = outbox.refresh_result(conn, result_id)
    third = worker.sync_once()
    assert (third["sent"], third["acked"], third["refused"]) == (1, 1, 0)
    assert states(store)[f"{entry_id}@{revision}"] == "acked"
    assert states(store)[f"{entry_id}@1"] == "refused"  # kept as it was refused
    page = text_of(logged_in(app, "boss").get("/system").text)
    assert "The hub refused 1 entry as malformed." in page
    assert "threshold:" not in page


def test_a_batch_the_hub_refuses_whole_still_marks_each_entry(box):
    """Every entry of the batch refused: the hub answers 422, the box reads it the same."""
    app, config, hub = box
    store = app.extensions["appliance_store"]
    make_backlog(store, 1)
    poison_first_result(store)
    report = SyncWorker(store, config).sync_once()
    assert (report["sent"], report["acked"], report["refused"]) == (1, 0, 1)
    identity = json.loads((config.data_dir / "secrets" / "sync_device.json").read_text())
    client = HubClient(f"http://127.0.0.1:{hub.port}", identity["token"])
    [row] = store.conn().execute("SELECT * FROM outbox").fetchall()
    wire = {"id": row["entry_id"], "rev": 1, "kind": "result", "data": json.loads(row["payload"])}
    answer = client.send_batch([wire])
    assert answer.acked == [] and answer.refused[0]["field"] == "threshold"
