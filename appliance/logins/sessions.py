"""Server-side login sessions, shared by the box (``appliance.db``) and the hub.

The browser's cookie carries only a random session id; the database keeps its sha256,
whose session it is (``subject``: a user id on the box, an admin name on the hub) and
when it was last used. Logging out deletes the row, so a copied cookie stops working at
once; changing a PIN or password, or deactivating a user, deletes all of that account's
rows. The id itself is never stored: a copy of the database opens no session.

Works on any connection whose ``execute(sql, params)`` yields rows readable by column
name: ``sqlite3`` (the box) and ``appliance.hub.db.Connection`` (SQLite or PostgreSQL).
Writes run inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

# Writing seen_at on every request would cost an fsync each; once a minute is enough
# for an idle timeout counted in minutes.
TOUCH_EVERY_SECONDS = 60.0


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn: Any, subject: str, now: float) -> str:
    """A new session for ``subject``; returns the id to put in the cookie."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO sessions (id_hash, subject, created_at, seen_at) VALUES (?, ?, ?, ?)",
        (_hash(token), subject, now, now),
    )
    return token


def find(conn: Any, token: Any, idle_seconds: float, now: float) -> dict[str, Any] | None:
    """``{"subject", "seen_at"}`` of a live session, or None (unknown, ended or idle)."""
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        return None
    rows = list(
        conn.execute("SELECT subject, seen_at FROM sessions WHERE id_hash = ?", (_hash(token),))
    )
    if not rows or now - rows[0]["seen_at"] > idle_seconds:
        return None
    return {"subject": rows[0]["subject"], "seen_at": rows[0]["seen_at"]}


def needs_touch(found: dict[str, Any], now: float) -> bool:
    return now - found["seen_at"] >= TOUCH_EVERY_SECONDS


def touch(conn: Any, token: str, now: float) -> None:
    conn.execute("UPDATE sessions SET seen_at = ? WHERE id_hash = ?", (now, _hash(token)))


def end(conn: Any, token: Any) -> None:
    """Log out: this session id opens nothing any more."""
    if isinstance(token, str):
        conn.execute("DELETE FROM sessions WHERE id_hash = ?", (_hash(token),))


def end_all(conn: Any, subject: str) -> None:
    """Every session of ``subject`` (a PIN or password change, a deactivation)."""
    conn.execute("DELETE FROM sessions WHERE subject = ?", (subject,))


def purge(conn: Any, idle_seconds: float, now: float) -> None:
    """Forget sessions idle for longer than ``idle_seconds``."""
    conn.execute("DELETE FROM sessions WHERE seen_at < ?", (now - idle_seconds,))
