"""The hub's dashboard: login required, and the numbers a programme manager asks for."""

from __future__ import annotations

import re

import pytest
from sync.synckit import HubThread, box_public_key

from appliance.hub import records
from appliance.sync.client import HubClient


@pytest.fixture
def hub(tmp_path, database_url):
    server = HubThread(tmp_path / "hub", database_url)
    conn = server.conn()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
    finally:
        conn.close()
    yield server
    server.close()


def result(n: int, triage: str | None, route: str = "chest_xray", version: str = "1.0") -> dict:
    data = {
        "image": {"sha256": f"{n:064x}"},
        "route": route,
        "triage": triage,
        "model": {"name": "cxr-pneumonia", "version": version},
        "created_at": "2024-05-02T10:00:00+00:00",
    }
    return {"id": f"result:{n}", "rev": 1, "kind": "result", "data": data}


def test_dashboard_needs_a_login_then_shows_sites_rates_and_models(hub):
    client = hub.app.test_client()
    assert client.get("/").status_code == 302
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    bad = client.post("/login", data={"username": "manager", "password": "x", "csrf_token": csrf})
    assert "Wrong user name or password." in bad.get_data(as_text=True)

    box = HubClient(
        hub.url, HubClient(hub.url).enrol(hub.enrol_code("Ndola"), "b", box_public_key())["token"]
    )
    box.ping()
    box.send_entries(
        [
            result(1, "urgent"),
            result(2, "routine"),
            result(3, None, "refused"),
            result(4, "review", version="1.1"),
            {
                "id": f"review:{1:064x}",
                "rev": 1,
                "kind": "review",
                "data": {
                    "image": {"sha256": f"{1:064x}"},
                    "verdict": "agree",
                    "created_at": "2024-05-02T11:00:00+00:00",
                },
            },
        ]
    )
    ok = client.post(
        "/login",
        data={"username": "manager", "password": "correct horse battery", "csrf_token": csrf},
    )
    assert ok.status_code == 302
    text = re.sub(r"\s+", " ", client.get("/").get_data(as_text=True))
    # 4 results: 1 refused (25 %); of 3 screened, 2 positive (66.7%); 1 of 2 positives reviewed
    assert "<td>Ndola</td><td>1</td>" in text
    assert "<td>4</td><td>66.7%</td><td>25.0%</td><td>1</td><td>1</td>" in text
    assert "<td>2024-W18</td><td>4</td>" in text
    assert "<td>cxr-pneumonia</td><td>1.1</td><td>Pneumonia</td><td>1</td><td>1</td>" in text


def test_five_wrong_passwords_lock_the_login_and_idle_sessions_expire(hub):
    import time

    client = hub.app.test_client()
    csrf = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)
    ).group(1)

    def attempt(password: str, username: str = "manager"):
        return client.post(
            "/login", data={"username": username, "password": password, "csrf_token": csrf}
        )

    for _ in range(5):
        assert attempt("guess").status_code == 401
    locked = attempt("correct horse battery")  # even the right one, from here, for now
    assert locked.status_code == 429 and "try again in 5 minutes" in locked.get_data(as_text=True)
    assert 295 <= int(locked.headers["Retry-After"]) <= 300
    assert attempt("correct horse battery", "MANAGER ").status_code == 429  # same account

    other = hub.app.test_client()  # another user name is not locked out with it
    csrf2 = re.search(
        r'name="csrf_token" value="([^"]+)"', other.get("/login").get_data(as_text=True)
    ).group(1)
    conn = hub.conn()
    try:
        records.set_admin(conn, "second", "another long password")
    finally:
        conn.close()
    ok = other.post(
        "/login",
        data={"username": "second", "password": "another long password", "csrf_token": csrf2},
    )
    assert ok.status_code == 302
    assert other.get("/").status_code == 200
    conn = hub.conn()
    try:  # 31 minutes without use, as the hub counts it
        with conn.transaction():
            conn.execute("UPDATE sessions SET seen_at = ?", (time.time() - 31 * 60,))
    finally:
        conn.close()
    assert other.get("/").status_code == 302  # idle too long: log in again


@pytest.mark.parametrize("lang", ["fr", "pt"])
def test_the_dashboard_speaks_the_boxes_languages(hub, lang):
    """The browser's language, or the one chosen on the page (kept across sign-in):
    no sentence of the hub's templates is left in English."""
    from web.test_i18n import english_phrases, extracted_msgids, visible

    client = hub.app.test_client()
    asked = client.get("/login", headers={"Accept-Language": f"{lang},en;q=0.5"})
    assert f'<html lang="{lang}">' in asked.get_data(as_text=True)

    client = hub.app.test_client()  # an English browser that chooses on the page
    csrf = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)
    ).group(1)
    chosen = client.post("/language", data={"language": lang, "csrf_token": csrf})
    assert chosen.status_code == 302
    assert client.post("/language", data={"language": "fr"}).status_code == 400  # CSRF
    wrong = client.post("/login", data={"username": "x", "password": "y", "csrf_token": csrf})
    ok = client.post(
        "/login",
        data={"username": "manager", "password": "correct horse battery", "csrf_token": csrf},
    )
    assert ok.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert f'<html lang="{lang}">' in page  # the choice outlived the new session
    phrases = english_phrases(extracted_msgids())
    for html in (wrong.get_data(as_text=True), page):
        text = visible(html)
        assert sorted(p for p in phrases if p in text) == []
    expected = {"fr": "Centre de dépistage", "pt": "Central de rastreio"}[lang]
    assert expected in visible(page)
