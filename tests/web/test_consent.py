"""The patient's consent to improving the models on the study page (issue 27): a yes/no
where the site asks (login, CSRF, audited), nothing where it never does, a line where a
national approval covers it. Real SQLite file, Flask's test client."""

from __future__ import annotations

import pytest
from helpers import PIN, TESTS, csrf_from, logged_in

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.store import users
from appliance.store.consent import consent_of
from appliance.web import create_app

PNG = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
QUESTION = "May the images of this visit be used to improve the models?"
APPROVAL = "A national approval covers using confirmed images to improve the models."


def site(tmp_path, policy: str):
    config = load_config(
        tmp_path / policy, environ={}, usb_roots=[], min_free_mb=1, training_consent=policy
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    image_id = Importer(store, config).import_path(PNG, source="usb").image_id
    for role in users.ROLES:
        users.create_user(store, role, PIN, role)
    return app, store, image_id


@pytest.fixture
def asking(tmp_path):
    app, store, image_id = site(tmp_path, "ask")
    yield app, store, image_id
    store.close()


def test_where_the_site_asks_staff_record_the_patients_answer(asking):
    app, store, image_id = asking
    client = logged_in(app, "operator")
    page = client.get(f"/study/{image_id}").text
    assert QUESTION in page and 'name="answer" value="yes"' in page and APPROVAL not in page
    token = csrf_from(page)
    saved = client.post(
        f"/study/{image_id}/consent",
        data={"csrf_token": token, "answer": "yes"},
        follow_redirects=True,
    )
    assert "Answer saved." in saved.text
    assert "The patient said yes (recorded by operator)." in saved.text
    client.post(f"/study/{image_id}/consent", data={"csrf_token": token, "answer": "no"})
    assert consent_of(store, image_id)["answer"] == "no"
    refused = client.post(
        f"/study/{image_id}/consent",
        data={"csrf_token": token, "answer": "perhaps"},
        follow_redirects=True,
    )
    assert "Choose yes or no." in refused.text
    audit = store.conn().execute(
        "SELECT actor, detail FROM audit_log WHERE action = 'training.consent' ORDER BY id"
    ).fetchall()
    assert [tuple(a) for a in audit] == [("operator", "yes"), ("operator", "no")]


def test_an_answer_needs_a_login_and_the_forms_token(asking):
    app, store, image_id = asking
    anonymous = app.test_client()
    token = csrf_from(anonymous.get("/login").text)
    answer = {"csrf_token": token, "answer": "yes"}
    assert anonymous.post(f"/study/{image_id}/consent", data=answer).status_code in (302, 401)
    client = logged_in(app, "clinician")
    forged = client.post(f"/study/{image_id}/consent", data={"answer": "yes"})
    assert forged.status_code == 400
    assert consent_of(store, image_id) is None
    mine = {"csrf_token": csrf_from(client.get(f"/study/{image_id}").text), "answer": "yes"}
    assert client.post("/study/999/consent", data=mine).status_code == 404


@pytest.mark.parametrize(("policy", "shown"), [("never", None), ("always", APPROVAL)])
def test_never_shows_nothing_and_always_says_an_approval_covers_it(tmp_path, policy, shown):
    app, store, image_id = site(tmp_path, policy)
    client = logged_in(app, "clinician")
    page = client.get(f"/study/{image_id}").text
    assert QUESTION not in page and 'name="answer"' not in page
    assert (APPROVAL in page) == (shown is not None)
    token = csrf_from(page)
    refused = client.post(
        f"/study/{image_id}/consent",
        data={"csrf_token": token, "answer": "yes"},
        follow_redirects=True,
    )
    assert "This clinic does not ask patients about improving the models." in refused.text
    assert consent_of(store, image_id) is None
    store.close()
