"""DICOM results to a real Orthanc (the Debian package, started here on free ports).

"Orthanc down for a minute" is a few seconds here: the sender's backoff is scaled down
by its settings (``pacs_retry_min_seconds`` 0.3, ``pacs_retry_max_seconds`` 1), which is
what a minute is to the default 5 s .. 300 s.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import pydicom
import pytest
from click.testing import CliRunner
from helpers import Served, require_tool, testdata
from pacs.kit import stored_result
from pacs.orthanc import Orthanc

from appliance.cli import main
from appliance.pacs.sender import PacsSender
from appliance.pacs.status import pacs_status
from appliance.pacs.targets import register
from appliance.store.reviews import add_review
from appliance.store.users import create_user

RG1 = "RG1_UNCR.dcm"
FAST = {
    "pacs_retry_min_seconds": 0.3,
    "pacs_retry_max_seconds": 1.0,
    "pacs_interval_seconds": 0.2,
    "pacs_timeout_seconds": 5.0,
}


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(tmp_path / "orthanc")
    yield server
    server.stop()


@pytest.fixture
def pacs_config(config, orthanc):
    return config.with_overrides(pacs_destinations=[orthanc.address], **FAST)


def rg1_study() -> str:
    return pydicom.dcmread(testdata(RG1), stop_before_pixels=True).StudyInstanceUID


def by_modality(instances):
    found: dict[str, list] = {}
    for instance in instances:
        found.setdefault(instance["Tags"]["Modality"], []).append(instance)
    return found


def sr_items(tags) -> dict[str, list]:
    """Concept meaning -> values, from Orthanc's own JSON of the SR (its REST API)."""
    found: dict[str, list] = {}

    def walk(items):
        for item in items:
            name = item["ConceptNameCodeSequence"][0]["CodeMeaning"]
            if item["ValueType"] == "NUM":
                found.setdefault(name, []).append(
                    float(item["MeasuredValueSequence"][0]["NumericValue"])
                )
            elif item["ValueType"] == "TEXT":
                found.setdefault(name, []).append(item["TextValue"])
            walk(item.get("ContentSequence", []))

    walk(tags["ContentSequence"])
    return found


def test_orthanc_holds_an_sr_and_an_sc_in_the_source_study_and_reads_the_score_back(
    store, importer, pacs_config, orthanc, tmp_path
):
    register(store, pacs_config)
    stored_result(store, importer, testdata(RG1))
    report = PacsSender(store, pacs_config).send_once()
    assert report == {"sent": 1, "refused": 0, "unreachable": 0}
    found = by_modality(orthanc.wait_for(rg1_study(), 2))
    assert sorted(found) == ["OT", "SR"] and len(found["SR"]) == len(found["OT"]) == 1
    sr = orthanc.get(f"/instances/{found['SR'][0]['ID']}/simplified-tags")
    items = sr_items(sr)
    assert items["AI score (0-100)"] == [81.0]
    assert items["Algorithm Name"][0] == "cxr-pneumonia"
    assert items["Algorithm Version"][0] == "1.1.0"
    assert any("not a diagnosis" in text for text in items["Comment"])
    if shutil.which("dciodvfy"):  # what Orthanc holds, as it gives it back
        for instance in (found["SR"][0], found["OT"][0]):
            path = tmp_path / f"{instance['ID']}.dcm"
            path.write_bytes(orthanc.get(f"/instances/{instance['ID']}/file"))
            done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert [x for x in done.stderr.splitlines() if x.startswith("Error")] == []
    # nothing left to send: a second pass sends nothing again
    assert PacsSender(store, pacs_config).send_once()["sent"] == 0


def test_a_pacs_down_then_up_gets_both_objects_once_after_it_returns(
    store, importer, pacs_config, orthanc
):
    register(store, pacs_config)
    orthanc.stop()
    started = time.perf_counter()
    stored_result(store, importer, testdata(RG1))  # stored while the PACS is down
    assert time.perf_counter() - started < 5
    sender = PacsSender(store, pacs_config)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(3)  # the PACS is down: tried, backing off, tried again
        state = pacs_status(store, pacs_config)["destinations"][0]
        assert state["pending"] == 1 and state["sent"] == 0
        assert state["failures"] >= 2 and "could not be reached" in state["last_error"]
        orthanc.start()
        found = by_modality(orthanc.wait_for(rg1_study(), 2, timeout=20))
        time.sleep(1.5)  # a few more passes: nothing is sent twice
    finally:
        stop.set()
        thread.join(timeout=10)
    assert len(found["SR"]) == len(found["OT"]) == 1
    assert len(orthanc.instances_in_study(rg1_study())) == 2
    rows = (
        store.conn()
        .execute("SELECT state, attempts FROM outbox WHERE destination = 'pacs'")
        .fetchall()
    )
    assert [tuple(r) for r in rows] == [("acked", 0)]
    state = pacs_status(store, pacs_config)["destinations"][0]
    assert (state["pending"], state["sent"], state["failures"], state["last_error"]) == (
        0,
        1,
        0,
        None,
    )


def test_a_review_sends_a_new_sr_version_naming_the_one_before(
    store, importer, pacs_config, orthanc
):
    register(store, pacs_config)
    result_id = stored_result(store, importer, testdata(RG1))
    sender = PacsSender(store, pacs_config)
    sender.send_once()
    image_id = (
        store.conn()
        .execute("SELECT image_id FROM results WHERE id = ?", (result_id,))
        .fetchone()[0]
    )
    user = {"id": create_user(store, "dr", "123456", "clinician"), "username": "dr"}
    add_review(
        store, image_id=image_id, user=user, verdict="disagree", reasons=["false_alarm"], note=""
    )
    assert sender.send_once()["sent"] == 1
    reports = by_modality(orthanc.wait_for(rg1_study(), 3))["SR"]
    assert len(reports) == 2
    tags = {r["Tags"]["InstanceNumber"]: r for r in reports}
    second = orthanc.get(f"/instances/{tags['2']['ID']}/simplified-tags")
    first = orthanc.get(f"/instances/{tags['1']['ID']}/simplified-tags")
    assert any("disagree (false_alarm)" in t for t in sr_items(second)["Comment"])
    assert not any("disagree" in t for t in sr_items(first)["Comment"])
    predecessor = second["PredecessorDocumentsSequence"][0]["ReferencedSeriesSequence"][0]
    assert (
        predecessor["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"]
        == (first["SOPInstanceUID"])
    )


def test_cli_status_and_send_all_pending(store, importer, config, orthanc, data_dir, monkeypatch):
    monkeypatch.setenv("APPLIANCE_PACS_DESTINATIONS", f"{orthanc.address},NOWHERE@127.0.0.1:9:sr")
    monkeypatch.setenv("APPLIANCE_PACS_TIMEOUT_SECONDS", "2")
    runner = CliRunner()
    assert runner.invoke(main, ["pacs", "status", "--data-dir", str(data_dir)]).exit_code == 0
    stored_result(store, importer, testdata(RG1))
    state = json.loads(
        runner.invoke(main, ["pacs", "status", "--json", "--data-dir", str(data_dir)]).output
    )
    assert [(d["address"], d["pending"]) for d in state["destinations"]] == [
        ("NOWHERE@127.0.0.1:9", 1),
        (orthanc.address, 1),
    ]
    sent = runner.invoke(main, ["pacs", "send", "--all-pending", "--data-dir", str(data_dir)])
    assert sent.exit_code == 1  # NOWHERE is not there
    assert "2 pending: 1 sent, 0 refused, 1 PACS unreachable" in sent.output
    text = runner.invoke(main, ["pacs", "status", "--data-dir", str(data_dir)]).output
    assert f"{orthanc.address} [sc+sr]: 0 pending, 0 failed, 1 sent" in text
    assert "NOWHERE@127.0.0.1:9 [sr]: 1 pending" in text and "could not be reached" in text
    assert len(orthanc.wait_for(rg1_study(), 2)) == 2


def test_rg1_sent_to_the_box_with_storescu_reaches_orthanc_as_sr_and_sc(tmp_path, orthanc):
    """The whole box (``appliance serve``): storescu -> screening -> SR and SC in Orthanc."""
    require_tool("storescu")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        {
            "APPLIANCE_USB_ROOTS": "",
            "APPLIANCE_MIN_FREE_MB": "1",
            "APPLIANCE_PACS_DESTINATIONS": orthanc.address,
            "APPLIANCE_PACS_INTERVAL_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    served = Served(tmp_path / "box", env)
    try:
        sent = time.monotonic()
        subprocess.run(
            [
                "storescu",
                "-aec",
                "APPLIANCE",
                "127.0.0.1",
                str(served.dicom_port),
                str(testdata(RG1)),
            ],
            check=True,
            capture_output=True,
        )
        found = by_modality(orthanc.wait_for(rg1_study(), 2, timeout=60))
        took = time.monotonic() - sent
    finally:
        served.close()
    assert len(found["SR"]) == len(found["OT"]) == 1
    items = sr_items(orthanc.get(f"/instances/{found['SR'][0]['ID']}/simplified-tags"))
    conn = sqlite3.connect(tmp_path / "box" / "appliance.db")
    score, model = conn.execute("SELECT score, model_name FROM results").fetchone()
    conn.close()
    assert items["AI score (0-100)"] == [float(score)]
    assert items["Algorithm Name"][0] == model
    print(f"storescu to SR and SC in Orthanc: {took:.1f} s")
