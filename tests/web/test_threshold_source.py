"""Issue 24, defect 9: on a fresh box Settings called the threshold "this site's own"
where Calibration said "the bundle's own". One function (calibration.status) now
answers for Settings, the System page and the hub; and saving Settings for another
reason keeps the bundle's own."""

from __future__ import annotations

import re
from html import unescape

import pytest
from helpers import csrf_from, logged_in

from appliance.config import load_config, save_settings
from appliance.monitoring import calibration
from appliance.screening.models import CXR, THRESHOLD_SETTINGS
from appliance.store import users
from appliance.web import create_app


@pytest.fixture
def app(tmp_path):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    users.create_user(app.extensions["appliance_store"], "boss", "2468", "admin")
    yield app
    app.extensions["appliance_store"].close()


def selected(html: str, setting: str) -> tuple[str, str]:
    """(value, words) of the option chosen in a threshold's select."""
    select = re.search(rf'<select name="{setting}">(.*?)</select>', html, re.DOTALL).group(1)
    value, words = re.search(
        r'<option value="([^"]+)"\s+selected>(.*?)</option>', select, re.DOTALL
    ).groups()
    return value, re.sub(r"\s+", " ", unescape(words)).strip()


def sources(app) -> dict[str, str]:
    store, config = app.extensions["appliance_store"], app.config["APPLIANCE"]
    return {name: calibration.status(store, config, name)["source"] for name in THRESHOLD_SETTINGS}


def test_a_fresh_box_says_the_bundles_own_on_settings_and_calibration(app):
    client = logged_in(app, "boss")
    html = client.get("/settings").text
    assert set(sources(app).values()) == {"bundle"}
    assert "this site's own" not in unescape(html)
    manifest = calibration.installed_manifest(app.config["APPLIANCE"], CXR)
    suggested = manifest["operating_points"]["suggested"]["threshold"]
    value, words = selected(html, "cxr_threshold")
    assert float(value) == pytest.approx(suggested)
    table = [row["threshold"] for row in manifest["operating_points"]["table"]]
    if any(abs(t - suggested) < 1e-4 for t in table):
        assert words.endswith("(suggested)")
    else:  # 1.1.0: 0.85 is between the table's rows
        assert words == f"threshold {suggested:.3f}: the bundle's own (suggested)"


def test_saving_settings_for_another_reason_keeps_the_bundles_threshold(app):
    config = app.config["APPLIANCE"]
    client = logged_in(app, "boss")
    html = client.get("/settings").text
    form = {"csrf_token": csrf_from(html), "site_name": "Ndola Clinic"}
    form |= {s: selected(html, s)[0] for s in THRESHOLD_SETTINGS.values()}
    assert client.post("/settings", data=form).status_code == 302
    assert config.site_name == "Ndola Clinic"
    assert all(getattr(config, s) == 0.0 for s in THRESHOLD_SETTINGS.values())
    assert set(sources(app).values()) == {"bundle"}
    assert "this site's own" not in unescape(client.get("/settings").text)


def test_a_threshold_set_for_this_site_is_called_so_on_both(app):
    config = app.config["APPLIANCE"]
    save_settings(config, {"cxr_threshold": 0.853}, environ={})  # e.g. a calibration's
    client = logged_in(app, "boss")
    _value, words = selected(client.get("/settings").text, "cxr_threshold")
    assert words == "threshold 0.853: this site's own (see Calibration)"
    assert sources(app)[CXR] == "site"
    # A threshold from the bundle's table, chosen on this page, is one of the table's.
    client.post(
        "/settings",
        data={"csrf_token": csrf_from(client.get("/settings").text), "cxr_threshold": "0.5"},
    )
    assert config.cxr_threshold == 0.5 and sources(app)[CXR] == "site"
