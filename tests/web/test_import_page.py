"""The Import page after an upload or a stick's import (issue 24, defect 12): each file's
outcome first on the page with "Go to the worklist" once an image is on the box, the
refused files' list that lists what was refused (and is not there when nothing was), and
the quarantine's outcome in plain words."""

from __future__ import annotations

import io
import re
import shutil
import time

import pytest
from helpers import FUNDUS_DIR, PDF, csrf_from, logged_in

from appliance.config import load_config
from appliance.store import users
from appliance.web import create_app

PIN = "2468"
EYE = (FUNDUS_DIR / "IDRiD_003.jpg").read_bytes()
QUARANTINED = "refused: not an image the box can screen (a copy is kept for the technician)"
PDF_REASON = "This is a PDF document, not an image."


@pytest.fixture
def app(tmp_path):
    config = load_config(
        tmp_path / "data",
        environ={},
        usb_roots=[str(tmp_path / "usb")],
        usb_require_mountpoint=False,
        usb_auto_import=False,
        min_free_mb=1,
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    users.create_user(store, "nurse", PIN, "operator")
    yield app
    store.close()


@pytest.fixture
def nurse(app):
    client = logged_in(app, "nurse", PIN)
    return client, csrf_from(client.get("/import/").text)


def upload(client, token: str, files: list[tuple[bytes, str]], **kwargs):
    return client.post(
        "/import/upload",
        data={"csrf_token": token, "file": [(io.BytesIO(data), name) for data, name in files]},
        content_type="multipart/form-data",
        **kwargs,
    )


def section(html: str, section_id: str) -> str | None:
    """The HTML of ``<section ... id="section_id" ...>`` up to its end, or None."""
    found = re.search(rf'<section[^>]*\bid="{section_id}"[^>]*>.*?</section>', html, re.S)
    return found[0] if found else None


def worklist_button(html: str) -> str | None:
    found = re.search(r'<a [^>]*id="to-worklist"[^>]*>[^<]*</a>', html)
    return found[0] if found else None


def test_a_box_with_no_refused_file_says_nothing_about_refused_files(nurse):
    client, _token = nurse
    page = client.get("/import/").text
    assert "Refused files" not in page and "None." not in page
    assert 'id="refused" hidden' in page  # where import.js puts the list once there is one


def test_an_upload_without_script_shows_each_outcome_first_and_the_way_to_the_worklist(nurse):
    client, token = nurse
    # The form sends the browser to the outcomes (no script needed to see them).
    assert 'action="/import/upload#upload-done"' in client.get("/import/").text

    page = upload(client, token, [(PDF, "letter.pdf"), (EYE, "eye.jpg")]).text

    done = section(page, "upload-done")
    assert done is not None and "hidden" not in done.split(">", 1)[0]
    # First on the page: above the sticks and the upload form.
    assert page.index('id="upload-done"') < page.index("USB sticks and camera cards")
    assert page.index('id="upload-done"') < page.index('id="upload"')
    listed = re.findall(r'<li class="(\w+)"><strong class="name">([^<]+)</strong>', done)
    assert listed == [("quarantined", "letter.pdf"), ("stored", "eye.jpg")]
    assert QUARANTINED in done and PDF_REASON in done
    button = worklist_button(done)
    assert button is not None and 'href="/"' in button and "hidden" not in button
    assert "Go to the worklist" in button
    # The file just refused is in the refused files' list, never "None."
    refused = section(page, "refused")
    assert refused is not None and "letter.pdf" in refused and PDF_REASON in refused
    assert "None." not in page


def test_no_way_to_the_worklist_when_nothing_reached_the_box(nurse):
    client, token = nurse
    done = section(upload(client, token, [(PDF, "letter.pdf")]).text, "upload-done")
    button = worklist_button(done)
    assert button is not None and "hidden" in button
    # A file already on the box is on the worklist: the way there is offered.
    upload(client, token, [(EYE, "eye.jpg")])
    again = section(upload(client, token, [(EYE, "eye-again.jpg")]).text, "upload-done")
    assert "already on the box" in again and "hidden" not in worklist_button(again)


def test_the_script_gets_the_plain_words_and_the_page_then_lists_the_refused_file(nurse):
    """import.js shows the JSON's labels, then reloads the refused files' section."""
    client, token = nurse
    answer = upload(
        client, token, [(PDF, "letter.pdf")], headers={"Accept": "application/json"}
    ).json
    assert answer["results"][0]["status"] == "quarantined"
    assert answer["results"][0]["label"] == QUARANTINED
    assert answer["results"][0]["reason"] == PDF_REASON
    refused = section(client.get("/import/").text, "refused")
    assert refused is not None and "letter.pdf" in refused and "hidden" not in refused


def test_a_sticks_import_with_a_refused_file_leads_to_the_refused_files(app, nurse, tmp_path):
    client, token = nurse
    stick = tmp_path / "usb" / "CAMERA"
    stick.mkdir(parents=True)
    shutil.copy(FUNDUS_DIR / "hrf_07_h.jpg", stick / "IMG_0001.JPG")
    (stick / "IMG_0002.JPG").write_bytes(PDF)  # a PDF named like a photo: refused, left there
    client.post("/import/scan", data={"csrf_token": token})
    started = client.post("/import/volume/1", data={"csrf_token": token, "all": "1"})
    task = started.location.rsplit("/", 1)[-1]
    deadline = time.time() + 20
    state = {}
    while time.time() < deadline:
        state = client.get(f"/import/task/{task}", headers={"Accept": "application/json"}).json
        if state["finished"]:
            break
        time.sleep(0.05)
    assert state["finished"] and state["counts"] == {"stored": 1, "refused": 1}

    page = client.get(f"/import/task/{task}").text
    link = re.search(r'<a [^>]*href="/import/#refused"[^>]*>([^<]+)</a>', page)
    assert link is not None and link[1] == "See the refused files"
    refused = section(client.get("/import/").text, "refused")
    assert refused is not None and "IMG_0002.JPG" in refused
