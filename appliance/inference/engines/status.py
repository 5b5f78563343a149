"""``engines/status.json``: how the engine refresh is going, for the System page,
``/healthz`` and ``appliance doctor``. One writer (the refresher thread), any readers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.store.files import atomic_write_bytes

STATUS_FILE = "status.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def status_path(data_dir: Path) -> Path:
    return Path(data_dir) / "engines" / STATUS_FILE


def read_status(data_dir: Path) -> dict[str, Any]:
    """The last written engine status; ``{"state": "unknown"}`` when there is none."""
    try:
        status = json.loads(status_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "unknown", "bundles": {}}
    return status if isinstance(status, dict) else {"state": "unknown", "bundles": {}}


def write_status(data_dir: Path, status: Mapping[str, Any]) -> None:
    """Atomic replace: the System page never reads half a file, a power cut never
    leaves one."""
    text = json.dumps(status, indent=1, sort_keys=True)
    atomic_write_bytes(status_path(data_dir), text.encode("utf-8"))
