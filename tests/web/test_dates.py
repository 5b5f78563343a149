"""Dates and times in the clinic's zone and date style, the same in every language, on
the 24-hour clock (issue 24, defect 8: "12/6/2026, 2:21 AM" was read as 12 June)."""

from __future__ import annotations

import pytest
from flask_babel import force_locale

from appliance.config import load_config
from appliance.web import create_app
from appliance.web.views import local_date, local_datetime

# 2026-11-28 00:21 UTC: 02:21 in Maputo (UTC+2), still the 27th in New York.
STORED = "2026-11-28T00:21:00+00:00"


@pytest.fixture
def site(tmp_path):
    def make(zone: str, style: str):
        config = load_config(
            tmp_path / zone.replace("/", "-") / style,
            environ={},
            usb_roots=[],
            timezone=zone,
            date_style=style,
        )
        app = create_app(config)
        apps.append(app)
        return app

    apps = []
    yield make
    for app in apps:
        app.extensions["appliance_store"].close()


@pytest.mark.parametrize("locale", ["en", "fr", "pt_PT"])
@pytest.mark.parametrize(
    ("style", "maputo", "new_york", "day"),
    [
        ("dmy", "28/11/2026 02:21", "27/11/2026 19:21", "26/08/2004"),
        ("ymd", "2026-11-28 02:21", "2026-11-27 19:21", "2004-08-26"),
        ("mdy", "11/28/2026 02:21", "11/27/2026 19:21", "08/26/2004"),
    ],
)
def test_each_date_style_in_each_language(site, locale, style, maputo, new_york, day):
    for zone, shown in (("Africa/Maputo", maputo), ("America/New_York", new_york)):
        with site(zone, style).test_request_context(), force_locale(locale):
            assert local_datetime(STORED) == shown
            assert local_datetime(1795825260.0) == shown  # epoch seconds: the same moment
            assert local_datetime(STORED, "medium") == shown + ":00"
            assert local_date("20040826") == day  # a DICOM date
            assert local_date("2004-08-26") == day
            assert local_date("2004-13-45") == "2004-13-45"  # as sent when malformed
            assert local_datetime(None) == "" and local_date("") == ""


def test_the_default_is_day_month_year_on_the_24_hour_clock(tmp_path):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], timezone="UTC")
    assert config.date_style == "dmy"
    app = create_app(config)
    with app.test_request_context(), force_locale("en"):
        assert local_datetime("2026-06-12T14:21:00+00:00") == "12/06/2026 14:21"
    app.extensions["appliance_store"].close()
