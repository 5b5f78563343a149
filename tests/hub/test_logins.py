"""Dashboard sign-in on a real hub: server-side sessions, the failed-login throttle behind
a reverse proxy, CSRF on sign-out, and the headers every page carries."""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import zlib
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from helpers import free_port
from sync.synckit import HubProcess, HubThread

from appliance.hub import records
from appliance.hub.db import HubDatabase

PASSWORD = "correct horse battery"


class Browser:
    """One browser, reaching the hub directly or, with ``forwarded_for``, through a reverse
    proxy on this machine (which connects from 127.0.0.1 and adds the header)."""

    def __init__(self, port: int, forwarded_for: str = "", proto: str = "") -> None:
        self.port = port
        self.headers = {}
        if forwarded_for:
            self.headers["X-Forwarded-For"] = forwarded_for
        if proto:
            self.headers["X-Forwarded-Proto"] = proto
        self.cookies: dict[str, str] = {}
        self.last_set_cookie = ""

    def request(self, method: str, path: str, form: dict | None = None, cookies=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        jar = self.cookies if cookies is None else cookies
        headers = dict(self.headers)
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
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
                self.last_set_cookie = header
                for name, morsel in SimpleCookie(header).items():
                    self.cookies[name] = morsel.value
        return response.status, response, text

    def csrf(self, path: str = "/login") -> str:
        text = self.request("GET", path)[2]
        return re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)

    def sign_in(self, username: str = "manager", password: str = PASSWORD):
        form = {"csrf_token": self.csrf(), "username": username, "password": password}
        return self.request("POST", "/login", form)


def make_hub_dir(tmp_path, config: str = ""):
    data_dir = tmp_path / "hub"
    database = HubDatabase(data_dir)
    database.migrate()
    conn = database.connect()
    try:
        records.set_admin(conn, "manager", PASSWORD)
    finally:
        conn.close()
    if config:
        (data_dir / "config.toml").write_text(config)
    return data_dir


@pytest.fixture
def hub_process(tmp_path):
    hub = HubProcess(make_hub_dir(tmp_path), free_port())
    yield hub
    hub.kill()


def test_forty_parallel_sign_ins_check_exactly_five_passwords(hub_process):
    browser = Browser(hub_process.port)
    token = browser.csrf()
    statuses: list[int] = []
    barrier = threading.Barrier(40)

    def guess(n: int) -> None:
        barrier.wait()
        form = {"csrf_token": token, "username": "manager", "password": f"guess number {n}"}
        statuses.append(browser.request("POST", "/login", form)[0])

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(statuses) == [401] * 5 + [429] * 35


def test_a_stranger_behind_the_proxy_locks_out_only_themselves(hub_process):
    port = hub_process.port
    stranger = Browser(port, forwarded_for="203.0.113.9")
    for _ in range(5):
        assert stranger.sign_in(password="guess guess")[0] == 401
    assert stranger.sign_in()[0] == 429
    # Writing someone else's address in the header does not help: the proxy appends the
    # peer it saw, and that right-most address is the one that counts.
    liar = Browser(port, forwarded_for="198.51.100.20, 203.0.113.9")
    assert liar.sign_in()[0] == 429
    admin = Browser(port, forwarded_for="198.51.100.20")
    status, response, _ = admin.sign_in()
    assert status == 302 and response.getheader("Location") == "/"
    assert admin.request("GET", "/")[0] == 200


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path):
    hub = HubProcess(make_hub_dir(tmp_path, "hub_trusted_proxies = []\n"), free_port())
    try:
        for n in range(5):  # a new "address" per guess: all one client, really
            assert Browser(hub.port, f"192.0.2.{n}").sign_in(password="guess guess")[0] == 401
        assert Browser(hub.port, "192.0.2.99").sign_in()[0] == 429
        https = Browser(hub.port, "192.0.2.99", proto="https")
        https.csrf()
        assert "Secure" not in https.last_set_cookie  # the scheme is not believed either
    finally:
        hub.kill()


@pytest.fixture
def hub(tmp_path):
    make_hub_dir(tmp_path)
    server = HubThread(tmp_path / "hub")
    yield server
    server.close()


def cookie_payload(value: str) -> dict:
    compressed = value.startswith(".")
    data = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)


def test_sign_out_ends_the_session_on_the_hub_and_needs_the_csrf_token(hub):
    browser = Browser(hub.port)
    assert browser.sign_in()[0] == 302
    copied = dict(browser.cookies)
    assert set(cookie_payload(copied["session"])) <= {"sid", "csrf", "_permanent"}
    assert browser.request("GET", "/", cookies=copied)[0] == 200

    assert browser.request("POST", "/logout", {})[0] == 400  # no token: nothing happens
    assert browser.request("POST", "/logout", {"csrf_token": "forged"})[0] == 400
    assert browser.request("GET", "/", cookies=copied)[0] == 200

    token = browser.csrf("/")
    assert browser.request("POST", "/logout", {"csrf_token": token})[0] == 302
    status, response, _ = browser.request("GET", "/", cookies=copied)
    assert status == 302 and response.getheader("Location") == "/login"


def test_a_new_password_ends_every_session(hub):
    browser = Browser(hub.port)
    assert browser.sign_in()[0] == 302
    conn = hub.conn()
    try:
        records.set_admin(conn, "manager", "a brand new password")
    finally:
        conn.close()
    assert browser.request("GET", "/")[0] == 302


def test_every_dashboard_page_carries_the_security_headers(hub):
    browser = Browser(hub.port)
    assert browser.sign_in()[0] == 302
    for path in ("/login", "/"):
        status, response, text = browser.request("GET", path)
        assert status == 200, path
        policy = response.getheader("Content-Security-Policy")
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "<style" not in text and "style=" not in text
        assert response.getheader("X-Frame-Options") == "DENY"
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert response.getheader("Cache-Control") == "no-store"
        assert response.getheader("Referrer-Policy") == "no-referrer"
    status, response, css = browser.request("GET", "/static/hub.css")
    assert status == 200 and "font-family" in css
    assert response.getheader("X-Content-Type-Options") == "nosniff"


def test_the_cookie_is_secure_behind_an_https_proxy(hub):
    plain = Browser(hub.port)
    plain.csrf()
    assert "HttpOnly" in plain.last_set_cookie and "SameSite=Strict" in plain.last_set_cookie
    assert "Secure" not in plain.last_set_cookie  # plain HTTP on the server itself
    proxied = Browser(hub.port, forwarded_for="198.51.100.20", proto="https")
    status, response, _ = proxied.sign_in()
    assert status == 302 and "Secure" in proxied.last_set_cookie
    assert response.getheader("Strict-Transport-Security")
