"""The System page shows every model version's state and signing key (logged in)."""

from __future__ import annotations

import re

from lifecycle.modelkit import NAME, NEW, SHIPPED

from appliance.lifecycle.install import install
from appliance.store import users
from appliance.web import create_app


def test_the_system_page_lists_versions_with_state_and_key(trusting_box, signed_file):
    store, config = trusting_box
    install(store, config, signed_file)
    app = create_app(config)
    client = app.test_client()
    assert client.get("/system").status_code in (302, 401)  # not without a login
    users.create_user(app.extensions["appliance_store"], "boss", "2468", "admin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"csrf_token": token, "username": "boss", "pin": "2468"})
    page = client.get("/system").text
    assert "Model versions" in page
    assert re.search(rf"{NAME}</strong> {SHIPPED} — <span class=\"ok\">active", page)
    assert re.search(rf"{NAME}</strong> {NEW} — <span class=\"muted\">shadow", page)
