"""The programme pages in Debian's Chromium on a real hub (issue 29), at 1366x768 (a
programme office's laptop) and 1024x600 (a tablet), in English, French and Portuguese:
the programme page, a click into a site and into one of its boxes, and on each page
every chart's numbers read from the drawn SVG and checked against a recount of the
database's payloads. With ``UPDATE_DOCS_SCREENSHOTS=1`` the 1366x768 English run writes
``docs/screenshots/hub-programme.jpg`` and ``hub-site.jpg``.
"""

from __future__ import annotations

import os

import pytest
from helpers import TESTS, bundle_dir  # noqa: F401 - the kit's manifest
from hub.dashkit import PASSWORD, recount, seed
from lifecycle.modelkit import new_version
from sync.synckit import HubThread
from web.test_browser import ARTIFACTS, browser  # noqa: F401

from appliance.hub import records
from appliance.hub.readable import weeks_up_to
from appliance.lifecycle.pack import pack
from appliance.wire.model_signature import new_key

DOCS = TESTS.parent / "docs" / "screenshots"
VIEWPORTS = [(1366, 768), (1024, 600)]
WEEKS = weeks_up_to("2026-W49", 12)
CHART_JS = """
() => {
  const read = (svg, series) => [...svg.querySelectorAll(`[data-series="${series}"]`)]
    .map((el) => Number(el.dataset.value));
  const bars = document.querySelector('svg.chart.bars');
  const out = {results: {chest: read(bars, 'chest'), retina: read(bars, 'retina')}, rates: {}};
  for (const fig of document.querySelectorAll('[data-programme-chart]')) {
    const svg = fig.querySelector('svg');
    out.rates[fig.dataset.programmeChart] = {
      positivity: read(svg, fig.dataset.programmeChart), refusal: read(svg, 'refusal')};
  }
  return out;
}
"""
WIDER_JS = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hubpages")
    server = HubThread(tmp / "hub")
    public = new_key(tmp / "programme.key")
    file = tmp / "cxr-pneumonia-1.1.0.tar"
    pack(new_version(tmp / "built", "1.1.0", "cxr-pneumonia"), tmp / "programme.key", file)
    conn = server.conn()
    try:
        records.set_admin(conn, "manager", PASSWORD)
        server.boxes = seed(conn, (file, public, tmp / "hub"))
    finally:
        conn.close()
    yield server
    server.close()


def expected(hub, **scope) -> dict:
    conn = hub.conn()
    try:
        counted = recount(conn, **scope)
    finally:
        conn.close()
    out = {"results": {}, "rates": {}}
    for programme in ("chest", "retina"):
        rows = [counted.get((programme, w), {"results": 0, "refused": 0, "positive": 0})
                for w in WEEKS]
        out["results"][programme] = [r["results"] for r in rows]
        out["rates"][programme] = {
            "positivity": [r["positive"] / (r["results"] - r["refused"])
                           for r in rows if r["results"] - r["refused"]],
            "refusal": [r["refused"] / r["results"] for r in rows if r["results"]],
        }
    return out


def check(page, want: dict) -> None:
    drawn = page.evaluate(CHART_JS)
    assert drawn["results"] == want["results"]
    for programme, rates in want["rates"].items():
        for name, values in rates.items():
            assert drawn["rates"][programme][name] == pytest.approx(values, abs=1e-6)
    assert page.evaluate(WIDER_JS) <= 0  # no sideways scroll of the whole page


def shoot(page, name: str) -> None:
    size = page.viewport_size
    folder = ARTIFACTS / f"{size['width']}x{size['height']}"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}.png", full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" and size["width"] == 1366:
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS / f"{name}.jpg", type="jpeg", quality=70)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "fr", "pt"])
@pytest.mark.parametrize("viewport", VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def test_programme_site_and_box_charts_match_the_database(hub, browser, viewport, lang):  # noqa: F811
    context = browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]}, locale=lang,
        extra_http_headers={"Accept-Language": lang},
    )
    page = context.new_page()
    try:
        page.goto(f"{hub.url}/login")
        page.fill("input[name=username]", "manager")
        page.fill("input[name=password]", PASSWORD)
        page.click("form:not(.language) button")
        page.wait_for_url(f"{hub.url}/")
        assert page.get_attribute("html", "lang") == lang
        check(page, expected(hub))
        assert page.locator(".card.alarm.silent").is_visible()  # Mansa's box, at the top
        if lang == "en":
            shoot(page, "hub-programme")
        page.click("a[href='/sites/Kitwe']")
        page.wait_for_url(f"{hub.url}/sites/Kitwe")
        check(page, expected(hub, site="Kitwe"))
        if lang == "en":
            shoot(page, "hub-site")
        [device] = hub.boxes["Kitwe"]
        page.click(f"table.boxes a[href='/boxes/{device}']")
        page.wait_for_url(f"{hub.url}/boxes/{device}")
        check(page, expected(hub, device=device))
    finally:
        context.close()
