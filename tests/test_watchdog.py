"""sd_notify and the health-gated watchdog, against a real unix datagram socket standing
where systemd's notify socket would be."""

from __future__ import annotations

import os
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance.store.db import Store
from appliance.watchdog import (
    Watchdog,
    notify,
    service_problems,
    start_watchdog,
    watchdog_interval,
)


class NotifySocket:
    """A bound AF_UNIX datagram socket: what systemd listens on for sd_notify."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(5)
        self.address = address

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        messages = []
        self.sock.setblocking(False)
        try:
            while True:
                messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(5)
        return messages


@pytest.fixture
def systemd() -> Iterator[NotifySocket]:
    # why not tmp_path: a socket path must fit in 108 bytes
    folder = tempfile.mkdtemp(prefix="nfy", dir="/tmp")
    listener = NotifySocket(os.path.join(folder, "notify"))
    yield listener
    listener.sock.close()
    os.unlink(listener.address)
    os.rmdir(folder)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[SimpleNamespace]:
    store = Store.open(tmp_path / "data")
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="worker-0", daemon=True)
    worker.start()
    yield SimpleNamespace(store=store, threads=[worker], stop_event=stop)
    stop.set()
    store.close()


def env(systemd: NotifySocket, watchdog_usec: int | None = 300_000) -> dict[str, str]:
    environ = {"NOTIFY_SOCKET": systemd.address}
    if watchdog_usec is not None:
        environ.update(WATCHDOG_USEC=str(watchdog_usec), WATCHDOG_PID=str(os.getpid()))
    return environ


def test_notify_sends_one_datagram_to_a_path_or_abstract_socket(systemd: NotifySocket) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": systemd.address})
    assert systemd.receive() == "READY=1"
    abstract = NotifySocket(f"@appliance-test-{os.getpid()}")
    try:
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": abstract.address})
        assert abstract.receive() == "WATCHDOG=1"
    finally:
        abstract.sock.close()


def test_outside_systemd_nothing_happens(service: SimpleNamespace) -> None:
    assert notify("READY=1", {}) is False
    assert start_watchdog(service, {}) is None
    gone = {"NOTIFY_SOCKET": "/nonexistent/notify"}
    assert notify("READY=1", gone) is False  # logged, never raised


def test_interval_is_a_third_of_watchdog_usec_and_only_for_this_process() -> None:
    pid = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": pid}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_ready_then_pings_while_healthy_then_stopping(
    systemd: NotifySocket, service: SimpleNamespace
) -> None:
    watchdog = start_watchdog(service, env(systemd))
    assert watchdog is not None and watchdog.interval == pytest.approx(0.1)
    assert systemd.receive() == "READY=1\nSTATUS=serving"
    assert [systemd.receive() for _ in range(3)] == ["WATCHDOG=1"] * 3
    service.stop_event.set()
    assert watchdog.thread is not None
    watchdog.thread.join(5)
    assert systemd.pending()[-1] == "STOPPING=1"


def test_without_watchdog_usec_only_ready_is_sent(
    systemd: NotifySocket, service: SimpleNamespace
) -> None:
    assert start_watchdog(service, env(systemd, watchdog_usec=None)) is None
    assert systemd.receive() == "READY=1\nSTATUS=serving"
    time.sleep(0.2)
    assert systemd.pending() == []


def test_a_dead_worker_thread_withholds_the_ping(
    systemd: NotifySocket, service: SimpleNamespace
) -> None:
    crashed = threading.Thread(target=lambda: None, name="worker-1")
    crashed.start()
    crashed.join()
    service.threads.append(crashed)
    watchdog = Watchdog(lambda: service_problems(service), 0.1, service.stop_event, env(systemd))
    assert watchdog.beat() is False
    assert systemd.pending() == ["STATUS=unhealthy: thread worker-1 has stopped"]
    service.threads.remove(crashed)
    assert watchdog.beat() is True  # recovered: status cleared, ping resumes
    assert systemd.pending() == ["STATUS=serving", "WATCHDOG=1"]


def test_a_database_that_does_not_answer_withholds_the_ping(
    systemd: NotifySocket, service: SimpleNamespace, tmp_path: Path
) -> None:
    assert service_problems(service) == []
    service.store.close()
    (tmp_path / "data" / "appliance.db").unlink()
    (tmp_path / "data" / "appliance.db").mkdir()  # the file is gone, something else is there
    problems = service_problems(service)
    assert len(problems) == 1 and problems[0].startswith("database does not answer")

    def broken_check() -> list[str]:
        raise sqlite3.OperationalError("disk I/O error")

    watchdog = Watchdog(broken_check, 0.1, service.stop_event, env(systemd))
    assert watchdog.beat() is False
    assert systemd.pending() == ["STATUS=unhealthy: health check failed: disk I/O error"]
