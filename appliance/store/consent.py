"""The patient's yes or no to the visit's images being used to improve the models.

Asked only where the site's ``training_consent`` setting is ``ask`` (``never``: no image
leaves; ``always``: a national approval covers every image). One answer covers the
study (the visit's images). Answers are append-only and audited: a changed mind is a
new row, and the latest answer counts. ``appliance training export`` reads
:func:`consented_studies`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.errors import ApplianceError
from appliance.store.db import Store, audit, utc_now

ANSWERS = ("yes", "no")
POLICIES = ("never", "ask", "always")  # the setting's values (config.py checks them)

# The latest answer per study (ids only grow: the largest id is the latest).
LATEST_SQL = """
    SELECT c.* FROM training_consent c
    WHERE c.id = (SELECT MAX(id) FROM training_consent l WHERE l.study_id = c.study_id)
"""


class ConsentError(ApplianceError):
    """A consent answer that cannot be recorded as given."""


def record_consent(store: Store, image_id: int, answer: str, user: dict[str, Any]) -> int:
    """Record the patient's answer for the study of ``image_id``; audited."""
    if answer not in ANSWERS:
        raise ConsentError("Choose yes or no.")
    with store.write() as conn:
        row = conn.execute("SELECT study_id FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ConsentError("There is no such image.")
        cur = conn.execute(
            "INSERT INTO training_consent (study_id, answer, answered_by, answered_at)"
            " VALUES (?, ?, ?, ?)",
            (row["study_id"], answer, user["username"], utc_now()),
        )
        audit(conn, user["username"], "training.consent", f"study:{row['study_id']}", answer)
        return int(cur.lastrowid)


def consent_of(store: Store, image_id: int) -> dict[str, Any] | None:
    """The latest answer for the study of ``image_id`` (answer, answered_by,
    answered_at), or None where nobody has asked yet."""
    row = (
        store.conn()
        .execute(
            "SELECT c.answer, c.answered_by, c.answered_at FROM training_consent c"
            " JOIN images i ON i.study_id = c.study_id WHERE i.id = ?"
            " ORDER BY c.id DESC LIMIT 1",
            (image_id,),
        )
        .fetchone()
    )
    return dict(row) if row else None


def consented_studies(conn: sqlite3.Connection) -> set[int]:
    """The studies whose latest answer is yes."""
    return {row["study_id"] for row in conn.execute(LATEST_SQL) if row["answer"] == "yes"}
