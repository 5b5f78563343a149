"""The System page's sync section (issue 24, defect 5) and its words (defect 10): what
the box really knows about its enrolment, an admin's enrolment form that makes the
command line's checks, and plain words instead of install commands and key ids.

A real hub on loopback (``hub`` fixture), the real CLI (``appliance sync enrol``,
``sync --once``), the box's web app on a real SQLite file.
"""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from click.testing import CliRunner
from helpers import csrf_from, free_port, logged_in
from sync.synckit import make_backlog

from appliance.cli import main
from appliance.config import load_config
from appliance.inference.backends import backend_report
from appliance.store import users
from appliance.sync.identity import DEVICE_FILE
from appliance.web import create_app
from appliance.web.system import backend_in_words

PIN = "2468"


def run(*args: str, **env: str):
    return CliRunner().invoke(main, list(args), env={"APPLIANCE_DATA_DIR": None, **env})


def enrol_by_cli(data_dir, hub_url: str, code: str) -> None:
    enrolled = run("sync", "enrol", "--data-dir", str(data_dir), "--hub", hub_url, "--code", code)
    assert enrolled.exit_code == 0, enrolled.output


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.fixture
def box(tmp_path):
    """The box's web app, started before any enrolment (as `appliance serve` is), with
    an admin and a nurse."""
    config = load_config(tmp_path / "box", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    users.create_user(store, "boss", PIN, "admin")
    users.create_user(store, "nurse", PIN, "operator")
    yield app
    store.close()


def system_page(client) -> str:
    response = client.get("/system")
    assert response.status_code == 200
    return text_of(response.text)


def enrol_form(client, hub_url: str, code: str):
    token = csrf_from(client.get("/system").text)
    return client.post(
        "/system/sync/enrol",
        data={"csrf_token": token, "hub_url": hub_url, "code": code},
        follow_redirects=True,
    )


def test_enrolled_from_the_command_line_the_page_shows_the_hub_and_the_last_sync(box, hub):
    config = box.config["APPLIANCE"]
    data = str(config.data_dir)
    client = logged_in(box, "boss")
    assert "Not set up: every result stays on the box." in system_page(client)

    # Another process enrols and syncs once, while this app keeps its settings.
    enrol_by_cli(data, hub.url, hub.enrol_code("Ndola"))
    make_backlog(box.extensions["appliance_store"], 4)
    once = run("sync", "--data-dir", data, "--once")
    assert once.exit_code == 0 and "acknowledged 4" in once.output, once.output

    page = system_page(client)
    assert "every result stays on the box" not in page and "not enrolled" not in page
    assert f"Hub: {hub.url}" in page
    assert "Enrolled for the site Ndola: results are sent by themselves." in page
    assert "Waiting to send: 0 results, 0 reviews" in page
    assert "Received by the hub: 4 results, 0 reviews" in page
    assert "Last successful sync: never" not in page
    assert re.search(r"Last successful sync: \S+", page)
    # A nurse sees the same state, and no form to change it.
    nurse = logged_in(box, "nurse")
    assert "Enrolled for the site Ndola" in system_page(nurse)
    assert 'action="/system/sync/enrol"' not in nurse.get("/system").text


def test_a_failed_sync_is_said_in_plain_words(box, hub):
    config = box.config["APPLIANCE"]
    data = str(config.data_dir)
    enrol_by_cli(data, hub.url, hub.enrol_code())
    make_backlog(box.extensions["appliance_store"], 2)
    failed = run(  # the hub moved away: nothing answers where the box sends
        "sync",
        "--data-dir",
        data,
        "--once",
        APPLIANCE_SYNC_HUB_URL=f"http://127.0.0.1:{free_port()}",
        APPLIANCE_SYNC_RETRY_MIN_SECONDS="0.01",
        APPLIANCE_SYNC_RETRY_MAX_SECONDS="0.02",
    )
    assert failed.exit_code == 1 and "Connection refused" in failed.output, failed.output
    page = system_page(logged_in(box, "boss"))
    assert "Waiting to send: 2 results" in page
    assert "The hub could not be reached (no network, or the hub is off)" in page
    assert "Connection refused" not in page and "Errno" not in page


def test_the_admins_form_enrols_the_box_and_is_audited(box, hub):
    config = box.config["APPLIANCE"]
    client = logged_in(box, "boss")
    page = client.get("/system").text
    assert 'action="/system/sync/enrol"' in page and "Enrol this box with a hub" in page

    done = enrol_form(client, hub.url + "/", " " + hub.enrol_code("Kabwe") + " ")
    page = text_of(done.text)
    assert "Enrolled for the site Kabwe: results are sent by themselves." in page
    assert f"Hub: {hub.url}" in page
    # The same files and setting as `appliance sync enrol`, and the same hub device.
    identity = json.loads((config.data_dir / DEVICE_FILE).read_text())
    assert identity["hub_url"] == hub.url and identity["site"] == "Kabwe"
    assert (config.data_dir / DEVICE_FILE).stat().st_mode & 0o777 == 0o600
    assert load_config(config.data_dir, environ={}).sync_hub_url == hub.url
    [device] = json.loads(run("hub", "devices", "--data-dir", str(hub.data_dir), "--json").output)
    assert device["id"] == identity["device_id"]
    store = box.extensions["appliance_store"]
    [(actor, subject, detail)] = (
        store.conn()
        .execute("SELECT actor, subject, detail FROM audit_log WHERE action = 'sync.enrolled'")
        .fetchall()
    )
    assert actor == "boss" and subject == hub.url
    assert json.loads(detail) == {"device_id": identity["device_id"], "site": "Kabwe"}
    assert "token" not in detail
    # The box really syncs with what the form stored.
    make_backlog(store, 3)
    once = run("sync", "--data-dir", str(config.data_dir), "--once")
    assert once.exit_code == 0 and "acknowledged 3" in once.output, once.output


@pytest.mark.parametrize(
    "code, address, said",
    [
        ("ABCD-EFGH-JKLM", None, "the hub does not know this enrolment code; check it"),
        ("used", None, "this enrolment code was already used; ask the hub's administrator"),
        ("what is this?", None, "an enrolment code looks like ABCD-EFGH-JKLM"),
        ("ABCD-EFGH-JKLM", "hub.example.org", "the hub's address must start with https://"),
        ("ABCD-EFGH-JKLM", "closed", "the hub did not answer at this address; check the"),
        ("ABCD-EFGH-JKLM", "not a hub", "what answers at this address is not a hub;"),
        ("", None, "give the hub's address and the enrolment code."),
    ],
)
def test_the_form_refuses_in_plain_words_and_changes_nothing(box, hub, code, address, said):
    config = box.config["APPLIANCE"]
    if code == "used":
        code = hub.enrol_code()
        enrol_by_cli(config.data_dir.parent / "other", hub.url, code)  # another box used it
    url = {
        None: hub.url,
        "closed": f"http://127.0.0.1:{free_port()}",
        "not a hub": hub.url + "/nowhere",
    }.get(address, address)
    client = logged_in(box, "boss")
    page = text_of(enrol_form(client, url, code).text)
    assert f"Enrolment not done: {said}" in page
    assert "Enrolled for the site" not in page
    assert "Not set up: every result stays on the box." in page
    assert not (config.data_dir / DEVICE_FILE).exists()
    assert load_config(config.data_dir, environ={}).sync_hub_url == ""
    assert "HubAuthError" not in page and "unknown enrolment code" not in page


def test_only_an_admin_enrols_and_never_without_the_forms_token(box, hub):
    config = box.config["APPLIANCE"]
    code = hub.enrol_code()
    nurse = logged_in(box, "nurse")
    token = csrf_from(nurse.get("/system").text)
    refused = nurse.post(
        "/system/sync/enrol", data={"csrf_token": token, "hub_url": hub.url, "code": code}
    )
    assert refused.status_code == 403
    admin = logged_in(box, "boss")
    forged = admin.post("/system/sync/enrol", data={"hub_url": hub.url, "code": code})
    assert forged.status_code == 400
    assert not (config.data_dir / DEVICE_FILE).exists()
    assert enrol_form(admin, hub.url, code).status_code == 200  # the code was not used up
    assert (config.data_dir / DEVICE_FILE).exists()


# -- defect 10: words on the System page ------------------------------------------------


def test_backends_are_described_without_install_commands(box):
    page = system_page(logged_in(box, "boss"))
    assert "pip install" not in page and "python3-libnvinfer" not in page
    assert "clinic-screening-appliance[tensorrt]" not in page
    tensorrt = next(b for b in backend_report() if b["name"] == "tensorrt")
    if not tensorrt["usable"]:  # CI and the developers' PCs: said in words
        assert "screening runs on the CPU (ONNX Runtime)." in page


@pytest.mark.parametrize(
    "missing, said",
    [
        (
            [
                "TensorRT Python bindings: install python3-libnvinfer from JetPack (on a CUDA "
                "PC: pip install 'clinic-screening-appliance[tensorrt]')",
                "pycuda: pip install pycuda (on a Jetson, after JetPack's CUDA toolkit)",
            ],
            "TensorRT is not installed on this box: screening runs on the CPU (ONNX Runtime).",
        ),
        (
            ["no NVIDIA GPU found (CUDA: cuInit failed: no CUDA-capable device is detected)"],
            "This box has no NVIDIA graphics processor for TensorRT: screening runs on the CPU "
            "(ONNX Runtime).",
        ),
        (
            ["pycuda: pip install pycuda (on a Jetson, after JetPack's CUDA toolkit)"],
            "A part TensorRT needs is not installed on this box: screening runs on the CPU "
            "(ONNX Runtime).",
        ),
        (
            ["GPU Quadro P1000 is sm61; TensorRT 10 needs compute capability 7.5 or newer"],
            "This box's graphics processor is too old for TensorRT: screening runs on the CPU "
            "(ONNX Runtime).",
        ),
    ],
)
def test_each_reason_tensorrt_cannot_run_in_words(box, missing, said):
    with box.test_request_context():
        plain = backend_in_words({"name": "tensorrt", "usable": False, "missing": missing})
    assert plain == said
    assert "pip" not in plain


def test_the_shipped_models_come_with_the_software(box):
    page = system_page(logged_in(box, "boss"))
    assert "signed by bundled" not in page and "bundled" not in page
    assert "comes with the software" in page


def test_the_sync_status_json_keeps_its_keys_after_an_enrolment_elsewhere(box, hub):
    """`sync status` (scripts read it) names the hub enrolled with, keys unchanged."""
    config = box.config["APPLIANCE"]
    data = str(config.data_dir)
    enrol_by_cli(data, hub.url, hub.enrol_code())
    (config.data_dir / "config.toml").unlink()  # e.g. the settings file restored from before
    state = json.loads(run("sync", "status", "--data-dir", data, "--json").output)
    assert state["hub_url"] == hub.url and state["enrolled"] is True
    assert "problem" not in state
