"""What the System page and ``appliance pacs status`` show of each PACS (reads the
store only: the page never imports highdicom or pynetdicom for it)."""

from __future__ import annotations

import time
from typing import Any

from appliance.config import Config
from appliance.store import mwl, pacs_outbox
from appliance.store.db import Store


def pacs_status(store: Store, config: Config) -> dict[str, Any]:
    """What the System page and ``appliance pacs status`` show."""
    conn = store.conn()
    now = time.time()
    shown = []
    for row in pacs_outbox.targets(conn, active_only=False):
        counts = pacs_outbox.counts(conn, row["address"], config.pacs_max_attempts)
        if not row["active"] and not counts["pending"] + counts["failed"]:
            continue  # no longer configured, nothing left for it
        next_at = row["next_attempt_at"]
        shown.append(
            {
                "address": row["address"],
                "objects": row["objects"].split(","),
                "configured": bool(row["active"]),
                **counts,
                "failures": row["failures"],
                "last_success_at": row["last_success_at"],
                "last_error": row["last_error"],
                "next_attempt_in_s": max(0, round(next_at - now)) if next_at else None,
            }
        )
    return {
        "worklist": {"address": config.mwl_address or None, **mwl.state(conn)},
        "destinations": shown,
        "pending": sum(d["pending"] for d in shown),
        "failed": sum(d["failed"] for d in shown),
        "sent": sum(d["sent"] for d in shown),
    }
