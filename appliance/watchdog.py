"""Tell systemd the service is ready, and keep its watchdog fed while the box is healthy.

    start_watchdog(service)   # after Service.start(): READY=1, then WATCHDOG=1 pings

The protocol is sd_notify(3): one datagram per message on the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). It is a dozen
lines, so no libsystemd binding is needed. Outside systemd (tests, ``scripts/serve``)
there is no ``NOTIFY_SOCKET`` and everything here is a no-op.

A watchdog that pings from a timer proves only that the timer runs. Here each ping
is earned: the database must answer a query and every thread the service started
(web server, workers) must still be alive. When a check fails the ping is withheld
and ``STATUS=`` says why, so ``systemctl status appliance`` shows the reason and
systemd restarts the service once ``WatchdogSec`` passes (``Restart=always``).
Pings go out every third of ``WATCHDOG_USEC``: one failed check is forgiven, two
in a row are not.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

PINGS_PER_INTERVAL = 3


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify message (e.g. ``"READY=1"``); False when not under systemd."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError as exc:  # systemd gone or socket unreachable: never crash the service
        log.warning("sd_notify %s failed: %s", message.split("=", 1)[0], exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings, or None when systemd does not expect any from this process."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec or (pid and pid != str(os.getpid())):
        return None  # no watchdog, or it watches another process (a parent, say)
    try:
        timeout = int(usec) / 1_000_000
    except ValueError:
        log.warning("WATCHDOG_USEC %r is not a number; watchdog not fed", usec)
        return None
    return timeout / PINGS_PER_INTERVAL if timeout > 0 else None


def service_problems(service: Any) -> list[str]:
    """What is wrong with a running ``Service`` (empty: healthy enough to ping)."""
    problems = [
        f"thread {thread.name} has stopped"
        for thread in getattr(service, "threads", [])
        if not thread.is_alive()
    ]
    try:
        service.store.conn().execute("SELECT count(*) FROM sqlite_master").fetchone()
    except Exception as exc:  # noqa: BLE001 — any failure means "does not answer"
        problems.append(f"database does not answer: {exc}")
    return problems


class Watchdog:
    """Pings systemd while ``check()`` reports no problem; stops when ``stop_event`` is set."""

    def __init__(
        self,
        check: Callable[[], list[str]],
        interval: float,
        stop_event: threading.Event,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.check = check
        self.interval = interval
        self.stop_event = stop_event
        self.environ = os.environ if environ is None else environ
        self.pings = 0
        self.withheld = 0
        self.thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        self.thread = threading.Thread(target=self.run, name="watchdog", daemon=True)
        self.thread.start()
        return self

    def beat(self) -> bool:
        """One check; ping when healthy. Returns whether a ping was sent."""
        try:
            problems = self.check()
        except Exception as exc:  # noqa: BLE001 — a broken check is a problem, not a crash
            problems = [f"health check failed: {exc}"]
        if problems:
            self.withheld += 1
            summary = "; ".join(problems)
            log.error("watchdog ping withheld: %s", summary)
            notify(f"STATUS=unhealthy: {summary}", self.environ)
            return False
        if self.withheld:  # recovered: clear the complaint shown by systemctl status
            notify("STATUS=serving", self.environ)
            self.withheld = 0
        sent = notify("WATCHDOG=1", self.environ)
        self.pings += int(sent)
        return sent

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.beat()
        notify("STOPPING=1", self.environ)


def start_watchdog(service: Any, environ: Mapping[str, str] | None = None) -> Watchdog | None:
    """Call once ``service.start()`` has returned: READY=1, then the watchdog thread.

    Returns the running ``Watchdog``, or None when systemd asked for no watchdog.
    """
    environ = os.environ if environ is None else environ
    if not notify("READY=1\nSTATUS=serving", environ):
        return None
    interval = watchdog_interval(environ)
    if interval is None:
        return None
    log.info("systemd watchdog: checking health every %.1fs", interval)
    watchdog = Watchdog(lambda: service_problems(service), interval, service.stop_event, environ)
    return watchdog.start()
