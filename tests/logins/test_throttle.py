"""The failed-login throttle on every database it runs on: the box's SQLite, the hub's
SQLite and the hub's PostgreSQL. Real databases, real threads; ``now`` is passed in, so
the backoff is checked without waiting for it."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from appliance.errors import LoginThrottledError
from appliance.hub.db import HubDatabase
from appliance.logins import throttle
from appliance.store.db import Store

T0 = 1_800_000_000.0
STRANGER = "192.0.2.7"


class Box:
    def __init__(self, data_dir) -> None:
        self.store = Store.open(data_dir)

    @contextmanager
    def transaction(self):
        with self.store.write() as conn:
            yield conn

    def close(self) -> None:
        self.store.close()


class Hub:
    """A connection per transaction, as the hub has one per request."""

    def __init__(self, data_dir, url: str) -> None:
        self.database = HubDatabase(data_dir, url)
        self.database.migrate()

    @contextmanager
    def transaction(self):
        conn = self.database.connect()
        try:
            with conn.transaction():
                yield conn
        finally:
            conn.close()

    def close(self) -> None:
        pass


@pytest.fixture(params=["box", "hub-sqlite", "hub-postgresql"])
def db(request, tmp_path):
    if request.param == "box":
        backend = Box(tmp_path / "box")
    elif request.param == "hub-sqlite":
        backend = Hub(tmp_path / "hub", "")
    else:
        backend = Hub(tmp_path / "hub", request.getfixturevalue("postgres").create_database())
    yield backend
    backend.close()


def attempt(db, account: str, client: str, now: float, *, right: bool = False) -> bool:
    """One login attempt: False when refused unchecked, else True (checked)."""
    counters = throttle.keys(account, client)
    try:
        with db.transaction() as conn:
            throttle.reserve(conn, counters, now)
    except LoginThrottledError:
        return False
    if right:
        with db.transaction() as conn:
            throttle.succeeded(conn, counters)
    return True


def test_forty_threads_at_once_get_exactly_five_checks(db):
    checked = []
    barrier = threading.Barrier(40)

    def guess() -> None:
        barrier.wait()
        checked.append(attempt(db, "admin", STRANGER, T0))

    threads = [threading.Thread(target=guess) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(checked) == 40 and checked.count(True) == 5


def test_each_lock_after_the_fifth_failure_is_twice_as_long_up_to_an_hour(db):
    for _ in range(5):
        assert attempt(db, "admin", STRANGER, T0)
    now = T0
    for expected in (300, 600, 1200, 2400, 3600, 3600):
        assert not attempt(db, "admin", STRANGER, now + expected - 1)
        with pytest.raises(LoginThrottledError) as caught, db.transaction() as conn:
            throttle.reserve(conn, throttle.keys("Admin ", STRANGER), now + 1)
        assert caught.value.retry_after == pytest.approx(expected - 1)
        now += expected
        assert attempt(db, "admin", STRANGER, now)  # checked (and wrong): locked again


def test_a_stranger_locks_out_only_their_own_address(db):
    for _ in range(5):
        attempt(db, "admin", STRANGER, T0)
    assert not attempt(db, "admin", STRANGER, T0 + 1)
    assert attempt(db, "admin", "127.0.0.1", T0 + 1, right=True)  # the kiosk
    assert attempt(db, "admin", "192.0.2.99", T0 + 1, right=True)  # a colleague's PC
    assert attempt(db, "nurse", STRANGER, T0 + 1)  # the stranger's other tries are separate


def test_one_address_cannot_try_every_account(db):
    for n in range(20):
        assert attempt(db, f"user{n}", STRANGER, T0)
    assert not attempt(db, "user99", STRANGER, T0 + 1)
    assert attempt(db, "user99", "192.0.2.8", T0 + 1)


def test_a_success_from_a_client_clears_its_counters(db):
    for _ in range(4):
        assert attempt(db, "nurse", "127.0.0.1", T0)
    assert attempt(db, "nurse", "127.0.0.1", T0, right=True)
    for _ in range(5):
        assert attempt(db, "nurse", "127.0.0.1", T0 + 1)  # five fresh tries again
    assert not attempt(db, "nurse", "127.0.0.1", T0 + 2)


def test_guessing_from_many_addresses_locks_the_account_but_never_the_kiosk(db):
    for n in range(50):
        assert attempt(db, "admin", f"198.51.100.{n}", T0)
    assert not attempt(db, "admin", "203.0.113.1", T0 + 1, right=True)  # a 51st address
    # The box's own screen (or the hub's server) always gets in, and is not counted.
    for _ in range(3):
        assert attempt(db, "admin", "127.0.0.1", T0 + 1)
    assert attempt(db, "admin", "::1", T0 + 1, right=True)
    assert not attempt(db, "admin", "203.0.113.2", T0 + 2)
    assert attempt(db, "admin", "203.0.113.3", T0 + 3600 + 2, right=True)  # lock over


def test_counters_are_forgotten_after_a_quiet_day(db):
    for _ in range(4):
        attempt(db, "nurse", STRANGER, T0)
    for _ in range(5):
        assert attempt(db, "nurse", STRANGER, T0 + throttle.FORGET_AFTER_SECONDS + 1)


def test_the_kiosk_and_a_tunnel_are_local_and_nothing_else_is():
    assert throttle.is_local("127.0.0.1") and throttle.is_local("::1")
    assert throttle.is_local("0:0:0:0:0:0:0:1")
    for other in ("127.0.0.2", "10.0.0.5", "::ffff:127.0.0.1", "", "localhost", "garbage"):
        assert not throttle.is_local(other)
    assert [k for k, _ in throttle.keys(" Admin", "127.0.0.1")] == [
        "ac:admin\n127.0.0.1",
        "c:127.0.0.1",
    ]
