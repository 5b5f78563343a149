"""The hub's side of model distribution, on SQLite and PostgreSQL: publishing checks the
signature with the hub's own keys and every file's hash; a file is served (with HTTP
Range) only to a box it was rolled out to; the dashboard shows what each box runs."""

from __future__ import annotations

import hashlib
import http.client
import json
import re

import pytest
from click.testing import CliRunner
from lifecycle.modelkit import NAME, NEW, new_version, rewrite_tar
from sync.synckit import HubThread, box_public_key

from appliance.cli import main
from appliance.errors import HubRejectedError, ModelPackageError
from appliance.hub import distribution, records
from appliance.lifecycle.pack import pack
from appliance.sync.client import HubClient
from appliance.wire.model_signature import new_key


@pytest.fixture
def hub(tmp_path, database_url):
    server = HubThread(tmp_path / "hub", database_url)
    yield server
    server.close()


@pytest.fixture
def signed(tmp_path):
    """(the signed file, the programme's public key)."""
    public = new_key(tmp_path / "programme.key")
    out = tmp_path / f"{NAME}-{NEW}.tar"
    pack(new_version(tmp_path / "built"), tmp_path / "programme.key", out)
    return out, public


def enrolled(hub, site: str) -> tuple[HubClient, str]:
    answer = HubClient(hub.url).enrol(hub.enrol_code(site), site, box_public_key())
    return HubClient(hub.url, answer["token"]), answer["device_id"]


def raw_get(hub, path: str, token: str, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_publish_refuses_an_untrusted_key_and_a_tampered_file(hub, signed, tmp_path):
    file, public = signed
    conn = hub.conn()
    try:
        with pytest.raises(ModelPackageError, match="does not trust"):
            distribution.publish(conn, hub.data_dir, file)
        distribution.trust_key(conn, public)

        def change(name, data):
            return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith(".onnx") else data

        tampered = rewrite_tar(file, tmp_path / "tampered.tar", change)
        with pytest.raises(ModelPackageError, match="sha256 differs"):
            distribution.publish(conn, hub.data_dir, tampered)
        done = distribution.publish(conn, hub.data_dir, file)
        assert done["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert distribution.publish(conn, hub.data_dir, file)["already"]
        assert [b["version"] for b in distribution.published(conn)] == [NEW]
    finally:
        conn.close()


def test_a_file_is_served_with_ranges_only_to_the_boxes_it_was_rolled_out_to(hub, signed):
    file, public = signed
    first, first_id = enrolled(hub, "Clinic A")
    other, _ = enrolled(hub, "Clinic B")
    conn = hub.conn()
    try:
        distribution.trust_key(conn, public)
        sha = distribution.publish(conn, hub.data_dir, file)["sha256"]
        distribution.rollout(conn, NAME, NEW, [f"device:{first_id}"], activate=False)
    finally:
        conn.close()
    size = file.stat().st_size
    assert first.list_models() == [
        {"name": NAME, "version": NEW, "sha256": sha, "size": size, "activate": False}
    ]
    assert other.list_models() == []
    status, headers, body = raw_get(
        hub, f"/api/v1/models/{sha}", first.token, {"Range": "bytes=100-1123"}
    )
    assert status == 206 and body == file.read_bytes()[100:1124]
    assert headers["Content-Range"] == f"bytes 100-1123/{size}"
    status, _, body = raw_get(hub, f"/api/v1/models/{sha}", first.token)
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    ranged = {"Range": f"bytes={size}-"}
    assert raw_get(hub, f"/api/v1/models/{sha}", first.token, ranged)[0] == 416
    status, _, body = raw_get(hub, f"/api/v1/models/{sha}", other.token)
    assert status == 404 and json.loads(body)["error"]["code"] == "not_rolled_out"
    assert raw_get(hub, f"/api/v1/models/{sha}", "not-a-token")[0] == 401
    assert raw_get(hub, "/api/v1/models/NOT-A-SHA", first.token)[0] == 400

    # The site, then everyone: the other box is given it too, now to activate.
    conn = hub.conn()
    try:
        distribution.rollout(conn, NAME, NEW, ["site:Clinic B"], activate=True)
        with pytest.raises(ModelPackageError, match="not published"):
            distribution.rollout(conn, NAME, "9.9.9", ["all"], activate=False)
        with pytest.raises(ModelPackageError, match="no device"):
            distribution.rollout(conn, NAME, NEW, ["device:dev-nobody"], activate=False)
    finally:
        conn.close()
    assert [m["activate"] for m in other.list_models()] == [True]
    assert [m["activate"] for m in first.list_models()] == [False]


def test_boxes_report_their_versions_and_the_dashboard_shows_them(hub):
    box, device_id = enrolled(hub, "Clinic A")
    box.report_models(
        [
            {"name": NAME, "version": "2.0.0", "state": "active"},
            {"name": NAME, "version": NEW, "state": "shadow"},
            {"name": NAME, "version": "0.9", "state": "refused"},
        ]
    )
    with pytest.raises(HubRejectedError):
        box.report_models([{"name": NAME}])
    conn = hub.conn()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
        reported = distribution.device_models(conn)[device_id]
    finally:
        conn.close()
    assert [(r["version"], r["state"]) for r in reported] == [("2.0.0", "active"), (NEW, "shadow")]
    client = hub.app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post(
        "/login",
        data={"username": "manager", "password": "correct horse battery", "csrf_token": csrf},
    )
    page = client.get("/").get_data(as_text=True)
    assert f"{NAME} 2.0.0 (active)" in page and f"{NAME} {NEW} (shadow)" in page
    assert "0.9" not in page


def test_the_hub_commands_trust_publish_and_roll_out(tmp_path, signed):
    file, public = signed
    hub_dir = str(tmp_path / "hubdir")
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(
            main, ["hub", *args, "--data-dir", hub_dir], env={"APPLIANCE_DATA_DIR": None}
        )
        return result

    assert run("publish", str(file)).exit_code == 1  # no key trusted yet
    assert run("trust-model-key", public).exit_code == 0
    published = run("publish", str(file), "--json")
    assert published.exit_code == 0, published.output
    assert json.loads(published.output)["version"] == NEW
    assert run("rollout", NAME, NEW).exit_code == 2  # no target named
    done = run("rollout", NAME, NEW, "--sites", "Clinic A", "--activate")
    assert done.exit_code == 0, done.output
    listed = run("bundles")
    assert f"{NAME} {NEW}" in listed.output and "site:Clinic A (activate)" in listed.output
