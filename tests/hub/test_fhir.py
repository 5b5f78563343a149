"""FHIR R4 from a running hub: a box syncs a real result, a client GETs it back as a
DiagnosticReport (with Observations and the ImagingStudy), every resource validated by
fhir.resources."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.error
import urllib.request

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from helpers import testdata
from pacs.kit import stored_result

from appliance.hub import records
from appliance.ingest.importer import Importer
from appliance.store.reviews import add_review
from appliance.store.users import create_user
from appliance.sync.worker import SyncWorker

RG1 = "RG1_UNCR.dcm"
PASSWORD = "correct horse battery"


@pytest.fixture
def synced(box, hub):
    """The hub holding one RG1 result (and its review) sent by a real box."""
    store, config = box
    result_id = stored_result(store, Importer(store, config), testdata(RG1))
    image_id = (
        store.conn()
        .execute("SELECT image_id FROM results WHERE id = ?", (result_id,))
        .fetchone()[0]
    )
    user = {"id": create_user(store, "dr", "123456", "clinician"), "username": "dr"}
    add_review(store, image_id=image_id, user=user, verdict="agree", reasons=[], note="")
    SyncWorker(store, config).sync_once()
    conn = hub.conn()
    records.set_admin(conn, "fhir", PASSWORD)
    conn.close()
    return hub


def get(hub, path: str, password: str | None = PASSWORD):
    request = urllib.request.Request(hub.url + path)
    if password is not None:
        token = base64.b64encode(f"fhir:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers.get_content_type() == "application/fhir+json"
        return json.load(response)


def status_of(hub, path: str, password: str | None) -> int:
    try:
        get(hub, path, password)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_a_client_gets_the_result_as_a_diagnostic_report(synced):
    rg1 = pydicom.dcmread(testdata(RG1), stop_before_pixels=True)
    body = get(synced, f"/fhir/DiagnosticReport?patient={rg1.PatientID}&date=ge2000-01-01")
    bundle = Bundle.model_validate(body)
    assert bundle.type == "searchset" and bundle.total == 1
    report = DiagnosticReport.model_validate(bundle.entry[0].resource.model_dump())
    assert report.status == "preliminary"
    assert report.code.coding[0].system == "http://loinc.org"
    assert report.subject.identifier.value == rg1.PatientID
    assert "not a diagnosis" in report.conclusion and "Clinician review: agree" in report.conclusion
    contained = {r.id: Observation.model_validate(r.model_dump()) for r in report.contained}
    assert contained["score"].valueQuantity.value == 81
    assert contained["finding"].code.coding[0].code == "233604007"  # SNOMED CT: pneumonia
    assert contained["triage"].valueCodeableConcept.coding[0].code == "urgent"
    assert [r.reference for r in report.result] == ["#score", "#finding", "#triage"]
    study = ImagingStudy.model_validate(bundle.entry[1].resource.model_dump())
    assert bundle.entry[1].search.mode == "include"
    assert report.imagingStudy[0].reference == f"ImagingStudy/{study.id}"
    assert study.identifier[0].value == f"urn:oid:{rg1.StudyInstanceUID}"
    # read by id
    again = DiagnosticReport.model_validate(get(synced, f"/fhir/DiagnosticReport/{report.id}"))
    assert again.id == report.id


def test_search_by_site_and_date_and_the_capability_statement(synced):
    assert get(synced, "/fhir/DiagnosticReport?site=Clinic%20A")["total"] == 1
    assert get(synced, "/fhir/DiagnosticReport?site=Elsewhere")["total"] == 0
    assert get(synced, "/fhir/DiagnosticReport?date=lt2000")["total"] == 0
    assert get(synced, "/fhir/DiagnosticReport?patient=nobody")["total"] == 0
    CapabilityStatement.model_validate(get(synced, "/fhir/metadata", password=None))


def test_only_an_authenticated_client_gets_reports(synced):
    assert status_of(synced, "/fhir/DiagnosticReport", None) == 401
    assert status_of(synced, "/fhir/DiagnosticReport", "wrong password") == 401
    assert status_of(synced, "/fhir/DiagnosticReport?colour=blue", PASSWORD) == 400
    assert status_of(synced, "/fhir/DiagnosticReport/dev-0.ffff", PASSWORD) == 404


class FhirServer:
    """A FHIR server stand-in on loopback: answers 503 to the first ``fail`` POSTs, then
    takes each transaction Bundle (validated with fhir.resources) and keeps it."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.received: list[Bundle] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail:
                    outer.fail -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.received.append(Bundle.model_validate_json(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.end_headers()
                self.wfile.write(b'{"resourceType":"Bundle","type":"transaction-response"}')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_hub_pushes_each_report_once_with_retries_and_again_when_it_changes(
    synced, box, tmp_path
):
    from appliance.hub.fhir.push import FhirPusher

    server = FhirServer(fail=2)
    try:
        pusher = FhirPusher(
            synced.app.extensions["hub_database"],
            server.url,
            tmp_path,
            retry_min=0.01,
            settle_seconds=0,
        )
        assert pusher.push_once() == {"pushed": 1, "unchanged": 0, "skipped": 0}  # after two 503s
        assert len(server.received) == 1
        bundle = server.received[0]
        assert bundle.type == "transaction"
        assert [e.request.url.split("/")[0] for e in bundle.entry] == [
            "ImagingStudy",
            "DiagnosticReport",
        ]
        assert all(e.request.method == "PUT" for e in bundle.entry)
        # nothing arrived since
        assert pusher.push_once() == {"pushed": 0, "unchanged": 0, "skipped": 0}
        # a new review on the box reaches the hub: the report changed, pushed again
        store, config = box
        image_id = store.conn().execute("SELECT image_id FROM results").fetchone()[0]
        user = {"id": store.conn().execute("SELECT id FROM users").fetchone()[0], "username": "dr"}
        add_review(
            store, image_id=image_id, user=user, verdict="disagree", reasons=["artefact"], note=""
        )
        SyncWorker(store, config).sync_once()
        assert pusher.push_once() == {"pushed": 1, "unchanged": 0, "skipped": 0}
        report = DiagnosticReport.model_validate(server.received[1].entry[1].resource.model_dump())
        assert "Clinician review: disagree (artefact)" in report.conclusion
    finally:
        server.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_hub_serve_pushes_reports_beside_the_server(synced, workers, tmp_path):
    """`appliance hub serve` with `hub_fhir_server_url` set pushes on its own: a thread of
    the one waitress process, or a process of its own beside gunicorn's workers."""
    import subprocess
    import sys
    import time

    from helpers import free_port
    from sync.synckit import clean_env, wait_for_port

    server = FhirServer()
    port = free_port()
    env = clean_env() | {
        "APPLIANCE_HUB_FHIR_SERVER_URL": server.url,
        "APPLIANCE_HUB_FHIR_PUSH_INTERVAL_SECONDS": "0.2",
        "APPLIANCE_HUB_FHIR_PUSH_SETTLE_SECONDS": "0",
    }
    args = [sys.executable, "-m", "appliance", "hub", "serve", "--data-dir",
            str(synced.data_dir), "--port", str(port), "--workers", str(workers)]
    log = tmp_path / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=out)
    try:
        wait_for_port(port, 30)
        deadline = time.monotonic() + 20
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(server.received) == 1, log.read_text()
        time.sleep(0.6)  # several more intervals: nothing changed, nothing pushed again
        assert len(server.received) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.close()
