"""The dashboard writes shares and times as its reader does (en/fr/pt), in UTC, with
four-digit years — not "66.7 %" and raw ISO text in every language."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_babel import Babel

from appliance.hub import formats

CASES = {
    "en": ("66.7%", "Nov 30, 2026 19:14", "Nov 30, 2026"),
    "fr": ("66,7\u00a0%", "30 nov. 2026 19:14", "30 nov. 2026"),
    "pt": ("66,7%", "30 de nov. de 2026 19:14", "30 de nov. de 2026"),
}


@pytest.mark.parametrize("lang", sorted(CASES))
def test_shares_and_times_in_the_readers_language(lang):
    app = Flask(__name__)
    Babel(app, locale_selector=lambda: lang)
    share, when, day = CASES[lang]
    with app.test_request_context():
        assert formats.percent(2 / 3) == share
        assert formats.percent(None) == formats.DASH
        # a box two hours ahead of UTC and the hub's own epoch seconds read the same
        assert formats.moment("2026-11-30T21:14:03+02:00") == when
        assert formats.moment(1796066043.0) == when
        assert formats.day("2026-11-30") == day
        assert formats.moment(None) == "" and formats.moment("not a time") == "not a time"
