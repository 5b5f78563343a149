"""Test kit for web tests on a real `appliance serve` (import as ``from web.boxkit import ...``).

Every request goes over a real socket. Addresses 127.0.0.2, 127.0.0.3... are this machine
too (all of 127/8 is loopback), so a client bound to one of them stands for another
computer on the clinic's network; 127.0.0.1 is the kiosk on the box itself.
"""

from __future__ import annotations

import http.client
import os
import re
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
from helpers import Served

from appliance.store import users
from appliance.store.db import Store

PIN = "2468"
ADMIN_PIN = "975310"


def serve_box(data_dir: Path) -> Served:
    """A real box with an admin and a nurse, no DICOM listener, no USB bus."""
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
    return Served(data_dir, env)


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


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium through Playwright, one per test module (import this fixture)."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def page_as(chromium, served: Served, username: str, pin: str, width: int, height: int):
    """A touch page of ``served`` at width x height, logged in as ``username``."""
    kiosk = Browser(served)
    kiosk.login(username, pin)
    context = chromium.new_context(
        viewport={"width": width, "height": height}, has_touch=True, base_url=served.url
    )
    context.add_cookies(
        [{"name": k, "value": v, "url": served.url} for k, v in kiosk.cookies.items()]
    )
    return context.new_page()
