"""The clinic's day: where the clinic is, today and any day run from its own midnight.

Images are stored with UTC timestamps; the worklist's "today", a day's register and a
patient's retina photos "that day" are the clinic's day, in its configured time zone.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def clinic_zone(timezone_name: str) -> ZoneInfo:
    """The clinic's time zone; UTC where the name is not one this box knows."""
    try:
        return ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def local_midnight_utc(timezone_name: str) -> str:
    """Start of today where the clinic is, as the UTC timestamp text images are stored with."""
    return day_bounds_utc(local_today(timezone_name), timezone_name)[0]


def local_today(timezone_name: str) -> date:
    """Today's date where the clinic is."""
    return datetime.now(clinic_zone(timezone_name)).date()


def day_bounds_utc(day: date, timezone_name: str) -> tuple[str, str]:
    """The clinic's day ``day``, from its midnight to the next, as UTC timestamp text
    (a day of 23 or 25 hours where clocks change)."""
    zone = clinic_zone(timezone_name)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return _utc_text(start), _utc_text(end)


def configured_timezone(conn: sqlite3.Connection) -> str:
    """The time zone configured for the data directory this database lives in (its
    config.toml and the environment, as the service and the page read them), for code
    that has a connection and no configuration: what the box sends the hub."""
    row = conn.execute("PRAGMA database_list").fetchone()
    if row is None or not row[2]:
        return "UTC"
    data_dir = Path(row[2]).parent
    config_file = data_dir / "config.toml"
    try:
        stamp = config_file.stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _timezone_of(str(data_dir), stamp, os.environ.get("APPLIANCE_TIMEZONE", ""))


@lru_cache(maxsize=8)
def _timezone_of(data_dir: str, stamp: int, environ_zone: str) -> str:
    # stamp and environ_zone only key the cache: a saved setting or the environment
    # changing gives a new entry (load_config reads both itself).
    from appliance.config import load_config
    from appliance.errors import ConfigError

    try:
        return load_config(data_dir).timezone
    except ConfigError:  # the service would not start on it; the hub still gets a day
        return "UTC"
