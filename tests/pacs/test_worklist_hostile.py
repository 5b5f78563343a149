"""A worklist server on the LAN is trusted for nothing (issue 25, findings 4, 5 and 9).

A real hostile MWL SCP (pynetdicom, tests/pacs/hostile_ris.py) answers bad times and
dates, 10,000 entries, 8 KB names, control characters and malformed identifiers. Every
study page of an image without a patient stays 200, the cache stays small through a
day of refreshes, the free-space reserve is kept, and a name tapped from the worklist
reaches the SR, the capture and the hub without a control character."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import timedelta

import pytest
from fuzzkit import WORKLIST_BAD_TIMES, WORKLIST_CONTROL_NAMES
from helpers import FUNDUS_DIR, fill_disk, small_disk
from pacs.hostile_ris import HostileRis, raw_entry
from pacs.kit import stored_result
from pacs.test_worklist import FUNDUS_RESULT
from sqlite_utils import Database

from appliance.config import load_config
from appliance.errors import PacsUnreachableError, StorageFullError
from appliance.ingest.importer import Importer
from appliance.pacs import worklist
from appliance.pacs.capture import build_capture
from appliance.pacs.facts import read_facts
from appliance.pacs.report import build_report
from appliance.pacs.status import pacs_status
from appliance.store import mwl, users
from appliance.store.db import Store, utc_now
from appliance.store.migrations import migrations
from appliance.web import create_app

PIN = "2468"
MB = 1024 * 1024
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def ris():
    server = HostileRis(lambda day: [])
    yield server
    server.stop()


def box(data_dir, ris, **overrides):
    """The box's app on a real store, asking ``ris``; (app, store, config)."""
    settings = {"min_free_mb": 1, "timezone": "UTC", "mwl_address": ris.address}
    config = load_config(data_dir, environ={}, usb_roots=[], **{**settings, **overrides})
    app = create_app(config)
    return app, app.extensions["appliance_store"], config


def photos_without_patient(store, config) -> list[int]:
    """Two photos from a camera card (no patient): one screened, one not yet."""
    importer = Importer(store, config)
    stored_result(store, importer, FUNDUS_DIR / "IDRiD_003.jpg", FUNDUS_RESULT)
    importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb")
    return [row[0] for row in store.conn().execute("SELECT id FROM images ORDER BY id")]


def nurse(app, store):
    users.create_user(store, "nurse", PIN, "operator")
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"csrf_token": token, "username": "nurse", "pin": PIN})
    return client


def flood(day, count=10_000, name_bytes=8192, controls=True):
    """``count`` answers with names of ``name_bytes``; one in four on another day (past
    or future)."""
    noise = "\x1b\x07\r\n\x7f" if controls else ""
    for n in range(count):
        on = day + timedelta(days=(-3, 2)[n % 8 // 4]) if n % 4 == 0 else day
        yield raw_entry(
            patient_id=f"P-{n}",
            name=f"Banda{noise}^{'A' * name_bytes}",
            description="D" * name_bytes,
            day=on,
            time=("XXYY", "1015", "2561", "0930")[n % 4],
        )


def strings(value) -> list[str]:
    """Every string in a JSON value, at any depth."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def worklist_bytes(store) -> int:
    """Bytes the worklist's tables and index take in the database (SQLite's dbstat)."""
    return (
        store.conn()
        .execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE 'mwl%'")
        .fetchone()[0]
    )


def test_bad_times_and_dates_leave_every_study_page_working(tmp_path, ris):
    """Finding 4: a start time 'XXYY' made every such page answer 500 all day."""
    bad_times = WORKLIST_BAD_TIMES
    ris.answers = lambda day: [
        *(raw_entry(patient_id=f"T-{n}", day=day, time=t) for n, t in enumerate(bad_times)),
        raw_entry(patient_id="GOOD", name="Phiri^Grace", day=day, time="10:15:00"),
        raw_entry(patient_id="BADDAY", day="2026XX01"),
        raw_entry(patient_id="NODAY", name="Mwale^Ruth", day=""),
    ]
    app, store, config = box(tmp_path / "box", ris)
    images = photos_without_patient(store, config)
    kept = worklist.refresh(store, config)
    client = nurse(app, store)
    for image_id in images:
        page = client.get(f"/study/{image_id}")
        assert page.status_code == 200, image_id
        assert "Phiri Grace" in page.text
    assert kept == len(bad_times) + 2
    cached = {
        e["patient_id"]: e
        for e in mwl.entries_for(store.conn(), worklist.today(config).isoformat())
    }
    assert cached["GOOD"]["scheduled_time"] == "10:15"
    assert cached["NODAY"]["scheduled_time"] == "09:30"  # no date: the day asked for
    assert {cached[f"T-{n}"]["scheduled_time"] for n in range(len(bad_times))} == {None}
    assert "1 bad scheduled date" in pacs_status(store, config)["worklist"]["last_error"]
    # a row cached before the checks, as the old code wrote it, is read defensively too
    with store.write() as conn:
        conn.execute(
            "INSERT INTO mwl_entries (scheduled_date, scheduled_time, patient_id, fetched_at)"
            " VALUES (?, 'XX:YY', 'OLD', ?)",
            (worklist.today(config).isoformat(), utc_now()),
        )
    for image_id in images:
        assert client.get(f"/study/{image_id}").status_code == 200, image_id
    store.close()


def test_bad_identifiers_drop_the_entry_and_the_system_page_says_why(tmp_path, ris):
    ris.answers = lambda day: [
        raw_entry(patient_id="P" * 65, day=day),
        raw_entry(patient_id="P-CR\r", day=day),
        raw_entry(patient_id="", day=day),
        raw_entry(patient_id="P-ACC", accession="A" * 17, day=day),
        raw_entry(patient_id="P-UID", study_uid="1.2.abc", day=day),
        raw_entry(patient_id="P-TOMORROW", day=day + timedelta(days=1)),
        raw_entry(
            patient_id="P-ODD",
            day=day,
            modality="o p\x01",
            station="S" * 17,
            sex="XX",
            birth_date="20991301",
        ),
        raw_entry(patient_id="P-OK", day=day),
    ]
    app, store, config = box(tmp_path / "box", ris)
    assert worklist.refresh(store, config) == 2
    day = worklist.today(config).isoformat()
    cached = {e["patient_id"]: e for e in mwl.entries_for(store.conn(), day)}
    assert sorted(cached) == ["P-ODD", "P-OK"]
    odd = cached["P-ODD"]  # coded values that are not codes are left out, the entry kept
    assert (odd["modality"], odd["station_aet"], odd["patient_sex"]) == (None, None, None)
    assert odd["patient_birth_date"] is None
    state = pacs_status(store, config)["worklist"]
    assert state["entries"] == 2 and state["last_success_at"]
    assert state["last_error"] == (
        "worklist answer: 6 entries refused (1 bad accession number, 2 bad patient ID,"
        " 1 bad study UID, 1 no patient ID, 1 not scheduled on the day asked)"
    )
    users.create_user(store, "admin", PIN, "admin")
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"csrf_token": token, "username": "admin", "pin": PIN})
    assert "6 entries refused" in client.get("/system").text
    store.close()


@pytest.mark.slow
def test_a_flood_is_capped_and_a_day_of_refreshes_keeps_the_worklist_small(tmp_path, ris):
    """Finding 5: 10,000 entries of 8 KB names made 166 MB in one refresh, and old days
    were never deleted. A day at the 5-minute refresh is 288 refreshes; the first go to
    the hostile SCP over the network, across three calendar days (``day``), the rest
    replay its capped answer through the same store write (mwl.replace_day), which is
    all a refresh writes."""
    ris.answers = flood
    app, store, config = box(tmp_path / "box", ris)
    images = photos_without_patient(store, config)
    today = worklist.today(config)
    for day in (today - timedelta(days=2), today - timedelta(days=1), today):
        started = time.monotonic()
        assert worklist.refresh(store, config, day) <= worklist.MAX_ENTRIES
        assert time.monotonic() - started < 60
    state = pacs_status(store, config)["worklist"]
    assert "more than 2000 answers, only the first 2000 read" in state["last_error"]
    days = [r[0] for r in store.conn().execute("SELECT DISTINCT scheduled_date FROM mwl_entries")]
    assert sorted(days) == [(today - timedelta(days=1)).isoformat(), today.isoformat()]
    entries = mwl.entries_for(store.conn(), today.isoformat())
    assert len(entries) == state["entries"] > 1000
    assert 50 < max(len(e["patient_name"]) for e in entries) <= 64
    assert max(len(e["description"]) for e in entries) == 64
    assert not any(CONTROL.search(e["patient_name"] + e["description"]) for e in entries)
    answer = [{k: e[k] for k in mwl.FIELDS} for e in entries]
    for _ in range(288 - 3):
        mwl.replace_day(store, today, answer, reserve_mb=1)
    assert worklist_bytes(store) < 20 * MB
    on_disk = sum(os.path.getsize(p) for p in store.data_dir.glob("appliance.db*") if p.is_file())
    assert on_disk < 20 * MB
    client = nurse(app, store)
    for image_id in images:
        assert client.get(f"/study/{image_id}").status_code == 200
    store.close()


@pytest.mark.slow
def test_the_free_space_reserve_is_kept(tmp_path, ris):
    """Finding 5: the refresh wrote without the free-space reserve other writers keep."""
    with small_disk(tmp_path / "disk", "48m") as disk:
        reserve_mb = 16
        ris.answers = lambda day: [raw_entry(patient_id="P-1", day=day)]
        app, store, config = box(disk / "data", ris, min_free_mb=reserve_mb)
        assert worklist.refresh(store, config) == 1
        ballast = disk / "ballast"
        fill_disk(ballast, leave_bytes=(reserve_mb + 2) * MB)
        ris.answers = lambda day: flood(day, controls=False)
        with pytest.raises(StorageFullError):
            worklist.refresh(store, config)
        assert shutil.disk_usage(disk).free >= reserve_mb * MB
        day = worklist.today(config).isoformat()
        assert [e["patient_id"] for e in mwl.entries_for(store.conn(), day)] == ["P-1"]
        assert "disk nearly full" in pacs_status(store, config)["worklist"]["last_error"]
        os.truncate(ballast, 0)  # space again: the next refresh takes the list
        assert worklist.refresh(store, config) > 1000
        assert shutil.disk_usage(disk).free >= reserve_mb * MB
        store.close()


def test_a_name_with_control_characters_reaches_the_sr_and_the_hub_clean(tmp_path, ris):
    """Finding 9: control characters in worklist names travelled to the PACS and hub."""
    ris.answers = lambda day: [
        raw_entry(
            patient_id="P-EYE-1",
            name=WORKLIST_CONTROL_NAMES[0],
            description="OP\tscreening\u2028again",
            accession="ACC-EYE-1",
            day=day,
            charset="ISO_IR 192",
        ),
        raw_entry(patient_id="P-2", name=WORKLIST_CONTROL_NAMES[1], day=day),
    ]
    app, store, config = box(tmp_path / "box", ris)
    image_id = photos_without_patient(store, config)[0]
    worklist.refresh(store, config)
    names = {
        e["patient_id"]: e
        for e in mwl.entries_for(store.conn(), worklist.today(config).isoformat())
    }
    assert names["P-EYE-1"]["patient_name"] == "Banda Amina"
    assert names["P-EYE-1"]["description"] == "OP screening again"
    assert names["P-2"]["patient_name"] == "Phiri (B Jo seph"
    client = nurse(app, store)
    page = client.get(f"/study/{image_id}").text
    entry = re.search(r'name="mwl_entry" value="(\d+)"', page.split("Banda Amina")[0]).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    tapped = client.post(
        f"/study/{image_id}/patient", data={"csrf_token": token, "mwl_entry": entry}
    )
    assert tapped.status_code == 302
    entered = (
        store.conn()
        .execute(
            "SELECT entered_patient_name FROM studies s JOIN images i"
            " ON i.study_id = s.id WHERE i.id = ?",
            (image_id,),
        )
        .fetchone()
    )
    assert entered[0] == "Banda Amina"
    result_id = (
        store.conn().execute("SELECT id FROM results WHERE image_id = ?", (image_id,)).fetchone()[0]
    )
    facts = read_facts(store, result_id, 2)
    capture = build_capture(facts)
    report = build_report(facts, capture)
    for obj in (capture, report):
        assert str(obj.PatientName) in ("Banda Amina^", "Banda Amina")
        assert obj.AccessionNumber == "ACC-EYE-1"
    hub_rows = (
        store.conn()
        .execute(
            "SELECT payload FROM outbox WHERE destination = 'hub' AND kind = 'result'"
            " ORDER BY revision DESC"
        )
        .fetchall()
    )
    newest = json.loads(hub_rows[0][0])
    assert newest["image"]["patient_name"] == "Banda Amina"
    assert not [text for text in strings(newest) if CONTROL.search(text)]
    store.close()


def test_a_worklist_dripping_answers_is_given_up_on_in_bounded_time(tmp_path, ris, monkeypatch):
    """A RIS that sends one answer just inside each timeout would hold the refresh for
    MAX_ENTRIES timeouts; the whole C-FIND has a deadline and the cache is kept."""

    def drip(day):
        for n in range(50):
            time.sleep(0.5)
            yield raw_entry(patient_id=f"P-{n}", day=day)

    app, store, config = box(tmp_path / "box", ris, pacs_timeout_seconds=1)
    ris.answers = lambda day: [raw_entry(patient_id="KEPT", day=day)]
    worklist.refresh(store, config)
    ris.answers = drip
    monkeypatch.setattr(worklist, "QUERY_SECONDS", 0.0)  # the deadline is then 4 timeouts
    started = time.monotonic()
    with pytest.raises(PacsUnreachableError, match="took too long"):
        worklist.refresh(store, config)
    assert time.monotonic() - started < 8
    day = worklist.today(config).isoformat()
    assert [e["patient_id"] for e in mwl.entries_for(store.conn(), day)] == ["KEPT"]
    store.close()


def test_the_migration_cleans_a_cache_written_before_the_checks(tmp_path):
    store = Store(tmp_path)
    db = Database(store.conn())
    migrations.apply(db, stop_before="m021_worklist_cache_checked")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    rows = [
        ("2020-01-01", "09:30", "OLD-DAY", "Old Day"),
        (today, "XX:YY", "BAD-TIME", "Kept Time Blanked"),
        (today, "09:30", "P" * 200, "Long Id"),
        (today, "09:30", "NAME", "Banda\x1b Amina"),
        (today, "09:30", "LONG-NAME", "A" * 8000),
        (today, "10:15", "GOOD", "Phiri Grace"),
    ]
    db.conn.executemany(
        "INSERT INTO mwl_entries (scheduled_date, scheduled_time, patient_id, patient_name,"
        " fetched_at) VALUES (?, ?, ?, ?, 'x')",
        rows,
    )
    migrations.apply(db)
    left = {
        r[0]: r[1]
        for r in store.conn().execute("SELECT patient_id, scheduled_time FROM mwl_entries")
    }
    assert left == {"BAD-TIME": None, "GOOD": "10:15"}
    store.close()
