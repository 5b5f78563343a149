"""The hub sender's own bookkeeping, between passes and across restarts.

``sync_state`` holds a few named values (last attempt, last success, last error,
consecutive failures, next attempt); ``sync_images`` the originals the hub holds
completely (only when ``sync_images`` is on). What is to be delivered is the outbox
(``appliance.store.outbox``); this is only how the sending went.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.store import outbox
from appliance.store.db import Store, utc_now


def read(conn: sqlite3.Connection) -> dict[str, str]:
    return {row["key"]: row["value"] for row in conn.execute("SELECT key, value FROM sync_state")}


def write(store: Store, **values: Any) -> None:
    """Set some values (None clears one), in one transaction."""
    with store.write() as conn:
        conn.executemany(
            "INSERT INTO sync_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, None if v is None else str(v)) for k, v in values.items()],
        )


def originals_to_send(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Stored originals whose result the hub has acknowledged and whose file it lacks."""
    rows = conn.execute(
        "SELECT DISTINCT i.id, i.sha256, i.stored_path, i.size_bytes FROM images i"
        " JOIN outbox o ON o.image_id = i.id AND o.destination = ? AND o.kind = 'result'"
        " AND o.state = 'acked'"
        " WHERE i.stored_path != '' AND i.id NOT IN (SELECT image_id FROM sync_images)"
        " ORDER BY i.id",
        (outbox.HUB,),
    ).fetchall()
    return [dict(row) for row in rows]


def mark_original_sent(store: Store, image_id: int) -> None:
    with store.write() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO sync_images (image_id, acked_at) VALUES (?, ?)",
            (image_id, utc_now()),
        )


def originals_sent(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM sync_images").fetchone()[0])
