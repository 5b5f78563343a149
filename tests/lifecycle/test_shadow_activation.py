"""Shadow, activate, roll back, with the real worker on real images.

A shadow version screens every new image beside the active one, into
``shadow_results`` only; activation swaps the whole model set between jobs (a job
holding the old set finishes on it); rollback brings the previous version's results
back on new images.
"""

from __future__ import annotations

import json

import pytest
from helpers import TESTS
from lifecycle.modelkit import NAME, NEW, SHIPPED

from appliance.errors import ModelStateError
from appliance.ingest.decode import decode_file
from appliance.ingest.headers import ImageLimits
from appliance.lifecycle.activation import activate, listing, rollback
from appliance.lifecycle.compare import compare
from appliance.lifecycle.install import install
from appliance.monitoring.calibration import installed_manifest
from appliance.screening.models import ModelSet
from appliance.screening.pipeline import Screener
from appliance.store import model_versions
from appliance.worker import Worker

CXR = sorted((TESTS / "data" / "cxr64").glob("*.png"))
OLD = SHIPPED


@pytest.fixture
def running_box(trusting_box, signed_file):
    """A box with the new version installed in shadow, and its worker."""
    store, config = trusting_box
    install(store, config, signed_file)
    models = ModelSet(config, log_progress=lambda line: None).load()
    assert not models.errors and set(models.shadows) == {NAME}
    screener = Screener(models, config)
    yield store, config, screener, Worker(store, config, screener, name="t")
    screener.wait_for_reload()
    screener.models.close()


def screen(importer, worker, *paths) -> list[dict]:
    ids = [importer.import_path(p, source="upload").image_id for p in paths]
    assert worker.drain() == len(ids)
    conn = worker.store.conn()
    return [
        dict(conn.execute("SELECT * FROM results WHERE image_id=?", (i,)).fetchone()) for i in ids
    ]


def switch(store, worker) -> None:
    """What the worker does between jobs: see the generation, load the new set."""
    worker.run_once()
    worker.screener.wait_for_reload()
    assert worker.screener.models.generation == model_versions.generation(store.conn())


def test_shadow_results_are_stored_apart_and_never_reach_the_worklist_or_the_hub(
    running_box, importer
):
    store, _, _, worker = running_box
    results = screen(importer, worker, *CXR[:3])
    assert {(r["model_name"], r["model_version"]) for r in results} == {(NAME, OLD)}
    conn = store.conn()
    shadows = [dict(r) for r in conn.execute("SELECT * FROM shadow_results ORDER BY id")]
    assert [(s["model_name"], s["model_version"], s["active_version"]) for s in shadows] == [
        (NAME, NEW, OLD)
    ] * 3
    assert [s["result_id"] for s in shadows] == [r["id"] for r in results]
    assert all(s["probability"] != r["probability"] for s, r in zip(shadows, results, strict=True))
    # The worklist shows the active results; the hub's outbox carries them and only them.
    items = {r["result_id"] for r in conn.execute("SELECT result_id FROM worklist_items")}
    assert items == {r["id"] for r in results}
    payloads = [r["payload"] for r in conn.execute("SELECT payload FROM outbox")]
    assert len(payloads) == 3 and not any(NEW in p for p in payloads)
    versions = [json.loads(r[0]) for r in conn.execute("SELECT model_versions FROM jobs")]
    assert all(v[NAME] == OLD for v in versions)
    report = compare(conn, NAME)[0]
    assert report["shadow_version"] == NEW and report["images"] == 3
    assert report["route_agreement"] == 1.0 and report["mean_abs_score_difference"] > 0
    assert report["with_reference"] == 0


def test_compare_reports_both_versions_sensitivity_where_outcomes_exist(running_box, importer):
    from appliance.monitoring.outcomes import add_outcome

    store, _, _, worker = running_box
    results = screen(importer, worker, *CXR[:4])
    truths = ("positive", "negative", "positive", "negative")
    for result, truth in zip(results, truths, strict=True):
        add_outcome(
            store,
            image_id=result["image_id"],
            user={"username": "t"},
            test="culture",
            result=truth,
            tested_on="2026-01-01",
        )
    report = compare(store.conn(), NAME)[0]
    assert report["with_reference"] == 4
    for side in ("active", "shadow"):
        assert report[side]["positives"] == 2 and report[side]["negatives"] == 2
        assert report[side]["sensitivity"] in (0.0, 0.5, 1.0)


def test_activation_switches_new_images_and_rollback_restores_the_previous_results(
    running_box, importer, screener
):
    store, config, box_screener, worker = running_box
    before = screen(importer, worker, CXR[0])[0]
    assert activate(store, config, NAME, NEW) == {"name": NAME, "version": NEW, "previous": OLD}
    switch(store, worker)
    after = screen(importer, worker, CXR[1])[0]
    assert (after["model_version"], before["model_version"]) == (NEW, OLD)
    states = {(r["name"], r["version"]): r["state"] for r in listing(store, config)}
    assert states[(NAME, NEW)] == "active" and states[(NAME, OLD)] == "installed"
    # What the box tells the hub (its monitoring summary) and the doctor check follow.
    assert installed_manifest(config, NAME)["version"] == NEW
    assert rollback(store, config, NAME)["version"] == OLD
    switch(store, worker)
    again = screen(importer, worker, CXR[2])[0]
    assert again["model_version"] == OLD
    # What the shipped version gives for that image, screened outside the box.
    decoded = decode_file(CXR[2], ImageLimits.from_config(config), config.preview_max_px)
    expected = screener.screen(decoded, {"patient_age_years": None})
    assert again["probability"] == pytest.approx(expected.probability, abs=1e-6)
    actions = [r[0] for r in store.conn().execute("SELECT action FROM audit_log")]
    assert {"model.installed", "model.activated", "model.rolled_back"} <= set(actions)


def test_a_job_finishes_on_the_set_that_claimed_it_and_the_old_set_closes_after(
    running_box, importer
):
    store, config, box_screener, worker = running_box
    path = CXR[5]
    decoded = decode_file(path, ImageLimits.from_config(config), config.preview_max_px)
    with box_screener.use() as held:
        activate(store, config, NAME, NEW)
        switch(store, worker)
        assert box_screener.models is not held and held.get(NAME) is not None
        result = box_screener.screen(decoded, {"patient_age_years": None}, models=held)
        assert result.model["version"] == OLD
        fresh = box_screener.screen(decoded, {"patient_age_years": None})
        assert fresh.model["version"] == NEW
    assert held.models == {}  # closed once no job held it


def test_an_installed_folder_changed_on_disk_is_never_activated(running_box):
    store, config, _, _ = running_box
    model = config.data_dir / "models" / NAME / NEW / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(ModelStateError, match="sha256 mismatch"):
        activate(store, config, NAME, NEW)
    assert model_versions.active_row(store.conn(), NAME)["version"] == OLD
    with pytest.raises(ModelStateError, match="no earlier version"):
        rollback(store, config, NAME)
