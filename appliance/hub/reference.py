"""What each model's validation looked like, for the programme pages' reference band
and drift chart: the ``reference`` block of the signed manifest of every bundle the hub
holds (``distribution.publish`` checked it): the score histogram over ``bins`` equal
bins of the calibrated probability, the validation positivity and its ``n``.

The boxes' monitoring summaries carry their PSI against this reference but not the
reference itself, so a model version the hub holds no bundle of has no band or line:
the page says so. A stored bundle never changes (its file is named by its sha256), so
its reference is read once per process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.hub.db import Connection
from appliance.wire.model_signature import signed_parts

_READ: dict[str, dict[str, Any] | None] = {}  # sha256 -> reference (None: none in it)


def _checked(reference: Any) -> dict[str, Any] | None:
    """The reference's numbers, or None where the manifest has none that make sense."""
    if not isinstance(reference, dict):
        return None
    shares = reference.get("score_histogram")
    positivity = reference.get("positivity")
    if not (isinstance(shares, list) and shares and len(shares) <= 100):
        return None
    if not all(isinstance(s, (int, float)) and 0 <= s <= 1 for s in shares):
        return None
    if not (isinstance(positivity, (int, float)) and 0 <= positivity <= 1):
        positivity = None
    n = reference.get("n")
    return {
        "score_histogram": [float(s) for s in shares],
        "positivity": positivity,
        "n": int(n) if isinstance(n, int) else None,
    }


def _read(sha256: str, path: str) -> dict[str, Any] | None:
    if sha256 not in _READ:
        try:
            manifest = json.loads(signed_parts(Path(path))[0])
            _READ[sha256] = _checked(manifest.get("reference"))
        except (OSError, ValueError, TypeError, AttributeError):  # gone or unreadable
            return None
    return _READ[sha256]


def references(conn: Connection) -> dict[tuple[str, str], dict[str, Any]]:
    """(model name, version) -> its validation reference, for the bundles held here."""
    out = {}
    for row in conn.execute("SELECT sha256, name, version, stored_path FROM model_bundles"):
        found = _read(row["sha256"], row["stored_path"])
        if found is not None:
            out[(row["name"], row["version"])] = found
    return out
