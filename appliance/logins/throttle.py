"""Failed logins: counted atomically, throttled per client with backoff, and locked in a
way a stranger cannot turn against the account's owner. Shared by the box and the hub.

Why it is built this way:

- **Counted before the secret is checked.** ``reserve`` counts the attempt as a failure
  in one write transaction *before* the slow hash runs, and refuses it (raising
  ``LoginThrottledError``) when any of its counters is locked; a correct PIN then takes
  its count back (``succeeded``). Forty parallel guesses are forty serialised increments
  (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the upsert's row lock), so exactly ``free``
  of them are checked and the rest are refused without a hash. Reading the counter,
  hashing, then writing it back let 16 of 40 through a limit of 5.
- **Per client, not per account.** The main counter is keyed by (account, client
  address): a stranger guessing the admin's PIN from a laptop on the clinic network locks
  that laptop out of that account, not the admin at the kiosk. After ``free`` failures
  each further failure locks the key again for twice as long (5 min, 10, 20 ... 1 h). A
  second counter per client across all accounts stops one address trying five PINs on
  every user name; a success from that client clears both.
- **The account as a whole** is locked only by guessing from many addresses (50
  failures), and that lock never applies to the machine itself: the box's kiosk
  (loopback) or, for the hub, the server (an SSH tunnel). Local attempts do not count
  towards it either. So the owner always has a way in, and a lone stranger cannot reach
  it at all.
- **The client address is the peer's.** The hub believes X-Forwarded-For only from its
  ``hub_trusted_proxies``; were it believed from anyone, a guesser would pick a new
  address per try, and were the proxy's own address used, everyone behind the proxy
  would be one client and anyone could lock the admin out again. The box believes no
  forwarding header: it is reached directly (a proxy on the box itself would make every
  client look like the kiosk).

Counters untouched for a day start again. Works on any connection whose
``execute(sql, params)`` yields rows by column name (sqlite3, ``appliance.hub.db``);
call inside one write transaction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from appliance.errors import LoginThrottledError

FORGET_AFTER_SECONDS = 24 * 3600
LOCAL_ADDRESSES = ("127.0.0.1", "::1")  # the kiosk on the box; an SSH tunnel to the hub


@dataclass(frozen=True)
class Rule:
    name: str
    free: int  # failures before the first lock
    first_lock_seconds: float
    longest_lock_seconds: float

    def lock_seconds(self, failures: int) -> float:
        doublings = min(failures - self.free, 16)
        return min(self.longest_lock_seconds, self.first_lock_seconds * 2**doublings)


ACCOUNT_CLIENT = Rule("account+client", 5, 300, 3600)
CLIENT = Rule("client", 20, 300, 3600)
ACCOUNT = Rule("account", 50, 300, 3600)


def is_local(client: str) -> bool:
    """The machine itself: the kiosk browser on the box, or a tunnel on the hub."""
    try:
        return ipaddress.ip_address(client).compressed in LOCAL_ADDRESSES
    except ValueError:
        return False


def keys(account: str, client: str) -> list[tuple[str, Rule]]:
    """The counters one attempt by ``client`` at ``account`` is counted against, in a
    fixed order (PostgreSQL takes the row locks in this order: no deadlock)."""
    account = account.strip().casefold()[:100]
    found = [(f"ac:{account}\n{client}", ACCOUNT_CLIENT), (f"c:{client}", CLIENT)]
    if not is_local(client):
        found.append((f"a:{account}", ACCOUNT))
    return sorted(found, key=lambda pair: pair[0])


COUNT = (
    "INSERT INTO login_throttle (key, failures, blocked_until, updated_at) VALUES (?, 1, NULL, ?)"
    " ON CONFLICT (key) DO UPDATE SET failures = login_throttle.failures + 1,"
    " updated_at = excluded.updated_at"
    " WHERE login_throttle.blocked_until IS NULL"
    " OR login_throttle.blocked_until <= excluded.updated_at"
    " RETURNING failures"
)


def reserve(conn: Any, counters: list[tuple[str, Rule]], now: float) -> list[tuple[str, float]]:
    """Count one attempt against every counter, before the secret is checked.

    Raises ``LoginThrottledError`` (the caller's transaction then rolls back, so nothing
    is counted) when a counter is locked. Returns the locks this attempt started, as
    (key, seconds), for the caller to record."""
    conn.execute(
        "DELETE FROM login_throttle WHERE updated_at < ?"
        " AND (blocked_until IS NULL OR blocked_until < ?)",
        (now - FORGET_AFTER_SECONDS, now),
    )
    wait = 0.0
    counted = []
    for key, rule in counters:
        rows = list(conn.execute(COUNT, (key, now)))
        if rows:
            counted.append((key, rule, int(rows[0]["failures"])))
            continue
        locked = list(
            conn.execute("SELECT blocked_until FROM login_throttle WHERE key = ?", (key,))
        )
        wait = max(wait, float(locked[0]["blocked_until"]) - now)
    if wait > 0:
        raise LoginThrottledError(wait)
    started = []
    for key, rule, failures in counted:
        if failures >= rule.free:
            seconds = rule.lock_seconds(failures)
            conn.execute(
                "UPDATE login_throttle SET blocked_until = ? WHERE key = ?", (now + seconds, key)
            )
            started.append((key, seconds))
    return started


def succeeded(conn: Any, counters: list[tuple[str, Rule]]) -> None:
    """The secret was right: this client starts afresh; the account-wide counter only
    takes back this attempt (other addresses' failures still count)."""
    for key, rule in counters:
        if rule is ACCOUNT:
            conn.execute(
                "UPDATE login_throttle SET failures = failures - 1, blocked_until ="
                " CASE WHEN failures - 1 < ? THEN NULL ELSE blocked_until END"
                " WHERE key = ? AND failures > 0",
                (rule.free, key),
            )
        else:
            conn.execute("DELETE FROM login_throttle WHERE key = ?", (key,))
