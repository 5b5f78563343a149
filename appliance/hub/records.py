"""What the hub stores: devices and enrolment, entries (idempotent upserts), mule imports.

Every function takes a ``Connection`` from ``appliance.hub.db`` and works the same on
SQLite and PostgreSQL. Entries are keyed by (device, entry id); a revision is stored
only when it is higher than the one held, so resending anything is a no-op.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from appliance.errors import EnrolmentError, MuleBundleError
from appliance.hub import schemas
from appliance.hub.db import Connection, HubDatabase
from appliance.logins import sessions
from appliance.wire.bundle import read_bundle, verify_bundle
from appliance.wire.receipt import token_hash, write_receipt

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read over the phone
MAX_REVISION = 2**63 - 1  # a BIGINT / SQLite INTEGER; more overflowed into a 500
ENTRY_KINDS = ("result", "review", "outcome", "monitor")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def sha256_text(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalise_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


# -- devices -----------------------------------------------------------------------
def create_enrolment_code(conn: Connection, site: str, valid_days: int = 7) -> str:
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    expires = datetime.now(timezone.utc) + timedelta(days=valid_days)
    with conn.transaction():
        conn.execute(
            "INSERT INTO enrol_codes (code_hash, site, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (sha256_text(code), site, now(), expires.isoformat(timespec="seconds")),
        )
    return "-".join(code[i : i + 4] for i in range(0, 12, 4))


def enrol_device(conn: Connection, code: str, name: str, public_key: str) -> dict[str, str]:
    """Use a one-time code: a new device with its token (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    device_id = "dev-" + uuid.uuid4().hex[:16]
    with conn.transaction():
        row = conn.one(
            "SELECT * FROM enrol_codes WHERE code_hash = ?", (sha256_text(normalise_code(code)),)
        )
        if row is None:
            raise EnrolmentError("unknown enrolment code")
        if row["used_at"]:
            raise EnrolmentError("this enrolment code was already used")
        if row["expires_at"] < datetime.now(timezone.utc).isoformat(timespec="seconds"):
            raise EnrolmentError("this enrolment code has expired; ask for a new one")
        conn.execute(
            "UPDATE enrol_codes SET used_at = ?, device_id = ? WHERE code_hash = ?",
            (now(), device_id, row["code_hash"]),
        )
        conn.execute(
            "INSERT INTO devices (id, site, name, token_hash, public_key, enrolled_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (device_id, row["site"], name[:100], token_hash(token), public_key, now()),
        )
    return {"device_id": device_id, "token": token, "site": row["site"]}


def device_for_token(conn: Connection, token: str) -> dict[str, Any] | None:
    return conn.one("SELECT * FROM devices WHERE token_hash = ?", (token_hash(token),))


def revoke_device(conn: Connection, device_id: str) -> bool:
    with conn.transaction():
        found = conn.one("SELECT id FROM devices WHERE id = ?", (device_id,))
        if found:
            conn.execute(
                "UPDATE devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now(), device_id),
            )
    return found is not None


def list_devices(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT id, site, name, enrolled_at, revoked_at, last_seen_at FROM devices"
        " ORDER BY site, enrolled_at"
    )


def touch_device(conn: Connection, device_id: str, software: str) -> None:
    conn.execute(
        "UPDATE devices SET last_seen_at = ?, software = ? WHERE id = ?",
        (now(), software[:100], device_id),
    )


# -- entries -----------------------------------------------------------------------
def _week(created_at: str | None) -> str | None:
    try:
        year, week, _ = datetime.fromisoformat(str(created_at)).isocalendar()
    except ValueError:
        return None
    return f"{year}-W{week:02d}"


UPSERT = (
    "INSERT INTO entries (device_id, entry_id, revision, kind, image_sha256, route, triage,"
    " model_name, model_version, week, payload, received_at, patient_id, result_day)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, entry_id) DO UPDATE SET revision = excluded.revision,"
    " kind = excluded.kind, image_sha256 = excluded.image_sha256, route = excluded.route,"
    " triage = excluded.triage, model_name = excluded.model_name,"
    " model_version = excluded.model_version, week = excluded.week,"
    " payload = excluded.payload, received_at = excluded.received_at,"
    " patient_id = excluded.patient_id, result_day = excluded.result_day"
    " WHERE entries.revision < excluded.revision"
)


def _row(device_id: str, entry: dict[str, Any], received: str) -> tuple[Any, ...]:
    data = entry["data"]
    model = data.get("model") or {}
    image = data.get("image") or {}
    if not isinstance(image, dict):
        image = {}
    created = data.get("created_at")
    return (
        device_id,
        entry["id"],
        entry["rev"],
        entry["kind"],
        image.get("sha256"),
        data.get("route"),
        data.get("triage"),
        model.get("name"),
        model.get("version"),
        _week(data.get("created_at")),
        json.dumps(data, separators=(",", ":")),
        received,
        # searched by FHIR (fhir/search.py), as its ``matches`` reads the payload
        str(image["patient_id"]) if image.get("patient_id") else None,
        created[:10] if isinstance(created, str) else None,
    )


def validate_entries(body: Any) -> list[dict[str, Any]]:
    """The batch's entries, or ValueError saying what is wrong (answered with 400).

    Only the envelope (id, rev, kind, data as an object, an optional schema version
    ``v``): a batch that does not have it is not from a box that speaks this protocol.
    What each entry's data says is checked by ``admit_entries``, entry by entry."""
    if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
        raise ValueError('expected {"entries": [...]}')
    entries = body["entries"]
    if len(entries) > 5000:
        raise ValueError("at most 5000 entries per request")
    for index, entry in enumerate(entries):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("id"), str)
            and 0 < len(entry["id"]) <= 200
            and type(entry.get("rev")) is int
            and 1 <= entry["rev"] <= MAX_REVISION
            and entry.get("kind") in ENTRY_KINDS
            and isinstance(entry.get("data"), dict)
            and type(entry.get("v", 1)) is int
        )
        if not ok:
            raise ValueError(
                f"entry {index}: needs id (text), rev (integer >= 1), kind (one of "
                f"{', '.join(ENTRY_KINDS)}) and data (object)"
            )
    return entries


def admit_entries(
    entries: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the entries whose data fits their kind's schema, a refusal for each other one).

    A refusal is what the box is told: ``{"id", "rev", "kind", "field", "message"}``,
    the field a dotted path into the entry's data (``threshold``, ``calibration.cxr``)."""
    taken, refused = [], []
    for entry in entries:
        problem = schemas.check_entry(entry["kind"], entry["data"], entry.get("v", 1))
        if problem is None:
            taken.append(entry)
            continue
        refused.append(
            {
                "id": entry["id"],
                "rev": entry["rev"],
                "kind": entry["kind"],
                "field": problem.field,
                "message": problem.message,
            }
        )
    return taken, refused


def store_entries(
    conn: Connection, device_id: str, entries: list[dict[str, Any]]
) -> list[tuple[str, int]]:
    """Upsert the batch in one transaction (call inside ``conn.transaction()``); the
    tallies follow in the same transaction (``tallies.kept``)."""
    from appliance.hub import tallies

    received = now()
    rows = [_row(device_id, e, received) for e in entries]
    with tallies.kept(conn, device_id, rows):
        conn.executemany(UPSERT, rows)
    return [(e["id"], e["rev"]) for e in entries]


def known_entries(
    conn: Connection, device_id: str, keys: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Which of ``keys`` the hub already holds (at that revision or a later one)."""
    held: dict[str, int] = {}
    ids = [k[0] for k in keys]
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ", ".join("?" for _ in part)
        for row in conn.execute(
            f"SELECT entry_id, revision FROM entries WHERE device_id = ? AND entry_id IN ({marks})",
            (device_id, *part),
        ):
            held[row["entry_id"]] = row["revision"]
    return [(e, r) for e, r in keys if held.get(e, 0) >= r]


# -- data-mule bundles ------------------------------------------------------------
def import_bundle(db: HubDatabase, path: Path, receipt_to: Path | None = None) -> dict[str, Any]:
    """Verify and store a data-mule bundle; importing the same bundle again is a no-op.

    A bundle is known by its box and its id together: another box cannot claim an id
    and make the hub skip the real bundle. With ``receipt_to``, also write the receipt
    a never-connected box reads to learn what the hub now holds — the entries the hub's
    own table holds at that revision or later, never merely what the bundle listed
    (written for a replay too: the hub holds it all the same)."""
    report = _import_bundle(db, path)
    if receipt_to is not None:
        report["receipt"] = str(
            write_receipt(
                receipt_to,
                device_id=report["device_id"],
                bundle_id=report["bundle_id"],
                entries=report.pop("keys"),
                token_hash_hex=report.pop("token_hash"),
            )
        )
    else:
        report.pop("keys")
        report.pop("token_hash")
    return report


def _import_bundle(db: HubDatabase, path: Path) -> dict[str, Any]:
    device_id, payload, signature = read_bundle(path)
    conn = db.connect()
    try:
        device = conn.one("SELECT * FROM devices WHERE id = ?", (device_id,))
        if device is None:
            raise MuleBundleError(f"bundle from unknown device {device_id}: refused")
        if device["revoked_at"]:
            raise MuleBundleError(f"bundle from revoked device {device_id}: refused")
        body = verify_bundle(device_id, payload, signature, device["public_key"])
        try:
            entries, refused = admit_entries(validate_entries(body))
        except ValueError as exc:
            raise MuleBundleError(f"signed bundle with malformed entries: {exc}") from exc
        report = {
            "bundle_id": body["bundle_id"],
            "entries": len(entries),
            "refused": refused,  # checked as at the device API: the rest is stored
            "device_id": device_id,
            "token_hash": device["token_hash"],
        }
        keys = [(e["id"], e["rev"]) for e in entries]
        with conn.transaction():
            replay = conn.one(
                "SELECT bundle_id FROM bundle_imports WHERE device_id = ? AND bundle_id = ?",
                (device_id, body["bundle_id"]),
            )
            if not replay:
                store_entries(conn, device_id, entries)
                conn.execute(
                    "INSERT INTO bundle_imports (device_id, bundle_id, entries, imported_at)"
                    " VALUES (?, ?, ?, ?)",
                    (device_id, body["bundle_id"], len(entries), now()),
                )
            held = known_entries(conn, device_id, keys)
        return {**report, "replay": bool(replay), "keys": held}
    finally:
        conn.close()


# -- hub admins --------------------------------------------------------------------
def set_admin(conn: Connection, username: str, password: str) -> None:
    if len(password) < 10:
        raise EnrolmentError("a hub admin password needs at least 10 characters")
    with conn.transaction():
        conn.execute(
            "INSERT INTO admins (username, password_hash, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash",
            (username, generate_password_hash(password), now()),
        )
        sessions.end_all(conn, username)  # a new password logs the old sessions out


@functools.cache
def _no_such_admin_hash() -> str:
    return generate_password_hash("no such admin")


def check_admin(conn: Connection, username: str, password: str) -> bool:
    row = conn.one("SELECT password_hash FROM admins WHERE username = ?", (username,))
    # The same hashing time whether or not the name exists: no user-name oracle.
    stored = row["password_hash"] if row else _no_such_admin_hash()
    return check_password_hash(stored, password) and row is not None
