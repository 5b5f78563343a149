"""The System page's PACS line: each PACS with what waits, failed and went."""

from __future__ import annotations

import re

from helpers import testdata
from pacs.kit import stored_result

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.pacs.targets import register
from appliance.store import users
from appliance.web import create_app

PIN = "2468"


def page(tmp_path, destinations, language="en"):
    config = load_config(
        tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1, pacs_destinations=destinations
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    register(store, config)
    if destinations:
        stored_result(store, Importer(store, config), testdata("RG1_UNCR.dcm"))
    users.create_user(store, "op", PIN, "operator", language)
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"csrf_token": token, "username": "op", "pin": PIN})
    html = client.get("/system").text
    store.close()
    return html


def test_the_system_page_shows_each_pacs(tmp_path):
    html = page(tmp_path, ["ORTHANC@127.0.0.1:4242"])
    assert "DICOM results to PACS" in html
    assert "ORTHANC@127.0.0.1:4242: 1 waiting, 0 failed, 0 sent" in html


def test_the_system_page_says_when_no_pacs_is_set_up_in_french(tmp_path):
    html = page(tmp_path, [], language="fr")
    assert "Résultats DICOM vers le PACS" in html
    assert "aucun PACS ne reçoit les résultats" in html
