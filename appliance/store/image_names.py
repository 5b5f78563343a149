"""The other file names an image arrived under (issue 24, defect 13).

The same image sent again is a duplicate: the first copy is kept with its own name
(``images.original_name``). A lab register may name the later copy, so its name is kept
here, beside the image, and the outcomes import finds the image by either name.
"""

from __future__ import annotations

import sqlite3

from appliance.store.db import utc_now

MAX_NAME = 255  # a file name longer than this is no lab register's


def is_other_name(conn: sqlite3.Connection, image_id: int, name: str) -> bool:
    """``name`` is neither the image's own file name nor one already kept."""
    name = name[:MAX_NAME]
    if not name:
        return False
    return (
        conn.execute(
            "SELECT 1 FROM images WHERE id = ? AND original_name = ?"
            " UNION ALL SELECT 1 FROM image_other_names WHERE image_id = ? AND name = ?",
            (image_id, name, image_id, name),
        ).fetchone()
        is None
    )


def remember_other_name(conn: sqlite3.Connection, image_id: int, name: str) -> None:
    """Keep ``name`` as another name of ``image_id`` (inside the caller's transaction)."""
    if is_other_name(conn, image_id, name):
        conn.execute(
            "INSERT OR IGNORE INTO image_other_names (image_id, name, first_seen_at)"
            " VALUES (?, ?, ?)",
            (image_id, name[:MAX_NAME], utc_now()),
        )
