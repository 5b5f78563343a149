"""First start asks where the clinic is: its name, time zone (a short list by region,
each city once) and date style, saved where Settings saves them; Settings offers the
same list (issue 24, defect 8; web/auth.py ``setup``, web/clinic.py, web/admin.py)."""

from __future__ import annotations

import re
from collections import Counter
from importlib.resources import files

import pytest
from helpers import csrf_from, logged_in

from appliance.config import load_config
from appliance.store import users
from appliance.web import create_app
from appliance.web.clinic import ZONES, zone_groups

REGIONS = ["Africa", "Americas", "Asia", "Europe", "Oceania"]


@pytest.fixture
def fresh(tmp_path):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[])
    app = create_app(config)
    yield app
    app.extensions["appliance_store"].close()


def options(page: str, name: str) -> list[tuple[str, str]]:
    select = re.search(rf'<select name="{name}".*?</select>', page, re.S)[0]
    return re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select)


def selected(page: str, name: str) -> str:
    select = re.search(rf'<select name="{name}".*?</select>', page, re.S)[0]
    return re.search(r'<option value="([^"]*)" selected', select)[1]


def test_first_start_asks_the_site_name_time_zone_and_date_style(fresh):
    page = fresh.test_client().get("/setup").text
    assert 'name="site_name"' in page and 'value=""' in page  # "Clinic" is no clinic's name
    zones = options(page, "timezone")
    assert re.findall(r'<optgroup label="([^"]+)"', page) == REGIONS
    assert selected(page, "timezone") == "UTC"
    labels = [label for _zone, label in zones]
    assert len(zones) < 200 and not [x for x, n in Counter(labels).items() if n > 1]
    assert ("America/Toronto", "Toronto (Canada)") in zones
    assert ("Africa/Maputo", "Maputo (Mozambique)") in zones
    assert options(page, "date_style") == [
        ("dmy", "28/11/2026 (day/month/year)"),
        ("ymd", "2026-11-28 (year-month-day)"),
        ("mdy", "11/28/2026 (month/day/year)"),
    ]
    assert selected(page, "date_style") == "dmy"


def test_first_start_saves_them_where_settings_does(fresh, tmp_path):
    client = fresh.test_client()
    token = csrf_from(client.get("/setup").text)
    done = client.post(
        "/setup",
        data={
            "csrf_token": token,
            "username": "boss",
            "pin": "1357",
            "pin2": "1357",
            "language": "pt",
            "site_name": "Centro de Saúde de Chamanculo",
            "timezone": "Africa/Maputo",
            "date_style": "ymd",
        },
    )
    assert done.status_code == 302 and done.location == "/"
    reread = load_config(tmp_path / "data", environ={})
    assert (reread.site_name, reread.timezone, reread.date_style, reread.language) == (
        "Centro de Saúde de Chamanculo",
        "Africa/Maputo",
        "ymd",
        "pt",
    )
    config = fresh.config["APPLIANCE"]  # and in use at once
    assert (config.timezone, config.date_style) == ("Africa/Maputo", "ymd")
    assert "Centro de Saúde de Chamanculo" in client.get("/").text
    settings = client.get("/settings").text
    assert selected(settings, "timezone") == "Africa/Maputo"
    assert selected(settings, "date_style") == "ymd"
    audit = (
        fresh.extensions["appliance_store"]
        .conn()
        .execute("SELECT actor, detail FROM audit_log WHERE action = 'settings.changed'")
    )
    assert list(map(tuple, audit)) == [("boss", "date_style, language, site_name, timezone")]


def test_a_blank_site_name_keeps_the_default_and_a_bad_zone_creates_nothing(fresh, tmp_path):
    client = fresh.test_client()
    token = csrf_from(client.get("/setup").text)
    form = {"csrf_token": token, "username": "boss", "pin": "1357", "pin2": "1357"}
    refused = client.post("/setup", data={**form, "timezone": "Mars/Olympus_Mons"})
    assert refused.status_code == 200 and "Not saved:" in refused.text
    assert users.count_users(fresh.extensions["appliance_store"]) == 0
    assert not (tmp_path / "data" / "config.toml").exists()
    done = client.post("/setup", data={**form, "site_name": "  ", "timezone": "UTC"})
    assert done.status_code == 302
    assert load_config(tmp_path / "data", environ={}).site_name == "Clinic"


def test_settings_offer_the_same_short_list_and_keep_a_zone_not_in_it(tmp_path):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], timezone="Asia/Novosibirsk")
    app = create_app(config)
    users.create_user(app.extensions["appliance_store"], "admin", "2468", "admin")
    client = logged_in(app, "admin")
    page = client.get("/settings").text
    zones = options(page, "timezone")
    assert selected(page, "timezone") == "Asia/Novosibirsk"  # saving changes nothing unasked
    assert [z for z, _label in zones].count("Asia/Novosibirsk") == 1
    assert re.findall(r'<optgroup label="([^"]+)"', page) == REGIONS
    assert len(zones) == 2 + sum(len(z) for z in ZONES.values())  # + UTC + the one in use
    client.post(
        "/settings",
        data={"csrf_token": csrf_from(page), "timezone": "Europe/Lisbon", "date_style": "mdy"},
    )
    assert (config.timezone, config.date_style) == ("Europe/Lisbon", "mdy")
    assert "Asia/Novosibirsk" not in client.get("/settings").text
    app.extensions["appliance_store"].close()


def test_the_short_list_has_current_names_each_city_once_in_every_language(fresh):
    """Every zone is in the tz database's zone.tab (its current name for a country's
    zone: no US/Eastern, Asia/Calcutta or America/Montreal), listed once, and no two
    share a label in English, French or Portuguese."""
    current = {
        line.split("\t")[2].strip()
        for line in (files("tzdata.zoneinfo") / "zone.tab").read_text().splitlines()
        if line and not line.startswith("#")
    }
    listed = [zone for zones in ZONES.values() for zone in zones]
    assert len(listed) == len(set(listed))
    assert set(listed) <= current, set(listed) - current
    for locale in ("en", "fr", "pt_PT"):
        labels = [label for _region, zones in zone_groups(locale) for _z, label in zones]
        assert len(labels) == len(listed)
        assert [x for x, n in Counter(labels).items() if n > 1] == [], locale
    with fresh.test_request_context():
        french = dict(zone for _r, zones in zone_groups("fr") for zone in zones)
    assert french["Africa/Cairo"] == "Le Caire (Égypte)"
