"""The hub carries a retina photo's per-eye and per-patient result (issue 24): a real box
screens four photos of one patient (two per eye) with the real bundles, syncs them to a
real hub over HTTP, and every photo's FHIR DiagnosticReport states each eye and the
patient's result exactly as the box's SR does; a photo that changes the patient's result
sends the day's other photos again."""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
import urllib.request

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pacs.test_eyes_everywhere import PHOTOS  # two photos of each eye of patient M-3
from sync.synckit import FAST_RETRIES

from appliance.config import load_config
from appliance.hub import records
from appliance.ingest.importer import Importer
from appliance.pacs.facts import read_facts
from appliance.pacs.report import eyes_statement
from appliance.screening.pipeline import Screener
from appliance.store.eyes import eyes_of, set_eye
from appliance.store.patients import set_patients
from appliance.sync.worker import SyncWorker
from appliance.worker import Worker

PASSWORD = "correct horse battery"
ZONE = "Africa/Maputo"


@pytest.fixture
def clinic(box, hub, models):
    store, config = box
    # The clinic's zone as the first start writes it: the page and what the hub is sent
    # read the same setting.
    (config.data_dir / "config.toml").write_text(f'timezone = "{ZONE}"\n')
    config = load_config(config.data_dir, environ={}, usb_roots=[], min_free_mb=1,
                         **FAST_RETRIES)
    assert config.timezone == ZONE
    importer = Importer(store, config)
    ids = {
        name: importer.import_stream(
            io.BytesIO(path.read_bytes()), source="upload", original_name=name
        ).image_id
        for name, path in PHOTOS.items()
    }
    Worker(store, config, Screener(models, config), name="t").drain()
    first, *others = ids.values()
    set_patients(store, first, others, "M-3", "", {"username": "nurse"})
    conn = hub.conn()
    records.set_admin(conn, "fhir", PASSWORD)
    conn.close()
    return store, config, hub, ids


def reports(hub) -> dict[str, DiagnosticReport]:
    """The hub's reports by image sha256 (the report names the image's entry)."""
    request = urllib.request.Request(
        hub.url + "/fhir/DiagnosticReport?" + urllib.parse.urlencode({"patient": "M-3"})
    )
    token = base64.b64encode(f"fhir:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        bundle = Bundle.model_validate(json.load(response))
    found = [
        DiagnosticReport.model_validate(e.resource.model_dump())
        for e in bundle.entry or []
        if e.search.mode == "match"
    ]
    return {r.identifier[0].value: r for r in found}


def entry_of(store, image_id: int) -> str:
    return store.conn().execute(
        "SELECT entry_id FROM outbox WHERE destination = 'hub' AND kind = 'result'"
        " AND image_id = ? ORDER BY id DESC LIMIT 1", (image_id,)
    ).fetchone()[0]


def test_the_hub_states_each_eye_and_the_patient_as_the_box_does(clinic):
    store, config, hub, ids = clinic
    SyncWorker(store, config).sync_once()
    eyes = eyes_of(store, ids["M3_OD_1.jpg"], ZONE)
    right, left = eyes.eyes["R"].best, eyes.eyes["L"].best
    assert right is not None and left is not None
    said = reports(hub)
    assert len(said) == 4
    for name, image_id in ids.items():
        result_id = store.conn().execute(
            "SELECT MAX(id) FROM results WHERE image_id = ?", (image_id,)).fetchone()[0]
        sr = eyes_statement(read_facts(store, result_id, 1, ZONE))
        report = said[entry_of(store, image_id)]
        assert sr in report.conclusion  # the SR's sentence, word for word
        this = "right eye" if "_OD_" in name else "left eye"
        assert f"This photo: {this}." in report.conclusion
        assert f"right eye: {right['triage']} (score {right['score']})" in report.conclusion
        assert f"left eye: {left['triage']} (score {left['score']})" in report.conclusion
        assert f"patient (worse eye): {eyes.worse['triage']}" in report.conclusion


def test_a_changed_eye_sends_the_patients_other_photos_again(clinic):
    store, config, hub, ids = clinic
    SyncWorker(store, config).sync_once()
    moved = ids["M3_OS_2.jpg"]
    # The camera named it left; the nurse says right (a file from a camera that names
    # eyes wrongly). Photos named by their file keep their eye unless staff choose.
    set_eye(store, moved, "R", {"username": "nurse"})
    SyncWorker(store, config).sync_once()
    eyes = eyes_of(store, moved, ZONE)
    assert moved in eyes.eyes["R"].photos and eyes.eyes["L"].photos == [ids["M3_OS_1.jpg"]]
    said = reports(hub)
    for image_id in ids.values():  # every photo of the day, not only the one changed
        report = said[entry_of(store, image_id)]
        assert int(report.meta.versionId) >= 2, image_id
        right, left = eyes.eyes["R"].best, eyes.eyes["L"].best
        assert f"right eye: {right['triage']} (score {right['score']})" in report.conclusion
        assert f"left eye: {left['triage']} (score {left['score']})" in report.conclusion


def test_a_photo_without_a_patient_stands_alone(box, models):
    store, config = box
    importer = Importer(store, config)
    alone = importer.import_stream(
        io.BytesIO(PHOTOS["M3_OD_1.jpg"].read_bytes()), source="upload",
        original_name="OD.jpg").image_id
    Worker(store, config, Screener(models, config), name="t").drain()
    payload = json.loads(store.conn().execute(
        "SELECT payload FROM outbox WHERE destination = 'hub' AND image_id = ?", (alone,)
    ).fetchone()[0])
    # Alone: its own eye only, no other photo joined to it.
    assert payload["patient_eyes"]["eyes"]["R"]["photos"] == 1
    assert payload["patient_eyes"]["eyes"]["L"]["state"] == "no photo"


def test_the_hub_door_takes_the_box_summary_and_refuses_a_bad_one(box, models):
    from appliance.hub.schemas import check_entry

    store, config = box
    importer = Importer(store, config)
    importer.import_stream(io.BytesIO(PHOTOS["M3_OS_1.jpg"].read_bytes()), source="upload",
                           original_name="M4_OS.jpg")
    Worker(store, config, Screener(models, config), name="t").drain()
    payload = json.loads(store.conn().execute(
        "SELECT payload FROM outbox WHERE destination = 'hub' AND kind = 'result'"
    ).fetchone()[0])
    assert check_entry("result", payload) is None  # what a real box sends
    payload["patient_eyes"]["eyes"]["L"]["score"] = 101
    refusal = check_entry("result", payload)
    assert refusal is not None and "patient_eyes" in refusal.field
