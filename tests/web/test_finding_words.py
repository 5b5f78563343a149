"""What a result says in words (web/views.py): a score under the threshold is "not
flagged by screening", never "no abnormality" or "no referral needed" (issue 24 (3)):
the models miss cases, and their cards say how many."""

from __future__ import annotations

import pytest
from flask_babel import force_locale

from appliance.config import load_config
from appliance.screening.models import CXR, CXR_ADULT, FUNDUS
from appliance.web import create_app
from appliance.web.views import RECOMMENDATION, finding

# (model, version): every model the box knows, the adult model's 1.x, and one it does not.
MODELS = [(CXR, "1.0.0"), (CXR_ADULT, "2.0.0"), (CXR_ADULT, "1.0.0"), (FUNDUS, "1.0.0"),
          ("some-later-model", "1.0.0")]
# Words that promise what a screening cannot know.
PROMISES = ("no abnormality", "no referral", "no signs", "no pneumonia", "found no")


@pytest.fixture
def app(tmp_path):
    app = create_app(load_config(tmp_path / "data", environ={}, usb_roots=[]))
    yield app
    app.extensions["appliance_store"].close()


@pytest.mark.parametrize(("model", "version"), MODELS)
@pytest.mark.parametrize("lang", ["en", "fr", "pt"])
def test_a_result_under_the_threshold_says_not_flagged_and_its_limit(app, model, version, lang):
    result = {"model_name": model, "model_version": version, "probability": 0.1,
              "threshold": 0.5}
    with app.test_request_context(), force_locale(lang):
        said = finding(result).lower()
        advice = str(RECOMMENDATION["routine"]).lower()
        flagged = finding({**result, "probability": 0.9})
    assert said != flagged.lower()
    if lang == "en":
        assert "not flagged" in said and "not flagged" in advice
        assert "does not rule" in said
        assert not [p for p in PROMISES if p in said or p in advice]
