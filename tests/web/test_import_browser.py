"""The Import page after an upload, in Chromium on the 7-inch panels (issue 24, defect 12):
each file's outcome and "Go to the worklist" inside the first screen, and the refused
files' list naming the file just refused."""

from __future__ import annotations

import pytest
from helpers import FUNDUS_DIR, PDF
from web.test_browser import browser, landed, log_in  # noqa: F401
from web.test_desk_browser import NURSE, OUTSIDE_JS, PIN, as_file, desk, new_page  # noqa: F401

PANELS = [((800, 480), "IDRiD_003.jpg"), ((1024, 600), "hrf_07_h.jpg")]


@pytest.mark.slow
def test_an_uploads_outcomes_and_the_way_to_the_worklist_fill_the_first_screen(
    browser,  # noqa: F811 - the fixture, imported
    desk,  # noqa: F811
):
    from playwright.sync_api import expect

    for size, photo in PANELS:
        context, page = new_page(browser, desk, size)
        try:
            page.goto("/login")
            log_in(page, lambda _name: None, NURSE, PIN, keypad=False)
            page.goto("/import/")
            expect(page.locator("#to-worklist")).to_be_hidden()
            page.set_input_files(
                "#upload input[type=file]",
                [
                    as_file("letter.pdf", PDF, "application/pdf"),
                    as_file(photo, (FUNDUS_DIR / photo).read_bytes(), "image/jpeg"),
                ],
            )
            page.tap("#upload button.primary")
            outcomes = page.locator("#upload-results li")
            expect(outcomes).to_have_count(2)
            statuses = outcomes.evaluate_all("items => items.map(i => i.className)")
            assert statuses == ["quarantined", "stored"], size
            expect(outcomes.nth(0)).to_contain_text("a copy is kept for the technician")
            # The refused files' list names the file just refused; nothing says "None."
            expect(page.locator("#refused")).to_contain_text("letter.pdf")
            assert "None." not in page.locator("main").inner_text()

            worklist = page.locator("#to-worklist")
            expect(worklist).to_be_visible()
            inside = "#upload-results li, #upload-results .outcome, #to-worklist"
            assert page.evaluate(OUTSIDE_JS, inside) == [], size

            worklist.tap()
            landed(page, r"/$")
        finally:
            context.close()
