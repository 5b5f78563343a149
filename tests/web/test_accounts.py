"""Logins on a real `appliance serve`: server-side sessions and the failed-login throttle
(clients on 127.0.0.2, .3 ... stand for other computers on the clinic's network)."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import zlib

import pytest
from helpers import Served
from web.boxkit import ADMIN_PIN, PIN, Browser, serve_box

from appliance.store import users
from appliance.store.db import Store


@pytest.fixture
def box(tmp_path):
    served = serve_box(tmp_path / "data")
    yield served
    served.close()


def audit_actions(box: Served, action: str) -> int:
    conn = sqlite3.connect(box.data_dir / "appliance.db")
    try:
        return conn.execute("SELECT COUNT(*) FROM audit_log WHERE action=?", (action,)).fetchone()[
            0
        ]
    finally:
        conn.close()


def cookie_payload(value: str) -> dict:
    """What a Flask session cookie carries (signed, not encrypted: anyone can read it)."""
    compressed = value.startswith(".")
    data = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)


def test_logout_ends_the_session_on_the_box_and_a_copied_cookie_is_refused(box):
    kiosk = Browser(box)
    status, response, _ = kiosk.login("nurse", PIN)
    assert status == 302 and response.getheader("Location") == "/"
    copied = dict(kiosk.cookies)  # what someone lifting the cookie would hold
    assert kiosk.request("GET", "/", cookies=copied)[0] == 200

    payload = cookie_payload(copied["appliance_session"])
    assert set(payload) <= {"sid", "csrf", "_flashes", "_permanent"}, payload
    store = Store.open(box.data_dir, migrate=False)
    try:
        pin_hash = users.get_user(store, 2)["pin_hash"]
        assert store.conn().execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1
    finally:
        store.close()
    cookie_text = json.dumps(payload)
    assert not any(part in cookie_text for part in pin_hash.split("$") if len(part) >= 8)

    token = kiosk.csrf("/")
    assert kiosk.request("POST", "/logout", {"csrf_token": token})[0] == 302
    status, response, _ = kiosk.request("GET", "/", cookies=copied)
    assert status == 302 and response.getheader("Location") == "/login"
    status, _, text = kiosk.request(
        "GET",
        "/api/studies",
        cookies={**copied},  # the API refuses it in the JSON shape
    )
    assert status == 401 and json.loads(text)["error"]["code"] == "unauthorized"


def test_forty_parallel_guesses_check_exactly_five_pins(box):
    """The counter is taken before the PIN is checked, in one write transaction: 40 real
    requests at once from one address get 5 PIN checks, the other 35 a 429 unchecked."""
    stranger = Browser(box, "127.0.0.2")
    token = stranger.csrf()
    form = {"csrf_token": token, "username": "admin"}
    statuses: list[int] = []
    barrier = threading.Barrier(40)

    def guess(n: int) -> None:
        barrier.wait()
        status, _, _ = stranger.request("POST", "/login", {**form, "pin": f"{n:06d}"})
        statuses.append(status)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(statuses) == [401] * 5 + [429] * 35
    assert audit_actions(box, "login.failed") == 5  # PINs really checked

    # The stranger's lock is the stranger's: the right PIN from there is refused now...
    assert stranger.login("admin", ADMIN_PIN)[0] == 429
    # ...while the admin at the kiosk, and a colleague at another computer, get in.
    assert Browser(box, "127.0.0.1").login("admin", ADMIN_PIN)[0] == 302
    assert Browser(box, "127.0.0.3").login("admin", ADMIN_PIN)[0] == 302


def test_a_pin_change_logs_the_user_out_everywhere(box):
    nurse = Browser(box, "127.0.0.4")
    assert nurse.login("nurse", PIN)[0] == 302
    admin = Browser(box)
    assert admin.login("admin", ADMIN_PIN)[0] == 302
    token = admin.csrf("/users")
    status, _, _ = admin.request(
        "POST", "/users", {"csrf_token": token, "user_id": "2", "pin": "1357"}
    )
    assert status == 302
    status, response, _ = nurse.request("GET", "/")
    assert status == 302 and response.getheader("Location") == "/login"
    assert admin.request("GET", "/")[0] == 200  # the admin's own session is untouched


def test_a_cookie_from_before_server_side_sessions_opens_nothing_and_is_dropped(box):
    """The old cookie carried the user id and the tail of the PIN hash; it is refused and
    replaced by one without them."""
    import time

    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    store = Store.open(box.data_dir, migrate=False)
    try:
        pin_hash = users.get_user(store, 2)["pin_hash"]
    finally:
        store.close()
    app = Flask("old")  # signs a cookie the way the box did, with the box's own key
    app.secret_key = (box.data_dir / "secrets" / "session_key").read_text().strip()
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    old = serializer.dumps({"user_id": 2, "seen": time.time(), "pin": pin_hash[-16:]})
    browser = Browser(box)
    browser.cookies["appliance_session"] = old
    status, response, _ = browser.request("GET", "/")
    assert status == 302 and response.getheader("Location") == "/login"
    replaced = browser.cookies["appliance_session"]  # deleted (empty), or without the PIN
    assert replaced != old and (not replaced or "pin" not in cookie_payload(replaced))
