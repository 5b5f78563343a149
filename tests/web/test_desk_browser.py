"""What a nurse and a clinician meet at the desk, in Debian's Chromium on a real
``appliance serve``, on the 800x480, 1024x600 and 1280x800 panels: log in without
scrolling, an upload that says what became of each file, a tap anywhere on a worklist
row, one patient for a visit's photos, a refusal without a slip (and "screen anyway"
for a clinician only, audited), the slip printed on one sheet of A5 and of A4 with the
longest content, and French and Portuguese pages without English.

With ``UPDATE_DOCS_SCREENSHOTS=1`` the 1024x600 run writes the README's screenshots to
``docs/screenshots/`` (a test run never changes tracked files by itself).
"""

from __future__ import annotations

import os
import re
import sqlite3

import cv2
import numpy as np
import pydicom
import pytest
from helpers import FUNDUS_DIR, PDF, TESTS, testdata
from pydicom.uid import generate_uid
from web.test_browser import ARTIFACTS, CXR64, browser, landed, log_in, serve  # noqa: F401
from web.test_i18n import english_phrases, extracted_msgids

from appliance.store import users
from appliance.store.db import Store
from appliance.web.reasons import BODY_PARTS

VIEWPORTS = [(800, 480), (1024, 600), (1280, 800)]
IDS = [f"{w}x{h}" for w, h in VIEWPORTS]
DOCS = TESTS.parent / "docs" / "screenshots"
ADMIN, NURSE, CLINICIAN, PIN = "admin", "nurse", "dr.banda", "2468"
# A note longer than a slip shows (it is cut short there; the whole note stays on the box).
LONG_NOTE = "Old scarring in the right upper zone, seen on the 2019 film; " * 20
# Everything a finger needs to log in: the fields, every key, the button.
LOGIN_CONTROLS = "input[name=username], #pin, .keypad button, form#login button.primary"
SETUP_CONTROLS = "form#setup input:not([type=hidden]), form#setup select, form#setup button"
# Every control's box inside the first screen (no scrolling), as [name, top, bottom].
OUTSIDE_JS = """
(selector) => [...document.querySelectorAll(selector)]
  .map((el) => [el.name || el.innerText, el.getBoundingClientRect()])
  .filter(([, r]) => r.top < 0 || r.bottom > window.innerHeight || r.right > window.innerWidth)
  .map(([name, r]) => `${name} ${Math.round(r.top)}..${Math.round(r.bottom)}`)
"""


def shoot(page, name: str) -> None:
    """A screenshot for the artifacts; at 1024x600 with UPDATE_DOCS_SCREENSHOTS=1 also
    the README's (the screen as the user sees it, small enough for git)."""
    size = page.viewport_size
    folder = ARTIFACTS / f"{size['width']}x{size['height']}"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"desk-{name}.png", full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" and size["width"] == 1024:
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS / f"{name}.jpg", type="jpeg", quality=70)


def new_page(browser, served, size):  # noqa: F811 - the fixture, imported
    context = browser.new_context(
        viewport={"width": size[0], "height": size[1]}, has_touch=True, base_url=served.url
    )
    context.set_default_timeout(20_000)
    return context, context.new_page()


@pytest.mark.slow
def test_first_run_and_login_fit_every_panel_without_scrolling(browser, tmp_path):  # noqa: F811
    served = serve(tmp_path, tmp_path / "no-usb", chest_population="adult")
    try:
        pages = [new_page(browser, served, size) for size in VIEWPORTS]
        for (_context, page), size in zip(pages, VIEWPORTS, strict=True):
            page.goto("/")
            landed(page, r"/setup$")
            assert page.evaluate(OUTSIDE_JS, SETUP_CONTROLS) == [], size
            if size == (1024, 600):
                shoot(page, "setup")
        page = pages[-1][1]
        page.fill("input[name=username]", ADMIN)
        page.fill("input[name=pin]", PIN)
        page.fill("input[name=pin2]", PIN)
        page.tap("form#setup button.primary")
        landed(page, r"/$")
        for (_context, page), size in zip(pages, VIEWPORTS, strict=True):
            page.goto("/login")
            assert page.locator(".keypad button").count() == 12
            assert page.evaluate(OUTSIDE_JS, LOGIN_CONTROLS) == [], size
            if size == (1024, 600):
                shoot(page, "login")
            log_in(page, lambda _name: None, ADMIN, PIN, keypad=True)
    finally:
        for context, _page in pages:
            context.close()
        served.close()


def dicom_with(age: str, name: str, patient_id: str) -> bytes:
    """RG1 as another patient's study: new UIDs (not a duplicate), the age and name given."""
    ds = pydicom.dcmread(testdata("RG1_J2KI.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientAge, ds.PatientName, ds.PatientID = age, name, patient_id
    path = TESTS.parent / "test-artifacts" / f"{patient_id}.dcm"
    path.parent.mkdir(exist_ok=True)
    ds.save_as(path)
    return path.read_bytes()


def tiles_png() -> bytes:
    """Coloured squares: neither a chest X-ray nor a retina (the router says "other")."""
    rng = np.random.default_rng(7)
    squares = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return cv2.imencode(".png", np.kron(squares, np.ones((32, 32, 1), np.uint8)))[1].tobytes()


def as_file(name: str, data: bytes, mime: str = "application/octet-stream") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def row_of(page, text: str):
    return page.locator("table.worklist tbody tr", has_text=text)


def wait_screened(page, count: int) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator("table.worklist tbody tr")).to_have_count(count, timeout=30_000)
    expect(page.locator("tr.triage-waiting")).to_have_count(0, timeout=60_000)


@pytest.fixture
def desk(tmp_path):
    store = Store.open(tmp_path / "data")
    users.create_user(store, ADMIN, PIN, "admin")
    users.create_user(store, NURSE, PIN, "operator")
    users.create_user(store, CLINICIAN, PIN, "clinician")
    store.close()
    served = serve(tmp_path, tmp_path / "no-usb", chest_population="adult")
    yield served
    served.close()


@pytest.mark.slow
@pytest.mark.parametrize("size", VIEWPORTS, ids=IDS)
def test_a_day_at_the_desk(browser, desk, size):  # noqa: F811
    from playwright.sync_api import expect

    context, page = new_page(browser, desk, size)
    docs = size == (1024, 600)
    try:
        page.goto("/login")
        log_in(page, lambda _name: None, NURSE, PIN, keypad=False)

        # A camera card's three photos of one visit, uploaded from the page.
        camera = [FUNDUS_DIR / "IDRiD_003.jpg", FUNDUS_DIR / "hrf_07_h.jpg"]
        camera.append(sorted((FUNDUS_DIR / "cameras" / "idrid").glob("*.jpg"))[-1])
        page.goto("/import/")
        page.set_input_files(
            "#upload input[type=file]",
            [as_file(f"IMG_000{i}.JPG", p.read_bytes(), "image/jpeg") for i, p in
             enumerate(camera, 1)],
        )
        page.tap("#upload button.primary")
        outcomes = page.locator("#upload-results li")
        expect(outcomes).to_have_count(3)
        expect(page.locator("#upload-results li.stored")).to_have_count(3)

        # Then the rest of the day's files: one already on the box, a PDF, a CT, a photo
        # of nothing the box knows, an adult's and a child's chest X-ray.
        tiles = tiles_png()
        long_name = "Nakamura-Oyelaran^Maria-Fernanda Chiamaka^Adeyemi^Dr^Jr"
        page.set_input_files(
            "#upload input[type=file]",
            [
                as_file("again.jpg", camera[0].read_bytes(), "image/jpeg"),
                as_file("letter.pdf", PDF, "application/pdf"),
                as_file("CT_small.dcm", testdata("CT_small.dcm").read_bytes()),
                as_file("tiles.png", tiles, "image/png"),
                as_file("adult.dcm", dicom_with("045Y", long_name, "A-2001")),
                as_file("child.dcm", dicom_with("010Y", long_name, "C-3001")),
            ],
        )
        page.tap("#upload button.primary")
        expect(outcomes).to_have_count(6)
        statuses = outcomes.evaluate_all("items => items.map(i => i.className)")
        assert statuses == ["duplicate", "quarantined", "stored", "stored", "stored", "stored"]
        expect(outcomes.nth(0)).to_contain_text("already on the box")
        expect(outcomes.nth(1)).to_contain_text("This is a PDF document, not an image.")
        if docs:
            shoot(page, "import")

        # The worklist: a thumbnail, and for a photo without a patient its file and source.
        wait_screened(page, 7)  # three photos, the CT, the tiles, two X-rays
        photo = row_of(page, "IMG_0002.JPG")
        expect(photo).to_contain_text("Uploaded")
        page.wait_for_function(
            "() => [...document.querySelectorAll('img.thumb')].every(i => i.naturalWidth > 0)"
        )
        expect(row_of(page, "A-2001")).to_contain_text("Nakamura-Oyelaran, Maria-Fernanda")
        if docs:
            shoot(page, "worklist")
        # A tap on the row's time, not on the patient, opens the study.
        photo.scroll_into_view_if_needed()
        cell = photo.locator("td").nth(3).bounding_box()
        page.touchscreen.tap(cell["x"] + cell["width"] / 2, cell["y"] + cell["height"] / 2)
        landed(page, r"/study/\d+$")

        # One patient for the visit's three photos: the other two ticked, one by one
        # (nothing is ticked for them: a batch is not a visit).
        visit = page.locator("#visit")
        expect(visit.locator("li")).to_have_count(3)
        expect(visit.locator("input[name=also]:checked")).to_have_count(0)
        for box in visit.locator("label.photo").all():
            box.tap()
        expect(visit.locator("input[name=also]:checked")).to_have_count(2)
        page.fill("#patient input[name=patient_id]", "P-1001")
        page.fill("#patient input[name=patient_name]", "Amina Diallo")
        page.locator("#patient button:has-text('Save patient')").tap()
        expect(page.locator(".flash.ok")).to_contain_text("Patient saved for 3 photos")
        page.goto("/")
        expect(row_of(page, "P-1001")).to_have_count(3)

        # Which eye each photo shows (the camera's names do not say): one tap each; then
        # one result per eye and one for the patient, the worse eye.
        with sqlite3.connect(desk.data_dir / "appliance.db") as db:
            named = dict(db.execute("SELECT original_name, id FROM images"))
        for name, eye in (("IMG_0001.JPG", "R"), ("IMG_0002.JPG", "L"), ("IMG_0003.JPG", "L")):
            page.goto(f"/study/{named[name]}")
            page.locator(f"#eyes button[value={eye}]").tap()
            expect(page.locator(".flash.ok")).to_contain_text("Eye saved.")
            expect(page.locator(f"#eyes button[value={eye}]")).to_have_attribute(
                "aria-pressed", "true"
            )
        eyes = page.locator("#eyes table.eye-results")
        expect(eyes.locator("tr[data-state=graded]")).to_have_count(2)
        expect(eyes.locator("tr.patient-result .badge")).to_have_count(1)
        if docs:
            shoot(page, "eyes")
        page.goto("/")

        # Refused images: the reason and the advice, no review and no slip.
        for name in ("1CT1", "tiles.png"):  # the CT's patient; the tiles' file name
            row_of(page, name).locator("a.rowlink").tap()
            landed(page, r"/study/\d+$")
            expect(page.locator("#refusal")).to_be_visible()
            assert page.locator("a:has-text('Referral slip'), form.review").count() == 0
            assert page.request.get(page.url + "/slip").status == 404
            assert page.locator("#screen-anyway").count() == 0  # a nurse cannot overrule
            page.go_back()
        page.tap("header .who button:has-text('Log out')")
        landed(page, r"/login$")
        log_in(page, lambda _name: None, CLINICIAN, PIN, keypad=False)

        # The clinician: the CT stays refused (its tags say CT); the tiles are screened
        # anyway as a chest X-ray, on their word, audited.
        row_of(page, "1CT1").locator("a.rowlink").tap()
        expect(page.locator("#refusal")).to_be_visible()
        assert page.locator("#screen-anyway").count() == 0
        page.goto("/")
        row_of(page, "tiles.png").locator("a.rowlink").tap()
        landed(page, r"/study/\d+$")
        tiles_url = page.url
        page.locator("#screen-anyway button[value=chest_xray]").tap()
        expect(page.locator(".flash.ok")).to_contain_text("being screened")
        for _ in range(60):
            if page.locator("h2.finding").count():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(page.locator("p.caution", has_text="Screened as")).to_contain_text(
            f"Screened as a chest X-ray on the instruction of {CLINICIAN}"
        )
        with sqlite3.connect(desk.data_dir / "appliance.db") as db:
            audited = db.execute(
                "SELECT actor, detail FROM audit_log WHERE action = 'image.route_chosen'"
            ).fetchall()
        assert audited == [(CLINICIAN, "chest_xray")]

        # The longest slips: each chest model, a caution (a child of 10, a route chosen
        # by a clinician), a review with every reason and a long note; one sheet each.
        slips = {"tiles": tiles_url}
        for patient in ("A-2001", "C-3001"):
            page.goto("/")
            row_of(page, patient).locator("a.rowlink").tap()
            landed(page, r"/study/\d+$")
            slips[patient] = page.url
        for name, url in slips.items():
            page.goto(url)
            if docs and name == "A-2001":
                shoot(page, "study")
            page.tap("label.big:has(input[value=disagree])")
            for box in page.locator("form.review label.check").all():
                box.tap()
            page.fill("textarea[name=note]", LONG_NOTE)
            page.tap("form.review button.primary")
            expect(page.locator(".flash.ok")).to_contain_text("Review saved")
            for paper in ("a5", "a4"):
                page.goto(f"{url}/slip?paper={paper}")
                if docs and name == "C-3001" and paper == "a5":
                    shoot(page, "slip")
                page.emulate_media(media="print")
                pdf = page.pdf(prefer_css_page_size=True, print_background=True)
                (ARTIFACTS / f"desk-slip-{name}-{paper}.pdf").write_bytes(pdf)
                sheets = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
                assert sheets == 1, f"{name}'s {paper} slip prints on {sheets} sheets"
                page.emulate_media(media="screen")

        # The administrator's pages; then, once, every page in French and Portuguese.
        page.goto("/")
        page.tap("header .who button:has-text('Log out')")
        landed(page, r"/login$")
        log_in(page, lambda _name: None, ADMIN, PIN, keypad=False)
        for name in ("settings", "users", "system", "calibration", "register"):
            page.goto(f"/{name}")
            if docs:
                shoot(page, name)
        if size == (1024, 600):
            no_english(page, list(slips.values()))
    finally:
        context.close()


def no_english(page, studies: list[str]) -> None:
    """In French and Portuguese, no page shows an English sentence from the catalog nor
    an English value the box stored (a body part, a backend, a source)."""
    phrases = english_phrases(extracted_msgids())
    stored = set(BODY_PARTS) | {"onnxruntime", "Uploaded", "Sent by", "USB stick"}
    urls = ["/", "/?filter=refused", "/?filter=follow_up", "/register", "/import/",
            "/settings", "/users", "/system"]
    urls += ["/calibration", *studies, *(f"{url}/slip" for url in studies)]
    for lang in ("fr", "pt"):
        page.goto("/")
        with page.expect_navigation():  # the choice is saved at once (autosubmit)
            page.select_option("header select[name=language]", lang)
        found = {}
        for url in urls:
            page.goto(url)
            assert page.locator("html").get_attribute("lang") == lang
            text = " ".join(page.locator("body").inner_text().split())
            words = sorted(w for w in stored if re.search(rf"\b{re.escape(w)}\b", text))
            english = sorted(p for p in phrases if p in text)
            if words or english:
                found[url] = words + english
        assert found == {}, (lang, found)
    page.goto("/")
    with page.expect_navigation():
        page.select_option("header select[name=language]", "en")
