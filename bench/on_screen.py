"""On the screen: from the X-ray room's send to the result on the open worklist.

    python bench/on_screen.py [--json] [--repeats 20]

Starts `appliance serve` (bench/pipeline.py's Service, chest films screened as adults),
logs a nurse in, opens the worklist in Chromium (Debian's, through Playwright) at the
7-inch panel's 1024x600, then sends RG1 (pydicom-data's chest CR, a new SOP Instance UID
each time) with dcmtk's storescu, one at a time, and measures from storescu's start to
the screened row being on the page (``send_to_screen_ms``, p50/p95), beside the same
send's result row in the database (``send_to_result_ms``): what the page adds is the
wait for news plus one reload. Before the worklist waited for news (issue 28) it asked
every 5 s, so a result reached the screen 0-5 s after it was stored.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline as bench  # noqa: E402 - bench/pipeline.py beside this file

from appliance.store import users  # noqa: E402
from appliance.store.db import Store  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PIN = "2468"
SCREENED = "tr.triage-urgent, tr.triage-review, tr.triage-routine"


def log_in(port: int, username: str) -> dict[str, str]:
    """The session cookies of ``username``, logged in through the login form."""
    cookies: dict[str, str] = {}

    def request(method: str, path: str, form: dict | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        body = urlencode(form) if form else None
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            cookies[name] = rest.split(";", 1)[0]
        return response.status, response.read().decode()

    _, page = request("GET", "/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    status, _ = request("POST", "/login", {"csrf_token": token, "username": username, "pin": PIN})
    if status != 302:
        raise bench.BenchError(f"login as {username} answered {status}")
    return cookies


def measure(repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        work = Path(tmp)
        (work / "send").mkdir()
        service = bench.Service(work, chest_population="adult")
        try:
            store = Store.open(service.data)
            users.create_user(store, "nurse", PIN, "operator")
            store.close()
            cookies = log_in(service.port, "nurse")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=["--no-sandbox", "--disable-gpu"])
                context = browser.new_context(viewport={"width": 1024, "height": 600},
                                              has_touch=True)
                url = f"http://127.0.0.1:{service.port}"
                context.add_cookies([{"name": k, "value": v, "url": url}
                                     for k, v in cookies.items()])
                page = context.new_page()
                page.goto(url + "/")
                screen, result = [], []
                done = service.count("results")
                for n in range(repeats + 1):  # the first warms caches; not counted
                    shown = page.locator(SCREENED).count()
                    path = bench.with_new_uid("RG1_UNCR.dcm", work / "send", n)
                    started = time.perf_counter()
                    bench.storescu(service.dicom_port, [path])
                    done += 1
                    stored = service.wait_results(done)
                    # The page's policy forbids evaluated scripts: a selector instead.
                    page.locator(SCREENED).nth(shown).wait_for(state="attached", timeout=15000)
                    on_screen = time.perf_counter()
                    if n:
                        screen.append((on_screen - started) * 1000)
                        result.append((stored - started) * 1000)
                    page.wait_for_load_state("load")
                browser.close()
        finally:
            service.stop()
    return {"send_to_screen_ms": bench.spread(screen), "send_to_result_ms": bench.spread(result),
            "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    result = measure(args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'RG1 storescu start ->':34s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}")
    for label, key in (("result row stored", "send_to_result_ms"),
                       ("row on the open worklist", "send_to_screen_ms")):
        s = result[key]
        print(f"{label:34s} {s['p50']:8.1f} {s['p95']:8.1f} {s['max']:8.1f}")


if __name__ == "__main__":
    main()
