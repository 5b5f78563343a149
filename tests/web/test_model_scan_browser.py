"""The stick page in Chromium at 800x480 while the model-file scan runs in the background:
it says it is looking, asks the box until the scan has finished, then shows the signed
model file to install, with the archive bombs beside it never offered."""

from __future__ import annotations

import pytest
from web.boxkit import ADMIN_PIN
from web.test_browser import browser, landed, log_in  # noqa: F401
from web.test_model_scan_serve import bomb_stick, box  # noqa: F401


@pytest.mark.slow
def test_the_stick_page_shows_the_model_file_once_the_scan_has_finished(
    browser,  # noqa: F811 - the fixture, imported
    box,  # noqa: F811
    tmp_path,
):
    from playwright.sync_api import expect

    signed = bomb_stick(tmp_path / "staging" / "STICK")
    (tmp_path / "staging" / "STICK").rename(tmp_path / "usb" / "STICK")
    context = browser.new_context(
        viewport={"width": 800, "height": 480}, has_touch=True, base_url=box.url
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto("/login")
        log_in(page, lambda _name: None, "admin", ADMIN_PIN, keypad=False)
        page.goto("/import/")
        stick = page.locator("ul.volumes li", has_text="STICK")
        expect(stick).to_be_visible()
        stick.locator("a").first.tap()
        landed(page, r"/import/volume/\d+$")
        offered = page.locator("ul.model-files li", has_text=signed)
        expect(offered.locator("button:has-text('Install model')")).to_be_visible()
        expect(page.locator("#model-scan")).to_have_count(0)
        expect(page.locator("ul.model-files li")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 800
        assert not errors
    finally:
        context.close()
