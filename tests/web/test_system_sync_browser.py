"""The System page's enrolment form on the 7-inch touchscreen (issue 24, defect 5): real
Chromium against a real `appliance serve` and a real hub, at 800x480 and 1024x600."""

from __future__ import annotations

import pytest
from web.boxkit import ADMIN_PIN, PIN, page_as, serve_box


@pytest.mark.slow
@pytest.mark.parametrize("width, height", [(800, 480), (1024, 600)])
def test_an_admin_enrols_from_the_touchscreen_and_a_nurse_only_reads(
    chromium, tmp_path, hub, width, height
):
    from playwright.sync_api import expect

    served = serve_box(tmp_path / "data")
    try:
        page = page_as(chromium, served, "admin", ADMIN_PIN, width, height)
        page.goto("/system")
        form = page.locator("#enrol")
        expect(form).to_be_visible()  # open while the box is not enrolled
        page.fill("#enrol input[name=hub_url]", hub.url)
        page.fill("#enrol input[name=code]", "ABCD-EFGH-JKLM")
        page.locator("#enrol button").tap()
        refused = page.locator(".flash.error")
        expect(refused).to_contain_text("Enrolment not done: the hub does not know this")
        expect(refused).to_be_in_viewport()  # said where the admin is looking
        assert page.evaluate("document.documentElement.scrollWidth") <= width

        page.fill("#enrol input[name=hub_url]", hub.url)
        page.fill("#enrol input[name=code]", hub.enrol_code("Ndola"))
        page.locator("#enrol button").tap()
        done = page.locator(".flash.ok")
        expect(done).to_contain_text("Enrolled for the site Ndola")
        expect(done).to_be_in_viewport()
        expect(page.locator("#sync ~ p.ok").first).to_contain_text("Enrolled for the site Ndola")
        expect(page.locator("details.enrol")).not_to_have_attribute("open", "")

        nurse = page_as(chromium, served, "nurse", PIN, width, height)
        nurse.goto("/system")
        expect(nurse.get_by_text("Enrolled for the site Ndola")).to_have_count(1)
        expect(nurse.locator("#enrol")).to_have_count(0)
    finally:
        served.close()
