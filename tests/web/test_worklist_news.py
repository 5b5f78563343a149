"""Issue 28, "on the screen": the worklist's marker request waits for news (``?after=``)
and is answered as soon as an image, result or review lands, instead of the page finding
out at its next poll (every 5 s before). Real app, real SQLite; the commits come from
threads of this process (the service's workers) and from another connection (another
process, e.g. ``appliance ingest``)."""

from __future__ import annotations

import io
import sqlite3
import threading
import time

import cv2
import numpy as np
import pytest
from helpers import FUNDUS_RESULT, logged_in

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.store import jobs, users
from appliance.store import worklist as queries
from appliance.store.results import insert_result
from appliance.web import create_app

WAIT_S = 3.0


@pytest.fixture
def box(tmp_path):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config, {"MARKER_WAIT_SECONDS": WAIT_S, "MARKER_WAITERS": 1})
    store = app.extensions["appliance_store"]
    users.create_user(store, "nurse", "2468", "operator")
    yield app, store, Importer(store, config)
    store.close()


def photo(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


def ask(client, after: str | None) -> tuple[dict, float]:
    started = time.monotonic()
    url = "/worklist/marker" if after is None else f"/worklist/marker?after={after}"
    response = client.get(url)
    assert response.status_code == 200
    return response.get_json(), time.monotonic() - started


def later(seconds: float, action) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_page_waiting_for_news_is_answered_when_an_image_lands_not_at_its_next_poll(box):
    app, store, importer = box
    client = logged_in(app, "nurse")
    now, _ = ask(client, None)
    arrives = later(0.3, lambda: screen(store, importer.import_stream(
        io.BytesIO(photo(1)), source="usb", original_name="IMG_1.PNG"
    ).image_id))
    news, seconds = ask(client, now["marker"])
    arrives.join()
    assert news["waited"] is True
    assert news["marker"] != now["marker"]
    assert news["marker"] == queries.latest_marker(store)
    assert 0.25 <= seconds < 1.0, seconds  # woken by the commit, not by the timeout


def test_a_stale_marker_is_answered_at_once(box):
    app, store, importer = box
    client = logged_in(app, "nurse")
    before, _ = ask(client, None)
    image_id = importer.import_stream(
        io.BytesIO(photo(2)), source="usb", original_name="IMG_2.PNG"
    ).image_id
    screen(store, image_id)
    news, seconds = ask(client, before["marker"])
    assert news["marker"] != before["marker"]
    assert seconds < 0.5


def screen(store, image_id: int) -> None:
    """What a worker does with a claimed job, without the models: its result, done."""
    job = jobs.claim(store, "test-worker", 60, 3)
    assert job is not None and job.image_id == image_id
    with store.write() as conn:
        insert_result(conn, image_id, job.id, FUNDUS_RESULT, None)
        assert jobs.complete(conn, job)


def test_a_film_reloads_the_page_once_with_its_result_not_first_without_it(box):
    """The image row lands ~0.1 s before its result: the waiting page is answered when
    the result is in, so it reloads once (and not while the box is screening)."""
    app, store, importer = box
    client = logged_in(app, "nurse")
    now, _ = ask(client, None)

    def arrive_then_screen() -> None:
        image_id = importer.import_stream(
            io.BytesIO(photo(5)), source="usb", original_name="IMG_5.PNG"
        ).image_id
        time.sleep(0.4)
        screen(store, image_id)

    worker = later(0.2, arrive_then_screen)
    news, seconds = ask(client, now["marker"])
    worker.join()
    images, results, _ = news["marker"].split("-")
    assert (images, results) != tuple(now["marker"].split("-")[:2])
    assert int(results) > int(now["marker"].split("-")[1]), news  # with its result
    assert 0.55 <= seconds < 0.2 + 0.4 + 0.8, seconds


def test_a_film_whose_screening_takes_long_is_shown_waiting_after_the_settle_time(box):
    app, _, importer = box
    client = logged_in(app, "nurse")
    now, _ = ask(client, None)
    arrives = later(0.2, lambda: importer.import_stream(
        io.BytesIO(photo(6)), source="usb", original_name="IMG_6.PNG"
    ))
    news, seconds = ask(client, now["marker"])
    arrives.join()
    assert news["marker"].split("-")[0] != now["marker"].split("-")[0]
    settle = queries.SCREENING_SETTLE_SECONDS
    assert 0.2 + settle - 0.1 <= seconds < 0.2 + settle + 0.8, seconds


def test_with_no_news_the_wait_ends_after_its_limit_with_the_same_marker(box):
    app, _, _ = box
    client = logged_in(app, "nurse")
    now, _ = ask(client, None)
    news, seconds = ask(client, now["marker"])
    assert news == {"marker": now["marker"], "waited": True}
    assert WAIT_S - 0.1 <= seconds < WAIT_S + 1.5


def test_a_commit_by_another_process_is_seen_without_waking_anyone(box):
    """Another process's commit wakes nothing here: the marker is read again twice a
    second while a page waits (MARKER_RECHECK_SECONDS)."""
    app, store, _ = box
    client = logged_in(app, "nurse")
    now, _ = ask(client, None)

    def elsewhere() -> None:
        conn = sqlite3.connect(store.db_path, isolation_level=None)
        stamp = "2024-01-01T00:00:00.000+00:00"
        conn.execute(
            "INSERT INTO studies (study_instance_uid, created_at) VALUES ('2.25.1', ?)", (stamp,)
        )
        conn.execute(
            "INSERT INTO images (study_id, sha256, stored_path, file_format, size_bytes, source,"
            " received_at) VALUES ((SELECT MAX(id) FROM studies), ?, 'x', 'png', 1, 'usb', ?)",
            ("f" * 64, stamp),
        )
        conn.close()

    writer = later(0.2, elsewhere)
    news, seconds = ask(client, now["marker"])
    writer.join()
    assert news["marker"] != now["marker"]
    assert seconds < 0.2 + queries.MARKER_RECHECK_SECONDS + 0.5


def test_pages_past_the_limit_of_waiters_are_answered_at_once_and_told_so(box):
    """Each waiting page holds one of the web server's threads: with the limit (1 here)
    taken, the next page is answered without waiting and asks again a few seconds later."""
    app, store, importer = box
    first, second = logged_in(app, "nurse"), logged_in(app, "nurse")
    now, _ = ask(first, None)
    held = {}
    waiting = threading.Thread(target=lambda: held.update(ask(first, now["marker"])[0]))
    waiting.start()
    time.sleep(0.3)
    answer, seconds = ask(second, now["marker"])
    assert answer == {"marker": now["marker"], "waited": False}
    assert seconds < 0.5
    screen(store, importer.import_stream(
        io.BytesIO(photo(3)), source="usb", original_name="IMG_3.PNG"
    ).image_id)
    waiting.join(timeout=WAIT_S)
    assert held["waited"] is True and held["marker"] != now["marker"]
    # The slot is free again: the next page waits.
    after = held["marker"]
    stop = later(0.3, lambda: screen(store, importer.import_stream(
        io.BytesIO(photo(4)), source="usb", original_name="IMG_4.PNG"
    ).image_id))
    again, _ = ask(second, after)
    stop.join()
    assert again["waited"] is True and again["marker"] != after


def test_a_stopping_box_ends_a_page_s_wait(box):
    app, _, _ = box
    stop = threading.Event()
    app.extensions["appliance_stop"] = stop
    client = logged_in(app, "nurse")
    now, _ = ask(client, None)
    setter = later(0.2, stop.set)
    news, seconds = ask(client, now["marker"])
    setter.join()
    assert news == {"marker": now["marker"], "waited": False}  # the page backs off
    assert seconds < 0.2 + queries.MARKER_RECHECK_SECONDS + 0.5
    again, seconds = ask(client, now["marker"])  # and is not held while the box stops
    assert again == {"marker": now["marker"], "waited": False} and seconds < 0.5


def test_the_marker_still_needs_a_login(box):
    app, _, _ = box
    response = app.test_client().get("/worklist/marker?after=0-0-0")
    assert response.status_code in (302, 401)
