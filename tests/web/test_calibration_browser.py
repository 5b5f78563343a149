"""The Calibration page in a real browser (Debian's Chromium driven by Playwright)
against a real ``appliance serve``, on a 1024x600 touchscreen: it fits the screen, every
control is big enough for a finger, the charts are drawn from the box alone, and Apply
and Go back change the threshold the box uses for new results.

A screenshot goes to ``test-artifacts/screenshots/1024x600/calibration.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import TESTS, Served
from monitoring.cases import confirm, population, scored

from appliance.config import load_config
from appliance.store import users
from appliance.store.db import Store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = TESTS.parent / "test-artifacts" / "screenshots" / "1024x600"
PIN = "2468"
# Visible controls a finger taps that are smaller than 44 x 44 px.
TOO_SMALL_JS = """
() => [...document.querySelectorAll("a, button, input, select, label.check")]
  .filter((el) => el.type !== "hidden")
  .map((el) => [el, el.getBoundingClientRect()])
  .filter(([el, r]) => r.width > 0 && r.height > 0 && (r.width < 43.99 || r.height < 43.99))
  .map(([el, r]) => `${el.tagName} "${(el.innerText || el.name || "").trim().slice(0, 30)}"`
    + ` ${Math.round(r.width)}x${Math.round(r.height)}`)
"""


@pytest.fixture
def served(tmp_path):
    data_dir = tmp_path / "data"
    store = Store.open(data_dir)
    scores, labels = population(240, seed=8)
    confirm(store, scored(store, scores), labels)
    users.create_user(store, "admin", PIN, "admin")
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DICOM_ENABLED="false",
        APPLIANCE_USB_ROOTS=str(tmp_path / "no-usb"),
        APPLIANCE_MIN_FREE_MB="1",
        APPLIANCE_INFERENCE_THREADS="1",
        APPLIANCE_SITE_NAME="Riverside Health Centre",
    )
    server = Served(data_dir, env)
    yield server
    server.close()


@pytest.mark.slow
def test_the_calibration_page_on_a_1024x600_touchscreen(served):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; scripts/test does)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            viewport={"width": 1024, "height": 600}, has_touch=True, base_url=served.url
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        elsewhere: list[str] = []
        problems: list[str] = []
        page.on(
            "request",
            lambda r: (
                elsewhere.append(r.url)
                if not r.url.startswith(served.url) and not r.url.startswith("data:")
                else None
            ),
        )
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        try:
            page.goto("/login")
            page.fill("input[name=username]", "admin")
            page.fill("#pin", PIN)
            page.tap("form#login button.primary")
            page.wait_for_url(f"{served.url}/")
            page.tap("nav.nav a:has-text('Calibration')")
            page.wait_for_url("**/calibration")
            expect(page.locator("svg.chart")).to_have_count(2)
            for chart in page.locator("svg.chart").all():
                box = chart.bounding_box()
                assert box["width"] > 200 and box["x"] + box["width"] <= 1024
            recommended = page.locator("input[name=threshold]").get_attribute("value")
            expect(page.locator("#effect")).to_contain_text("Of the last 240 images")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=ARTIFACTS / "calibration.png", full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1024
            assert page.evaluate(TOO_SMALL_JS) == []

            # The sensitivity to keep, chosen with a finger: the page follows.
            page.select_option("select[name=target]", "0.95")
            page.wait_for_url("**target=0.95")
            assert page.locator("input[name=threshold]").get_attribute("value") != recommended
            page.select_option("select[name=target]", "0.9")
            page.wait_for_url("**target=0.9")

            page.tap("#apply")
            expect(page.locator(".flash.ok")).to_contain_text(
                f"Threshold {float(recommended):g} applied to new results"
            )
            config = load_config(served.data_dir, environ={})
            assert config.cxr_threshold == float(recommended)
            expect(page.locator("table").last).to_contain_text("calibrated")
            page.tap("#rollback")
            expect(page.locator(".flash.ok")).to_contain_text("Threshold back to")
            assert load_config(served.data_dir, environ={}).cxr_threshold == 0.0
            assert elsewhere == [] and problems == []
        finally:
            context.close()
            browser.close()
