"""Staff accounts: a username, a PIN (hashed), a role and a language."""

from __future__ import annotations

import functools
import sqlite3
import time
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from appliance.errors import ApplianceError
from appliance.logins import sessions, throttle
from appliance.store.db import Store, audit, utc_now

ROLES = ("operator", "clinician", "admin")
LANGUAGES = ("en", "fr", "pt")


class UserError(ApplianceError):
    """A user cannot be created or changed as asked."""


def valid_pin(pin: str) -> bool:
    return pin.isdigit() and 4 <= len(pin) <= 12


def count_users(store: Store) -> int:
    return store.conn().execute("SELECT COUNT(*) FROM users").fetchone()[0]


def create_user(
    store: Store, username: str, pin: str, role: str, language: str = "en", actor: str = "setup"
) -> int:
    username = username.strip()
    if not username or len(username) > 40:
        raise UserError("A user name of 1 to 40 characters is needed.")
    if not valid_pin(pin):
        raise UserError("The PIN must be 4 to 12 digits.")
    if role not in ROLES or language not in LANGUAGES:
        raise UserError("Unknown role or language.")
    try:
        with store.write() as conn:
            cur = conn.execute(
                "INSERT INTO users (username, pin_hash, role, language, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (username, generate_password_hash(pin), role, language, utc_now()),
            )
            audit(conn, actor, "user.created", f"user:{cur.lastrowid}", f"{username} ({role})")
            return int(cur.lastrowid)
    except sqlite3.IntegrityError:
        raise UserError("That user name is taken.") from None


def get_user(store: Store, user_id: int) -> dict[str, Any] | None:
    row = store.conn().execute("SELECT * FROM users WHERE id=?", (user_id,)).fetchone()
    return dict(row) if row else None


def list_users(store: Store) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in store.conn().execute(
            "SELECT id, username, role, language, active, last_login_at FROM users"
            " ORDER BY username"
        )
    ]


@functools.cache
def _no_such_user_hash() -> str:
    return generate_password_hash("no such user")


def authenticate(
    store: Store, username: str, pin: str, client: str = ""
) -> tuple[dict | None, str | None]:
    """(user, None) on success, else (None, "wrong").

    Raises ``LoginThrottledError`` without checking the PIN when ``client`` may not try
    now: failed logins are counted before the PIN is checked, per client address (see
    ``appliance.logins.throttle`` for why)."""
    counters = throttle.keys(username, client)
    with store.write() as conn:
        for key, seconds in throttle.reserve(conn, counters, time.time()):
            audit(
                conn, username.strip()[:40], "login.locked", client, f"{key!r} for {seconds:.0f} s"
            )
    row = (
        store.conn()
        .execute("SELECT * FROM users WHERE username=? AND active=1", (username.strip(),))
        .fetchone()
    )
    if row is None:
        check_password_hash(_no_such_user_hash(), pin)  # the same time either way
        return None, "wrong"
    if not check_password_hash(row["pin_hash"], pin):
        with store.write() as conn:
            audit(conn, row["username"], "login.failed", f"user:{row['id']}", client)
        return None, "wrong"
    with store.write() as conn:
        throttle.succeeded(conn, counters)
        conn.execute("UPDATE users SET last_login_at=? WHERE id=?", (utc_now(), row["id"]))
        audit(conn, row["username"], "login", f"user:{row['id']}", client)
    return dict(row), None


def update_user(
    store: Store,
    user_id: int,
    actor: str,
    *,
    role: str | None = None,
    language: str | None = None,
    active: bool | None = None,
    pin: str | None = None,
) -> None:
    changes: dict[str, Any] = {}
    if role is not None:
        if role not in ROLES:
            raise UserError("Unknown role.")
        changes["role"] = role
    if language is not None:
        if language not in LANGUAGES:
            raise UserError("Unknown language.")
        changes["language"] = language
    if active is not None:
        changes["active"] = int(active)
    if pin:
        if not valid_pin(pin):
            raise UserError("The PIN must be 4 to 12 digits.")
        changes["pin_hash"] = generate_password_hash(pin)
    if not changes:
        return
    with store.write() as conn:
        if changes.get("role", "admin") != "admin" or changes.get("active", 1) == 0:
            admins = conn.execute(
                "SELECT COUNT(*) FROM users WHERE role='admin' AND active=1 AND id!=?", (user_id,)
            ).fetchone()[0]
            if admins == 0:
                raise UserError("The box needs at least one active admin.")
        sets = ", ".join(f"{k}=?" for k in changes)
        conn.execute(f"UPDATE users SET {sets} WHERE id=?", (*changes.values(), user_id))
        if "pin_hash" in changes or changes.get("active") == 0:
            sessions.end_all(conn, str(user_id))  # logged out everywhere, at once
        audit(
            conn,
            actor,
            "user.changed",
            f"user:{user_id}",
            ", ".join(k if k != "pin_hash" else "pin" for k in changes),
        )
