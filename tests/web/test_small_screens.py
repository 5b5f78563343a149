"""The 7-inch panels (800x480, 1024x600) in Debian's Chromium on a real ``appliance
serve``, in English, French and Portuguese (issue 24): the study page shows the finding,
the score and the triage in the first screen and the review within one scroll; the
header stays one row; the Users page shows whole role names."""

from __future__ import annotations

import pytest
from helpers import FUNDUS_DIR
from web.test_browser import ARTIFACTS, browser, landed, log_in  # noqa: F401
from web.test_desk_browser import (
    ADMIN,
    CLINICIAN,
    PIN,
    as_file,
    desk,  # noqa: F401
    dicom_with,
    new_page,
    row_of,
    wait_screened,
)

PANELS = [(800, 480), (1024, 600)]
LONG_NAME = "Nakamura-Oyelaran^Maria-Fernanda Chiamaka^Adeyemi^Dr^Jr"
# [selector, top, bottom] of each element that must be on screen.
BOXES_JS = """
(selectors) => selectors.map((s) => {
  const el = document.querySelector(s);
  if (!el) return [s, null, null];
  const r = el.getBoundingClientRect();
  return [s, Math.round(r.top), Math.round(r.bottom)];
})
"""
FIRST_SCREEN = ["h2.finding", ".scale-labels strong", ".summary .badge"]
# A select shows its chosen option cut short when the text, its padding and the arrow
# (about 20 px) are wider than the box; a cell or button past the screen's right edge.
CUT_JS = """
() => {
  const pen = document.createElement('canvas').getContext('2d');
  const short = [...document.querySelectorAll('main select')].filter((s) => {
    const style = getComputedStyle(s);
    pen.font = style.font;
    const text = pen.measureText(s.options[s.selectedIndex].text).width;
    const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
    return text + padding + 20 > s.clientWidth;
  }).map((s) => `${s.name}: ${s.options[s.selectedIndex].text}`);
  const outside = [...document.querySelectorAll('main td, main th, main button')]
    .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
    .map((el) => `${el.tagName} ${el.innerText.slice(0, 30)}`);
  return short.concat(outside);
}
"""


def choose_language(page, lang: str) -> None:
    current = page.locator("html").get_attribute("lang")
    if current != lang:
        with page.expect_navigation():
            page.select_option("header select[name=language]", lang)


@pytest.mark.slow
def test_the_result_and_the_header_fit_the_small_panels(browser, desk):  # noqa: F811
    context, page = new_page(browser, desk, PANELS[0])
    try:
        page.goto("/login")
        log_in(page, lambda _name: None, CLINICIAN, PIN, keypad=False)
        page.goto("/import/")
        page.set_input_files(
            "#upload input[type=file]",
            [
                as_file("adult.dcm", dicom_with("045Y", LONG_NAME, "A-2001")),
                as_file("eye.jpg", (FUNDUS_DIR / "IDRiD_003.jpg").read_bytes(), "image/jpeg"),
            ],
        )
        page.tap("#upload button.primary")
        page.locator("#upload-results li.stored").nth(1).wait_for()
        wait_screened(page, 2)
        studies = []
        for text in ("A-2001", "eye.jpg"):
            page.goto("/")
            row_of(page, text).locator("a.rowlink").tap()
            landed(page, r"/study/\d+$")
            studies.append(page.url)

        problems = []
        for lang in ("en", "fr", "pt"):
            page.set_viewport_size({"width": 1024, "height": 600})
            page.goto("/")
            choose_language(page, lang)
            for width, height in PANELS:
                page.set_viewport_size({"width": width, "height": height})
                # Four worklist rows (52 px) or more in the first screen.
                page.goto("/")
                first_row = page.locator("table.worklist tbody tr").first.bounding_box()
                if first_row["y"] + 4 * 52 > height:
                    problems.append(f"{lang} {width}x{height}: first row at {first_row['y']}")
                for url in studies:
                    page.goto(url)
                    for selector, top, bottom in page.evaluate(BOXES_JS, FIRST_SCREEN):
                        if top is None or top < 0 or bottom > height:
                            problems.append(f"{lang} {width}x{height} {url}: {selector} "
                                            f"at {top}..{bottom}")
                    review = page.evaluate(BOXES_JS, ["form.review button.primary"])[0]
                    if review[2] is None or review[2] > 2 * height:
                        problems.append(f"{lang} {width}x{height} {url}: review at {review}")
                    page.screenshot(path=ARTIFACTS / f"small-{lang}-{width}-{url[-1]}.png")
                    header = page.locator("header.topbar").bounding_box()
                    if header["height"] > 64:
                        problems.append(f"{lang} {width}x{height}: header {header['height']}px")
        assert problems == [], "\n".join(problems)
    finally:
        page.set_viewport_size({"width": 1024, "height": 600})
        page.goto("/")
        choose_language(page, "en")
        context.close()


@pytest.mark.slow
def test_the_users_page_shows_whole_role_names_at_800x480(browser, desk):  # noqa: F811
    context, page = new_page(browser, desk, PANELS[0])
    try:
        page.goto("/login")
        log_in(page, lambda _name: None, ADMIN, PIN, keypad=False)
        for lang in ("en", "fr", "pt"):
            choose_language(page, lang)
            page.goto("/users")
            cut = page.evaluate(CUT_JS)
            assert cut == [], (lang, cut)
        choose_language(page, "en")
    finally:
        context.close()
