"""Records one box stored before the hub checked every field (issue 25) never take a
reader down for the other sites: through a real ``appliance hub serve`` (waitress on
SQLite; gunicorn's workers on PostgreSQL) FHIR search and read, ``hub fhir-push``, every
dashboard page and the exports keep working, the bad records are listed for the admin
(dashboard and ``hub bad-records``), and quarantine takes them out of every reader,
audited and reversible. FHIR: the right password is not throttled by 8 requests at
once, a wrong one still is; 2,000 repeated ``date=`` is a 400, not a 500."""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from fuzzkit import POISONED_ENTRIES, good_entry_data
from helpers import free_port
from hub.test_fhir import FhirServer
from hub.test_logins import Browser
from sync.synckit import clean_env, wait_for_port

from appliance.cli import main
from appliance.hub import records, tallies
from appliance.hub.db import HubDatabase
from appliance.hub.fhir.resources import report_id

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
GOOD, BAD = "dev-good", "dev-bad"
# What the readers cannot render, of the fuzz corpus's poisoned entries (the others are
# odd but can be shown: the door refuses them now, the readers need not).
UNRENDERABLE = {
    "null threshold",
    "image as text",
    "probability as text",
    "not a date",
    "monitor summary of strings",
    "monitor warning as text",
}


def entry(kind: str, n: int, data: dict | None = None, entry_id: str = "") -> dict:
    return {
        "id": entry_id or f"{kind}:{n:08x}",
        "rev": 1,
        "kind": kind,
        "data": data if data is not None else good_entry_data(kind, n),
    }


def poisoned_ids() -> dict[str, str]:
    """name -> entry id on the bad box, for every poisoned entry of the corpus."""
    return {name: f"{kind}:poison-{i}" for i, (name, kind, _, _) in enumerate(POISONED_ENTRIES)}


def stock(data_dir: Path, url: str) -> HubDatabase:
    """Two boxes: Clinic A's good records; Clinic B's good ones and, stored as the hub
    stored them before its door checked each field, every poisoned entry."""
    database = HubDatabase(data_dir, url)
    database.migrate()
    conn = database.connect()
    try:
        with conn.transaction():
            for device_id, site in ((GOOD, "Clinic A"), (BAD, "Clinic B")):
                conn.execute(
                    "INSERT INTO devices (id, site, name, token_hash, public_key, enrolled_at)"
                    " VALUES (?, ?, 'box', ?, 'k', '2026-01-01')",
                    (device_id, site, f"hash-{device_id}"),
                )
        records.set_admin(conn, "manager", PASSWORD)
        good = [entry("result", n) for n in (1, 2, 3)] + [
            entry("review", 1),
            entry("outcome", 2),
            entry("monitor", 0, entry_id="monitor:summary"),
        ]
        ids = poisoned_ids()
        bad = [entry("result", n) for n in (11, 12)] + [
            entry(kind, 100 + i, {**good_entry_data(kind, 100 + i), **change}, ids[name])
            for i, (name, kind, change, _) in enumerate(POISONED_ENTRIES)
        ]
        with conn.transaction():
            records.store_entries(conn, GOOD, good)
        with conn.transaction():
            records.store_entries(conn, BAD, bad)
    finally:
        conn.close()
    return database


def serve(data_dir: Path, url: str, port: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "appliance", "hub", "serve", "--data-dir", str(data_dir),
            "--port", str(port)]
    if url:  # PostgreSQL: gunicorn's pre-forked workers, as in production
        args += ["--database-url", url, "--workers", "2", "--threads", "4"]
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    with open(data_dir.parent / "hub.log", "ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=log, env=env)


@pytest.fixture
def hub(tmp_path, database_url):
    data_dir = tmp_path / "hub"
    database = stock(data_dir, database_url)
    port = free_port()
    proc = serve(data_dir, database_url, port)
    try:
        wait_for_port(port, 60)
        yield database, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


def fhir(port: int, path: str, password: str = PASSWORD) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    token = base64.b64encode(f"manager:{password}".encode()).decode()
    try:
        conn.request("GET", path, headers={"Authorization": f"Basic {token}"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, {"text": body.decode(errors="replace")}


def cli(database: HubDatabase, *args: str, server: str = ""):
    env = {"APPLIANCE_HUB_FHIR_PUSH_SETTLE_SECONDS": "0", "APPLIANCE_HUB_FHIR_SERVER_URL": server}
    return CliRunner().invoke(
        main,
        ["hub", *args, "--data-dir", str(database.data_dir), "--database-url", database.url],
        env=env,
        catch_exceptions=False,
    )


def signed_in(port: int) -> Browser:
    browser = Browser(port)
    assert browser.sign_in()[0] == 302
    return browser


def form_csrf(browser: Browser, path: str) -> str:
    import re

    text = browser.request("GET", path)[2]
    return re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)


def test_every_reader_keeps_working_for_the_other_sites(hub, tmp_path):
    database, port = hub
    ids = poisoned_ids()
    # FHIR search: every report that can be written, and a word on those that cannot
    status, bundle = fhir(port, "/fhir/DiagnosticReport?_count=200")
    assert status == 200, bundle
    matched = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    poisoned_results = sum(1 for _, kind, _, _ in POISONED_ENTRIES if kind == "result")
    assert bundle["total"] == len(matched) == 5 + poisoned_results - 4
    told = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "4 stored record(s) could not be written" in json.dumps(told)
    assert fhir(port, "/fhir/DiagnosticReport?site=Clinic%20A")[1]["total"] == 3
    # read: the good one, and a clear answer for a bad one
    good_id = report_id(GOOD, f"result:{1:08x}")
    assert fhir(port, f"/fhir/DiagnosticReport/{good_id}")[0] == 200
    bad_id = report_id(BAD, ids["null threshold"])
    status, answer = fhir(port, f"/fhir/DiagnosticReport/{bad_id}")
    assert status == 422 and "cannot be written as FHIR" in json.dumps(answer)

    # the pusher moves past them: every other report goes, and later ones too
    server = FhirServer()
    try:
        pushed = cli(database, "fhir-push", server=server.url)
        assert pushed.exit_code == 0, pushed.output
        assert pushed.output.strip() == (
            f"{len(matched)} reports pushed, 0 unchanged, 4 skipped"
            " (see `appliance hub bad-records`)"
        )
        assert len(server.received) == len(matched)
        conn = database.connect()
        try:
            with conn.transaction():
                records.store_entries(conn, GOOD, [entry("result", 4)])
        finally:
            conn.close()
        again = cli(database, "fhir-push", server=server.url)
        assert again.output.startswith("1 reports pushed, 0 unchanged"), again.output
        assert len(server.received) == len(matched) + 1
    finally:
        server.close()

    # every dashboard page, the bad records shown to the admin
    browser = signed_in(port)
    status, _, page = browser.request("GET", "/")
    assert status == 200 and ">Clinic A</a>" in page
    assert "Records that could not be shown" in page and "No alarms." not in page
    assert "No reference." in page  # Clinic A's own summary and alarm still shown
    assert browser.request("GET", "/?page=2")[0] == 200
    status, _, listing = browser.request("GET", f"/boxes/{BAD}/records")
    assert status == 200
    for name in UNRENDERABLE:
        assert ids[name] in listing, name
    assert browser.request("GET", f"/boxes/{GOOD}/records")[0] == 200
    assert browser.request("GET", "/boxes/dev-nobody/records")[0] == 404

    # the exports
    status, _, results = browser.request("GET", "/export/results.csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(results)))
    assert {r["site"] for r in rows} == {"Clinic A", "Clinic B"}
    for path in ("/export/indicators.csv", "/export/indicators.json"):
        assert browser.request("GET", path)[0] == 200, path

    # the command line lists the same records, and a check of the box finds them all
    listed = json.loads(cli(database, "bad-records", "--device", BAD, "--json").output)
    assert {r["entry_id"] for r in listed} == {ids[n] for n in UNRENDERABLE}
    checked = cli(database, "bad-records", "--device", BAD, "--check")
    assert f"checked {2 + len(POISONED_ENTRIES)} records of {BAD}: 6 cannot be shown" in (
        checked.output
    )


def test_quarantine_takes_records_out_of_every_reader_audited_and_reversible(hub):
    database, port = hub
    ids = poisoned_ids()
    browser = signed_in(port)
    path = f"/boxes/{BAD}/records"
    csrf = form_csrf(browser, path)
    # a check from the page notes every bad record of the box
    status, response, _ = browser.request("POST", f"{path}/check", {"csrf_token": csrf})
    assert status == 302
    assert f"Checked {2 + len(POISONED_ENTRIES)} records: 6 could not be shown." in browser.request(
        "GET", response.getheader("Location")
    )[2]
    # the form needs its token, and a signed-in admin
    chosen = ids["null threshold"]
    assert browser.request("POST", f"{path}/quarantine", {"entry": chosen})[0] == 400
    assert Browser(port).request("POST", f"{path}/quarantine", {"entry": chosen})[0] == 302
    form = {"entry": chosen, "csrf_token": csrf, "reason": "box 7 bug"}
    assert browser.request("POST", f"{path}/quarantine", form)[0] == 302
    done = cli(database, "quarantine", "--device", BAD, "--by", "lead",
               *[ids[n] for n in UNRENDERABLE if n != "null threshold"])
    assert done.exit_code == 0, done.output

    # out of FHIR, the pushes' view, the dashboard figures and the exports
    status, bundle = fhir(port, "/fhir/DiagnosticReport?_count=200")
    assert status == 200 and all(e["search"]["mode"] != "outcome" for e in bundle["entry"])
    conn = database.connect()
    try:
        assert tallies.tallied(conn) == tallies.recount(conn)
        assert tallies.models_tallied(conn) == tallies.models_recount(conn)
        held = {r["entry_id"] for r in conn.execute("SELECT entry_id FROM entries")}
        assert not held & {ids[n] for n in UNRENDERABLE}
    finally:
        conn.close()
    results = browser.request("GET", "/export/results.csv")[2]
    assert ids["null threshold"] not in results and ids["image as text"] not in results
    page = browser.request("GET", path)[2]
    assert "box 7 bug" in page and "dashboard:manager" in page and "lead" in page
    assert "None: every record of this box that was read could be shown." in page
    home = browser.request("GET", "/")[2]
    assert "Records that could not be shown" in home  # 6 in quarantine, 0 to look at

    # kept, and reversible
    listed = json.loads(cli(database, "bad-records", "--quarantined", "--json").output)
    assert {r["entry_id"] for r in listed} == {ids[n] for n in UNRENDERABLE}
    back = cli(database, "quarantine", "--device", BAD, "--release", ids["null threshold"])
    assert back.output.strip() == f"released {BAD} {ids['null threshold']}"
    conn = database.connect()
    try:
        assert tallies.tallied(conn) == tallies.recount(conn)
        assert conn.one(
            "SELECT revision FROM entries WHERE device_id = ? AND entry_id = ?",
            (BAD, ids["null threshold"]),
        )
        actions = conn.execute("SELECT action, actor FROM admin_actions ORDER BY at")
    finally:
        conn.close()
    assert actions[0] == {"action": "quarantine", "actor": "dashboard:manager"}
    assert actions[-1]["action"] == "release"
    # an unknown record is said so, with a failing exit status
    missing = cli(database, "quarantine", "--device", BAD, "result:nothing")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_the_right_password_is_never_throttled_by_concurrency(hub):
    _, port = hub
    path = "/fhir/DiagnosticReport?site=Clinic%20A"
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: fhir(port, path)[0], range(8)))
    assert statuses == [200] * 8
    with ThreadPoolExecutor(8) as pool:  # again, once the password is known
        statuses = list(pool.map(lambda _: fhir(port, path)[0], range(8)))
    assert statuses == [200] * 8
    # a wrong password is still counted and throttled
    wrong = [fhir(port, path, "wrong password")[0] for _ in range(7)]
    assert wrong[:5] == [401] * 5 and wrong[-1] == 429


def test_repeated_parameters_are_refused_with_a_clear_message(hub):
    database, port = hub
    status, answer = fhir(port, "/fhir/DiagnosticReport?" + "&".join(["date=ge2026-01"] * 11))
    assert status == 400 and "date given 11 times: give it at most 10 times" in json.dumps(answer)
    status, answer = fhir(port, "/fhir/DiagnosticReport?site=A&site=B")
    assert status == 400 and "site given 2 times: give it once" in json.dumps(answer)
    status, answer = fhir(port, "/fhir/DiagnosticReport?" + "&".join(["date=ge2026"] * 2000))
    if database.url:  # gunicorn refuses a request line that long before the app sees it
        assert status == 414
    else:
        assert status == 400 and "date given 2000 times" in json.dumps(answer)
