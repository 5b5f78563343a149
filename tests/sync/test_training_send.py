"""``appliance training send`` (issue 27): a box's training exports go to its hub with
sync, as resumable chunks, where the site allows it; the hub checks and imports them as
``appliance hub training import`` does. A real box and a real hub over HTTP (a
fault-injecting proxy between them where the link fails)."""

from __future__ import annotations

import io
import json
import shutil
import time

import pytest
from click.testing import CliRunner
from helpers import TESTS
from hub.trainingkit import Box, Item, xray
from sync.synckit import FaultProxy, enrol

from appliance.cli import main
from appliance.hub.training import image_path
from appliance.sync.client import HubClient
from appliance.sync.identity import load_identity
from appliance.sync.training_send import OUTGOING

CXR = TESTS / "data" / "cxr64"
FILES = ("person1022_virus_1712.png", "NORMAL2-IM-0468-0001.png", "IM-0135-0001.png")
ALLOWED = {"APPLIANCE_TRAINING_SYNC": "true", "APPLIANCE_SYNC_IMAGE_CHUNK_KB": "1",
           "APPLIANCE_SYNC_RETRY_MIN_SECONDS": "0.01", "APPLIANCE_SYNC_RETRY_MAX_SECONDS": "0.05",
           "APPLIANCE_SYNC_TIMEOUT_SECONDS": "5"}  # fmt: skip


class Recorder:
    """Between the network and the hub's app: notes each request and can change one
    chunk's bytes on the way (a link that damages data) or cut the link after some."""

    def __init__(self, app, proxy: FaultProxy | None = None) -> None:
        self.app, self.proxy = app, proxy
        self.seen: list[tuple[str, str]] = []
        self.damage: set[str] = set()  # paths whose body is changed once
        self.cut_after_files: int | None = None  # completed files before the link drops

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        self.seen.append((method, path))
        if path in self.damage:
            self.damage.discard(path)
            body = bytearray(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
            body[len(body) // 2] ^= 0x01
            environ["wsgi.input"] = io.BytesIO(bytes(body))
        if self.cut_after_files is not None and self.proxy is not None:
            if len(self.completed()) >= self.cut_after_files:
                self.proxy.drop = 1.0  # from now on every request dies on the way
        return self.app(environ, start_response)

    def completed(self) -> list[str]:
        return [p for m, p in self.seen if m == "POST" and "/files/" in p]

    def puts(self) -> list[str]:
        return [p for m, p in self.seen if m == "PUT"]


def send(data_dir, env=None, *args):
    done = CliRunner().invoke(
        main, ["training", "send", "--json", "--data-dir", str(data_dir), *args],
        env={"APPLIANCE_DATA_DIR": None, **(env or {})},
    )  # fmt: skip
    return done.exit_code, json.loads(done.output) if done.output.startswith("{") else done.output


def hub_counts(hub) -> dict[str, int]:
    conn = hub.conn()
    try:
        return {t: conn.one(f"SELECT COUNT(*) AS n FROM {t}")["n"]
                for t in ("training_exports", "training_images", "training_labels")}  # fmt: skip
    finally:
        conn.close()


@pytest.fixture
def linked(tmp_path, hub):
    """An enrolled box reaching the hub through a proxy (no faults yet), every request
    the hub receives recorded; (box data dir, proxy, recorder, device id)."""
    proxy = FaultProxy(hub.port, drop=0.0, cut=0.0, delay=0.0)
    recorder = Recorder(hub.server.app, proxy)
    hub.server.app = recorder
    data_dir = tmp_path / "box"
    enrol(data_dir, proxy.url, hub.enrol_code())
    yield data_dir, proxy, recorder, load_identity(data_dir).device_id
    proxy.close()


def waiting_export(data_dir, device_id, n=5):
    """An export written by the box and waiting in its outgoing folder (as a send that
    stopped leaves it)."""
    box = Box(device_id=device_id, site="Clinic A")
    items = [Item(xray(i), patient=f"P{i % 3}", label=i % 2) for i in range(n)]
    return box.export(data_dir / OUTGOING, items)


def test_send_exports_and_the_hub_imports_the_images(tmp_path, hub):
    data = tmp_path / "box"
    run = CliRunner()
    assert run.invoke(main, ["ingest", *(str(CXR / f) for f in FILES), "--process",
                             "--data-dir", str(data)]).exit_code == 0  # fmt: skip
    register = tmp_path / "lab.csv"
    register.write_text("original_name,test,result,date\r\n"
                        f"{FILES[0]},xpert,positive,2026-03-01\r\n"
                        f"{FILES[1]},xpert,negative,2026-03-01\r\n")  # fmt: skip
    assert run.invoke(main, ["outcomes", "import", str(register), "--data-dir", str(data)],
                      env={"APPLIANCE_DATA_DIR": None}).exit_code == 0  # fmt: skip
    enrol(data, hub.url, hub.enrol_code())
    code, report = send(data, {**ALLOWED, "APPLIANCE_TRAINING_CONSENT": "always"})
    assert code == 0, report
    assert report["exported"]["images"] == 2
    assert (report["exports"], report["images"], report["labels"]) == (1, 2, 2)
    assert report["refused"] == [] and not list((data / OUTGOING).iterdir())
    assert hub_counts(hub) == {"training_exports": 1, "training_images": 2, "training_labels": 2}
    conn = hub.conn()
    try:
        shas = [r["sha256"] for r in conn.execute("SELECT sha256 FROM training_images")]
        export = conn.one("SELECT * FROM training_exports")
    finally:
        conn.close()
    assert all(image_path(hub.data_dir, sha).is_file() for sha in shas)
    assert export["device_id"] == load_identity(data).device_id
    assert not (hub.data_dir / "training" / "incoming" / export["device_id"]).exists() or not any(
        (hub.data_dir / "training" / "incoming" / export["device_id"]).iterdir()
    )
    # Sent again later: the images the hub keeps already do not travel again.
    time.sleep(1.1)  # an export's id is its second
    code, again = send(data, {**ALLOWED, "APPLIANCE_TRAINING_CONSENT": "always"})
    assert code == 0 and again["exports"] == 1 and again["images"] == 0
    assert again["files_held"] == 2 and again["files_sent"] == 3  # manifest, signature, labels


def test_policy_off_sends_nothing_and_says_why(linked):
    data_dir, _proxy, recorder, device = linked
    export = waiting_export(data_dir, device, n=2)
    code, output = send(data_dir, {"APPLIANCE_TRAINING_CONSENT": "always"})
    assert code == 1
    assert "training_sync is off" in output and "Nothing was sent" in output
    assert not [p for _m, p in recorder.seen if "/training" in p]
    assert export.is_dir()  # kept for a stick, or for when the site allows sync


def test_a_cut_link_resumes_without_resending_finished_files_and_imports_once(linked, hub):
    data_dir, proxy, recorder, device = linked
    export = waiting_export(data_dir, device)
    pristine = data_dir.parent / "pristine"
    shutil.copytree(export, pristine)
    recorder.cut_after_files = 4  # signature, manifest, labels, one image: then the link dies
    code, output = send(data_dir, ALLOWED)
    assert code == 1 and "run `appliance training send` again" in output
    finished = set(recorder.completed())
    assert len(finished) == 4 and hub_counts(hub)["training_exports"] == 0
    first_puts = len(recorder.puts())

    proxy.drop, recorder.cut_after_files = 0.0, None  # the link is back
    code, report = send(data_dir, ALLOWED)
    assert code == 0, report
    assert report["exported"] is None  # the unfinished send finished, nothing new made
    assert (report["exports"], report["images"], report["files_held"]) == (1, 5, 4)
    resent = recorder.puts()[first_puts:]
    assert not [p for p in resent if any(p.startswith(f + "/chunks/") for f in finished)]
    assert hub_counts(hub) == {"training_exports": 1, "training_images": 5, "training_labels": 5}

    # The same export brought again: imported once only.
    shutil.copytree(pristine, export)
    code, report = send(data_dir, ALLOWED)
    assert code == 0 and report["already_imported"] == [export.name] and report["exports"] == 0
    assert hub_counts(hub)["training_exports"] == 1


def test_a_flaky_link_ends_with_one_import(linked, hub):
    data_dir, proxy, _recorder, device = linked
    waiting_export(data_dir, device, n=4)
    proxy.drop, proxy.cut = 0.25, 0.15  # answers lost after the hub committed, too
    for _ in range(8):
        code, report = send(data_dir, ALLOWED)
        if code == 0:
            break
    assert code == 0, report
    assert hub_counts(hub) == {"training_exports": 1, "training_images": 4, "training_labels": 4}
    assert not list((data_dir / OUTGOING).iterdir())


def test_a_damaged_chunk_is_refused_and_sent_again(linked, hub):
    data_dir, _proxy, recorder, device = linked
    export = waiting_export(data_dir, device, n=2)
    image = sorted((export / "images").iterdir())[0]
    original = image.read_bytes()
    assert len(original) > 2048  # several 1 KB chunks
    chunk = f"/api/v1/training/{export.name}/files/images/{image.name}/chunks/1"
    recorder.damage.add(chunk)
    code, report = send(data_dir, ALLOWED)
    assert code == 0, report
    assert report["chunks_resent"] == 1 and recorder.puts().count(chunk) == 2
    assert image_path(hub.data_dir, image.stem).read_bytes() == original
    assert hub_counts(hub)["training_images"] == 2


def test_the_hub_bounds_an_upload_and_takes_only_signed_files(linked, hub):
    data_dir, _proxy, _recorder, device = linked
    export = waiting_export(data_dir, device, n=2)
    hub.app.config["HUB_TRAINING_MAX_EXPORT_BYTES"] = 6000
    code, output = send(data_dir, ALLOWED)
    assert code == 1 and "an export may hold at most 6000 bytes" in output
    assert export.is_dir() and hub_counts(hub)["training_exports"] == 0
    del hub.app.config["HUB_TRAINING_MAX_EXPORT_BYTES"]

    client = HubClient(hub.url, load_identity(data_dir).token)
    base = f"/training/{export.name}"

    def refusal(method, path, **kwargs):
        answer = client.request(method, path, answers=(400, 409, 422), **kwargs)
        return answer["error"]["code"], answer["error"]["message"]

    png = sorted((export / "images").iterdir())[0].name
    assert refusal("PUT", f"/training/{device}-20990101T000000Z/files/images/{png}/chunks/0",
                   raw=b"x")[0] == "manifest_first"  # fmt: skip
    assert refusal("PUT", f"{base}/files/images/{png}/chunks/0", raw=b"x",
                   headers={"X-Chunk-Sha256": "0" * 64})[0] == "chunk_checksum"  # fmt: skip
    unlisted = "images/" + "ab" * 32 + ".png"
    assert refusal("POST", f"{base}/files/{unlisted}",
                   body={"size": 1, "chunks": 1, "sha256": "ab" * 32})[0] == "export_refused"
    assert refusal("GET", "/training/other-box-20250301T090000Z")[0] == "bad_export_id"
    assert refusal("PUT", f"{base}/files/notes.txt/chunks/0", raw=b"x")[0] == "bad_file"
    code, _ = send(data_dir, ALLOWED)  # within the limit now: goes in
    assert code == 0 and hub_counts(hub)["training_images"] == 2
