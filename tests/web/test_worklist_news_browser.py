"""Issue 28, "on the screen": an open worklist shows a film that just arrived within
moments, not at its next poll (5 s before). Real Chromium against a real `appliance
serve`; the film comes from another process (this test's own Importer on the same data
directory, as `appliance ingest` would), so the service's worker finds it at its next
look (<= 1 s) and its commits wake the page's waiting marker request."""

from __future__ import annotations

import time

import pytest
from helpers import TESTS
from web.boxkit import PIN, page_as, serve_box

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.store.db import Store

FILM = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
# The page used to ask every 5 s, first 5 s after it loaded: a film imported right after
# the page loads reached the screen >= 4 s later. Now: the worker's next look (<= 1 s)
# plus one reload.
ON_SCREEN_WITHIN_S = 3.0


@pytest.mark.slow
def test_a_film_that_arrives_reaches_the_open_worklist_within_moments(chromium, tmp_path):
    data = tmp_path / "data"
    served = serve_box(data)
    try:
        page = page_as(chromium, served, "nurse", PIN, 1024, 600)
        page.goto("/")
        assert page.locator("a.rowlink").count() == 0

        store = Store.open(data)
        config = load_config(data, environ={}, usb_roots=[], min_free_mb=1)
        arrived = Importer(store, config).import_path(FILM, source="usb")
        started = time.monotonic()
        row = page.locator(f'a.rowlink[href="/study/{arrived.image_id}"]')
        row.wait_for(timeout=ON_SCREEN_WITHIN_S * 1000 + 2000)
        seconds = time.monotonic() - started
        store.close()
        print(f"on the screen after {seconds:.2f} s")
        assert seconds < ON_SCREEN_WITHIN_S, f"on the screen after {seconds:.1f} s"
    finally:
        served.close()
