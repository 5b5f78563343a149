"""Issue 24, defect 9: after 11 screenings the drift panel said "0 recent results" and
"No warnings" for every model. The last results count as recent even while they are
also the site's first baseline; with too few to judge, the page says so."""

from __future__ import annotations

import re
from html import unescape

from helpers import logged_in
from monitoring.cases import VERSION, scored

from appliance.monitoring import monitor
from appliance.screening.models import CXR
from appliance.store import users
from appliance.web import create_app


def system_text(config) -> str:
    app = create_app(config)
    store = app.extensions["appliance_store"]
    users.create_user(store, "boss", "2468", "admin")
    try:
        html = logged_in(app, "boss").get("/system").text
    finally:
        store.close()
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_eleven_results_are_eleven_recent_results_too_few_to_judge(store, config):
    scored(store, [0.1, 0.2, 0.3, 0.9, 0.15, 0.25, 0.4, 0.05, 0.6, 0.35, 0.2])
    child = monitor.report(store, config)["models"][CXR]
    assert child["recent"] == 11 and child["since_baseline"] == 0
    assert child["baseline"]["results"] == 11
    assert child["judged"] is False and not child.get("validation") and child["site"] is None

    page = system_text(config)
    assert f"Child chest X-ray {VERSION} : 11 recent results" in page
    assert "Not enough recent results to check yet: 11 of 30" in page
    assert "Not enough recent results to check yet: 0 of 30" in page  # the other models
    assert "No warnings" not in page
    assert "Not checked yet: each model needs 30 recent results" in page
    assert "Accept recent images as normal" not in page  # 11 cannot become a baseline


def test_enough_results_are_judged_and_only_those_models_are_called_quiet(store, config):
    rng_scores = [round(0.02 + 0.96 * ((n * 37) % 101) / 100, 4) for n in range(40)]
    scored(store, rng_scores)
    report = monitor.report(store, config)
    child = report["models"][CXR]
    assert child["recent"] == 40 and child["judged"] is True
    assert child["validation"] is not None  # compared with the bundle's reference

    page = system_text(config)
    assert "Not enough recent results to check yet: 40 of 30" not in page
    assert "Not enough recent results to check yet: 0 of 30" in page  # adult, retina
    assert "Accept recent images as normal" in page
    if not report["warnings"]:
        assert "No warnings for the models with enough recent results." in page
        assert "No warnings: recent scores and images look like their references." not in page


def test_the_hub_summary_and_the_command_line_count_the_same_recent_results(store, config):
    scored(store, [0.3] * 7)
    full = monitor.report(store, config)
    assert monitor.summary(full)["models"][CXR]["recent"] == 7
