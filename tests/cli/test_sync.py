"""``appliance sync ...`` as typed (against a real hub on loopback), and the System
page's sync section."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from sync.synckit import make_backlog

from appliance.cli import main
from appliance.config import load_config
from appliance.store import users
from appliance.web import create_app


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, env={"APPLIANCE_DATA_DIR": None})


# What `appliance sync status --json` prints, in this order (scripts read it).
STATUS_KEYS = [
    "hub_url",
    "enrolled",
    "device_id",
    "site",
    "result_pending",
    "result_acked",
    "review_pending",
    "review_acked",
    "images",
    "images_acked",
    "deidentify",
    "last_attempt_at",
    "last_success_at",
    "last_error",
    "failures",
    "next_attempt_in_s",
    "models_error",
]


def test_sync_without_a_hub_says_how_to_enrol(tmp_path):
    data = str(tmp_path / "box")
    status = run("sync", "status", "--data-dir", data)
    assert status.exit_code == 0 and "sync not set up" in status.output
    once = run("sync", "--data-dir", data, "--once")
    assert once.exit_code == 1 and "appliance sync enrol" in once.output


def test_enrol_stores_a_private_token_and_sync_once_sends_everything(tmp_path, hub):
    hub_dir = str(hub.data_dir)
    code = run("hub", "enrol-code", "--data-dir", hub_dir, "--site", "Ndola").output.strip()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    data_dir = tmp_path / "box"
    enrolled = run("sync", "enrol", "--data-dir", str(data_dir), "--hub", hub.url, "--code", code)
    assert enrolled.exit_code == 0, enrolled.output
    for secret in ("sync_device.json", "sync_key.pem"):
        assert (data_dir / "secrets" / secret).stat().st_mode & 0o777 == 0o600
    assert load_config(data_dir, environ={}).sync_hub_url == hub.url

    from appliance.store.db import Store

    store = Store.open(data_dir)
    make_backlog(store, 30)
    store.close()
    once = run("sync", "--data-dir", str(data_dir), "--once")
    assert once.exit_code == 0 and "sent 30, acknowledged 30" in once.output, once.output
    state = json.loads(run("sync", "status", "--data-dir", str(data_dir), "--json").output)
    assert list(state) == STATUS_KEYS
    assert state["result_acked"] == 30 and state["result_pending"] == 0 and state["enrolled"]

    [device] = json.loads(run("hub", "devices", "--data-dir", hub_dir, "--json").output)
    assert device["site"] == "Ndola" and device["last_seen_at"]
    assert run("hub", "revoke", device["id"], "--data-dir", hub_dir).exit_code == 0
    refused = run("sync", "--data-dir", str(data_dir), "--once")
    assert refused.exit_code == 1 and "revoked" in refused.output
    assert "revoked" in run("sync", "status", "--data-dir", str(data_dir)).output


def test_system_page_shows_the_sync_state(box, hub):
    store, config = box
    make_backlog(store, 3)
    config = load_config(config.data_dir, environ={})
    app = create_app(config)
    users.create_user(app.extensions["appliance_store"], "boss", "2468", "admin")
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"csrf_token": token, "username": "boss", "pin": "2468"})
    page = re.sub(r"\s+", " ", client.get("/system").text)
    assert f"Hub: {hub.url}" in page
    assert "Waiting to send: 3 results, 0 reviews" in page
    assert "Last successful sync: never" in page
    app.extensions["appliance_store"].close()


def test_receipt_carried_back_on_the_stick(tmp_path, box, hub):
    store, config = box
    make_backlog(store, 15)
    stick = tmp_path / "stick"
    stick.mkdir()
    run("sync", "export", "--data-dir", str(config.data_dir), "--to", str(stick))
    [bundle] = stick.glob("*.bundle")
    imported = run(
        "hub",
        "import",
        str(bundle),
        "--data-dir",
        str(hub.data_dir),
        "--receipt-to",
        str(stick),
        "--json",
    )
    [receipt] = stick.glob("receipt-*.json")
    assert json.loads(imported.output)[0]["receipt"] == str(receipt)
    read = run("sync", "receipt", str(receipt), "--data-dir", str(config.data_dir))
    assert read.exit_code == 0 and "the hub holds 15 entries (15 newly acknowledged)" in read.output
    status = run("sync", "status", "--data-dir", str(config.data_dir), "--json")
    assert json.loads(status.output)["result_pending"] == 0
