"""The box's own health beside the models': disk, temperature, how long images wait."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.monitoring.notices import Notice
from appliance.store.db import Store

THERMAL = Path("/sys/class/thermal")
DISK_WARN_FACTOR = 2  # warn at twice the reserve: time to act before images are refused


def temperatures(root: Path = THERMAL) -> dict[str, float]:
    """Each thermal zone the board reports, in °C (empty where it reports none)."""
    found: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            millidegrees = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip() or zone.name
        except (OSError, ValueError):
            continue
        found[kind] = round(millidegrees / 1000, 1)
    return found


def oldest_waiting_minutes(store: Store) -> float | None:
    # why: a job held for disk space is put back (updated) at every backoff, so its wait
    # counts from when it was queued; a job re-queued by staff counts from then
    row = store.conn().execute(
        "SELECT MIN(CASE WHEN disk_waits > 0 THEN created_at ELSE updated_at END)"
        " FROM jobs WHERE state = 'queued'"
    ).fetchone()
    if not row or not row[0]:
        return None
    since = datetime.now(timezone.utc) - datetime.fromisoformat(row[0])
    return round(since.total_seconds() / 60, 1)


def health(store: Store, config: Config, thermal_root: Path = THERMAL) -> tuple[dict, list]:
    usage = shutil.disk_usage(store.data_dir)
    free_mb = usage.free // 2**20
    temps = temperatures(thermal_root)
    waiting = oldest_waiting_minutes(store)
    facts: dict[str, Any] = {
        "disk_free_mb": free_mb,
        "disk_reserve_mb": config.min_free_mb,
        "temperature_c": max(temps.values()) if temps else None,
        "temperatures_c": temps,
        "oldest_waiting_minutes": waiting,
    }
    notices = []
    if free_mb < DISK_WARN_FACTOR * config.min_free_mb:
        notices.append(Notice("disk_low", {"free": free_mb, "reserve": config.min_free_mb}))
    if temps and max(temps.values()) >= config.monitor_max_temperature_c:
        notices.append(Notice("hot", {"temperature": f"{max(temps.values()):.0f}"}))
    if waiting is not None and waiting > config.monitor_max_queue_minutes:
        notices.append(Notice("queue_old", {"minutes": f"{waiting:.0f}"}))
    return facts, notices
