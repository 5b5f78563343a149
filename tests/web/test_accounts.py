"""Logins on a real `appliance serve`: server-side sessions and the failed-login throttle.

Every request goes over a real socket. Addresses 127.0.0.2, 127.0.0.3... are this machine
too (all of 127/8 is loopback), so a client bound to one of them stands for another
computer on the clinic's network; 127.0.0.1 is the kiosk on the box itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import sqlite3
import threading
import zlib
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from helpers import Served

from appliance.store import users
from appliance.store.db import Store

PIN = "2468"
ADMIN_PIN = "975310"


class Browser:
    """One browser: its own cookies, its own source address."""

    def __init__(self, served: Served, source: str = "127.0.0.1") -> None:
        self.port = served.port
        self.source = source
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None, cookies=None):
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=60, source_address=(self.source, 0)
        )
        jar = self.cookies if cookies is None else cookies
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        if cookies is None:
            for header in response.msg.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(header).items():
                    self.cookies[name] = morsel.value
        return response.status, response, text

    def csrf(self, path: str = "/login") -> str:
        _status, _response, text = self.request("GET", path)
        return re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)

    def login(self, username: str, pin: str):
        token = self.csrf()
        return self.request(
            "POST", "/login", {"csrf_token": token, "username": username, "pin": pin}
        )


@pytest.fixture
def box(tmp_path):
    data_dir = tmp_path / "data"
    store = Store.open(data_dir)
    users.create_user(store, "admin", ADMIN_PIN, "admin")
    users.create_user(store, "nurse", PIN, "operator")
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        {
            "APPLIANCE_USB_ROOTS": "",
            "APPLIANCE_MIN_FREE_MB": "1",
            "APPLIANCE_DICOM_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    served = Served(data_dir, env)
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
