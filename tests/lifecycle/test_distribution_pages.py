"""The box's pages for model versions: an admin activates or rolls back on the System
page, and installs a signed file found on a USB stick from the Import page (a folder
under the configured root stands for the stick); other roles see neither; CSRF."""

from __future__ import annotations

import shutil
import time

import pytest
from helpers import PIN, csrf_from, logged_in
from lifecycle.modelkit import NAME, NEW, SHIPPED, rewrite_tar

from appliance.lifecycle.install import install
from appliance.store import model_versions, users
from appliance.web import create_app


@pytest.fixture
def app(trusting_box, tmp_path):
    _store, config = trusting_box
    config = config.with_overrides(
        usb_roots=[str(tmp_path / "usb")], usb_require_mountpoint=False, usb_auto_import=False
    )
    app = create_app(config)
    for role in ("operator", "admin"):
        users.create_user(app.extensions["appliance_store"], role, PIN, role)
    return app


def state(app, version: str = NEW) -> str | None:
    row = model_versions.row(app.extensions["appliance_store"].conn(), NAME, version)
    return row["state"] if row else None


def audit_actors(app, action: str) -> list[str]:
    rows = (
        app.extensions["appliance_store"]
        .conn()
        .execute("SELECT actor FROM audit_log WHERE action=?", (action,))
    )
    return [r[0] for r in rows]


def test_an_admin_activates_and_rolls_back_on_the_system_page(app, signed_file):
    install(app.extensions["appliance_store"], app.config["APPLIANCE"], signed_file)
    operator = logged_in(app, "operator")
    page = operator.get("/system").text
    assert "Model versions" in page and "Activate" not in page
    token = csrf_from(page)
    form = {"csrf_token": token, "name": NAME, "version": NEW}
    assert operator.post("/system/models/activate", data=form).status_code == 403
    assert state(app) == "shadow"

    admin = logged_in(app, "admin")
    page = admin.get("/system").text
    assert "Activate" in page
    token = csrf_from(page)
    forged = admin.post("/system/models/activate", data={"name": NAME, "version": NEW})
    assert forged.status_code == 400 and state(app) == "shadow"
    done = admin.post(
        "/system/models/activate",
        data={"csrf_token": token, "name": NAME, "version": NEW},
        follow_redirects=True,
    )
    assert f"{NAME} {NEW} is now active." in done.text
    assert state(app) == "active" and audit_actors(app, "model.activated") == ["admin"]
    assert f"Roll back to {SHIPPED}" in done.text
    nothing = admin.post(
        "/system/models/activate",
        data={"csrf_token": token, "name": NAME, "version": "9.9.9"},
        follow_redirects=True,
    )
    assert "Not done:" in nothing.text
    back = admin.post(
        "/system/models/rollback", data={"csrf_token": token, "name": NAME}, follow_redirects=True
    )
    assert f"{NAME} is back to {SHIPPED}." in back.text
    assert state(app) == "installed" and audit_actors(app, "model.rolled_back") == ["admin"]


def scanned(client, volume_id: int = 1) -> str:
    """The volume page once the stick's model-file scan (a background task) finished."""
    client.get(f"/import/volume/{volume_id}")  # starts it
    deadline = time.monotonic() + 10
    while not client.get(f"/import/volume/{volume_id}/models").json["finished"]:
        assert time.monotonic() < deadline, "the model-file scan never finished"
        time.sleep(0.05)
    return client.get(f"/import/volume/{volume_id}").text


def test_a_model_file_on_a_stick_is_offered_to_an_admin_only(app, signed_file, tmp_path):
    stick = tmp_path / "usb" / "PROGRAMME"
    (stick / "models").mkdir(parents=True)
    shutil.copy(signed_file, stick / "models" / signed_file.name)
    (stick / "notes.tar").write_bytes(b"not a tar at all")
    operator = logged_in(app, "operator")
    token = csrf_from(operator.get("/import/").text)
    operator.post("/import/scan", data={"csrf_token": token})
    assert "PROGRAMME" in operator.get("/import/").text
    seen = operator.get("/import/volume/1").text
    assert "Install model" not in seen
    rel = f"models/{signed_file.name}"
    form = {"csrf_token": token, "file": rel}
    assert operator.post("/import/volume/1/model", data=form).status_code == 403
    assert operator.get("/import/volume/1/models").status_code == 403  # the scan's state
    assert state(app) is None  # never installed by itself either

    admin = logged_in(app, "admin")
    page = scanned(admin)
    assert "Install model" in page and rel in page and "notes.tar" in page
    token = csrf_from(page)
    assert admin.post("/import/volume/1/model", data={"file": rel}).status_code == 400
    off_stick = admin.post(
        "/import/volume/1/model",
        data={"csrf_token": token, "file": str(signed_file)},
        follow_redirects=True,
    )
    assert "no longer on the stick" in off_stick.text and state(app) is None
    done = admin.post(
        "/import/volume/1/model", data={"csrf_token": token, "file": rel}, follow_redirects=True
    )
    assert f"{NAME} {NEW} installed in shadow" in done.text
    assert state(app) == "shadow" and audit_actors(app, "model.installed") == ["admin"]


def test_a_tampered_file_on_a_stick_is_refused_with_the_reason(app, signed_file, tmp_path):
    stick = tmp_path / "usb" / "STICK"
    stick.mkdir(parents=True)

    def change(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith(".onnx") else data

    rewrite_tar(signed_file, stick / "model.tar", change)
    admin = logged_in(app, "admin")
    token = csrf_from(admin.get("/import/").text)
    admin.post("/import/scan", data={"csrf_token": token})
    assert "Install model" in scanned(admin)
    refused = admin.post(
        "/import/volume/1/model",
        data={"csrf_token": token, "file": "model.tar"},
        follow_redirects=True,
    )
    assert "model.tar refused" in refused.text and "sha256 differs" in refused.text
    assert state(app) == "refused" and audit_actors(app, "model.refused") == ["admin"]
