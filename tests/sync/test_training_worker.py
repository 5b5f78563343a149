"""The sync worker sends the training exports waiting on the box in its own passes (issue
27), where ``training_sync`` allows it: after the results, resumable, imported once, and
paced to ``sync_max_kbps`` as everything else sync sends (by hand too). A real box and a
real hub over HTTP, a fault-injecting proxy between them (``test_training_send``'s)."""

from __future__ import annotations

import shutil
import time

import pytest
from click.testing import CliRunner
from hub.trainingkit import Box, Item, xray
from sync.synckit import FAST_RETRIES, FaultProxy, enrol, make_backlog
from sync.test_training_send import (
    ALLOWED,
    CXR,
    FILES,
    Recorder,
    hub_counts,
    send,
    waiting_export,
)

from appliance.cli import main
from appliance.config import load_config
from appliance.store import outbox
from appliance.store.db import Store
from appliance.sync.identity import load_identity
from appliance.sync.training_send import OUTGOING
from appliance.sync.worker import SyncWorker

ONE_EXPORT = {"training_exports": 1, "training_images": 5, "training_labels": 5}


@pytest.fixture
def linked(tmp_path, hub):
    """An enrolled box (its store) reaching the hub through a proxy, every request the hub
    receives recorded; (store, data dir, proxy, recorder, device id)."""
    proxy = FaultProxy(hub.port, drop=0.0, cut=0.0, delay=0.0)
    recorder = Recorder(hub.server.app, proxy)
    hub.server.app = recorder
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, proxy.url, hub.enrol_code())
    yield store, data_dir, proxy, recorder, load_identity(data_dir).device_id
    store.close()
    proxy.close()


def settings(data_dir, **overrides):
    values = {**FAST_RETRIES, "training_sync": True, "sync_image_chunk_kb": 1, **overrides}
    return load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1, **values)


def training_requests(recorder) -> list[tuple[str, str]]:
    return [(m, p) for m, p in recorder.seen if p.startswith("/api/v1/training/")]


def outgoing(data_dir) -> list:
    return list((data_dir / OUTGOING).iterdir())


def test_a_pass_sends_the_waiting_export_and_the_hub_imports_it_once(linked, hub):
    store, data_dir, _proxy, recorder, device = linked
    export = waiting_export(data_dir, device)
    pristine = data_dir.parent / "pristine"
    shutil.copytree(export, pristine)
    report = SyncWorker(store, settings(data_dir)).sync_once()
    assert (report["training"]["exports"], report["training"]["images"]) == (1, 5)
    assert hub_counts(hub) == ONE_EXPORT and outgoing(data_dir) == []

    asked = len(training_requests(recorder))
    SyncWorker(store, settings(data_dir)).sync_once()  # nothing waits: nothing sent
    assert len(training_requests(recorder)) == asked

    shutil.copytree(pristine, export)  # the same export again (a copy put back)
    report = SyncWorker(store, settings(data_dir)).sync_once()
    assert report["training"]["already_imported"] == [export.name]
    assert hub_counts(hub) == ONE_EXPORT and outgoing(data_dir) == []


def test_training_sync_off_sends_nothing_and_on_sends(linked, hub):
    store, data_dir, _proxy, recorder, device = linked
    export = waiting_export(data_dir, device, n=2)
    report = SyncWorker(store, settings(data_dir, training_sync=False)).sync_once()
    assert "training" not in report and training_requests(recorder) == []
    assert export.is_dir() and hub_counts(hub)["training_exports"] == 0
    SyncWorker(store, settings(data_dir)).sync_once()  # the site allows it now
    assert hub_counts(hub)["training_exports"] == 1 and outgoing(data_dir) == []


def test_a_cut_link_resumes_on_the_next_pass_without_sending_twice(linked, hub):
    store, data_dir, proxy, recorder, device = linked
    make_backlog(store, 3)
    waiting_export(data_dir, device)
    recorder.cut_after_files = 4  # signature, manifest, labels, one image: the link dies
    report = SyncWorker(store, settings(data_dir)).sync_once()
    assert report["acked"] == 3  # the results went through; the upload stopped
    assert "the next sync pass goes on where it stopped" in report["training"]
    finished = set(recorder.completed())
    assert len(finished) == 4 and hub_counts(hub)["training_exports"] == 0
    assert len(outgoing(data_dir)) == 1  # kept until the hub confirms
    first_puts = len(recorder.puts())

    proxy.drop, recorder.cut_after_files = 0.0, None  # the link is back; the box restarted
    report = SyncWorker(store, settings(data_dir)).sync_once()
    assert (report["training"]["exports"], report["training"]["files_held"]) == (1, 4)
    resent = recorder.puts()[first_puts:]
    assert not [p for p in resent if any(p.startswith(f + "/chunks/") for f in finished)]
    assert hub_counts(hub) == ONE_EXPORT and outgoing(data_dir) == []


def test_results_go_before_the_training_upload_and_stop_it(linked, hub):
    store, data_dir, _proxy, recorder, device = linked
    make_backlog(store, 3)
    box = Box(device_id=device, site="Clinic A")
    box.export(data_dir / OUTGOING, [Item(xray(i), patient=f"P{i}", label=i % 2) for i in range(5)])
    worker = SyncWorker(store, settings(data_dir))
    assert worker.sync_once()["training"]["exports"] == 1
    paths = [p for _m, p in recorder.seen]
    last_result = max(i for i, p in enumerate(paths) if p == "/api/v1/entries")
    first_training = min(i for i, p in enumerate(paths) if p.startswith("/api/v1/training/"))
    assert last_result < first_training

    # A result arrives while an export goes up: the upload stops for it, the next pass
    # sends the result first, then goes on where the upload stopped.
    box.export(data_dir / OUTGOING, [Item(xray(i), patient="Q", label=1) for i in (5, 6, 7)])
    seen, puts = len(recorder.seen), len(recorder.puts())
    original = recorder.app

    def result_arrives(environ, start_response):
        if environ["REQUEST_METHOD"] == "PUT" and len(recorder.puts()) == puts + 5:
            make_backlog(store, 1)  # on the hub's thread: a connection of its own
        return original(environ, start_response)

    recorder.app = result_arrives
    report = worker.sync_once()
    assert report["training"]["stopped"] and report["training"]["exports"] == 0
    assert outbox.pending(store.conn(), 10, outbox.HUB)  # waits for the next pass
    report = worker.sync_once()
    assert report["acked"] == 1 and report["training"]["exports"] == 1
    later = [p for _m, p in recorder.seen[seen:]]
    entries = [i for i, p in enumerate(later) if p == "/api/v1/entries"]
    assert entries and min(i for i, p in enumerate(later) if "/complete" in p) > entries[0]
    assert hub_counts(hub)["training_exports"] == 2 and outgoing(data_dir) == []


def upload_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_sync_max_kbps_paces_the_worker_s_training_upload(linked, hub):
    store, data_dir, _proxy, _recorder, device = linked
    size = upload_bytes(waiting_export(data_dir, device, n=3))
    started = time.monotonic()
    report = SyncWorker(store, settings(data_dir, sync_max_kbps=64)).sync_once()
    elapsed = time.monotonic() - started
    assert report["training"]["exports"] == 1
    assert elapsed >= 0.9 * size * 8 / 64_000, (size, elapsed)  # uncapped: well under that


def test_sync_max_kbps_paces_training_send_by_hand(linked, hub):
    _store, data_dir, _proxy, _recorder, device = linked
    size = upload_bytes(waiting_export(data_dir, device, n=3))
    started = time.monotonic()
    code, report = send(data_dir, {**ALLOWED, "APPLIANCE_SYNC_MAX_KBPS": "64"})
    elapsed = time.monotonic() - started
    assert code == 0 and report["exports"] == 1, report
    assert elapsed >= 0.9 * size * 8 / 64_000, (size, elapsed)


def test_queue_exports_now_and_the_worker_sends_it(tmp_path, hub, linked):
    """`training send --queue` needs no link: the export waits for the worker's pass."""
    store, data_dir, proxy, recorder, _device = linked
    run = CliRunner()
    assert run.invoke(main, ["ingest", *(str(CXR / f) for f in FILES), "--process",
                             "--data-dir", str(data_dir)],
                      env={"APPLIANCE_DATA_DIR": None}).exit_code == 0  # fmt: skip
    register = tmp_path / "lab.csv"
    register.write_text("original_name,test,result,date\r\n"
                        f"{FILES[0]},xpert,positive,2026-03-01\r\n")  # fmt: skip
    assert run.invoke(main, ["outcomes", "import", str(register), "--data-dir", str(data_dir)],
                      env={"APPLIANCE_DATA_DIR": None}).exit_code == 0  # fmt: skip
    proxy.drop = 1.0  # no link now
    code, report = send(data_dir, {**ALLOWED, "APPLIANCE_TRAINING_CONSENT": "always"}, "--queue")
    assert code == 0, report
    assert report["exported"]["images"] == 1 and report["waiting"] == 1
    assert training_requests(recorder) == []
    proxy.drop = 0.0
    worker = SyncWorker(store, settings(data_dir, training_consent="always"))
    assert worker.sync_once()["training"]["exports"] == 1
    assert hub_counts(hub)["training_images"] == 1 and outgoing(data_dir) == []
