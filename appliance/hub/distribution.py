"""Model distribution on the hub: trusted programme keys, published bundle files,
staged rollouts, and what each box reports it runs.

``publish`` verifies a signed bundle file (appliance/wire/model_signature.py) with the
hub's own trusted keys, its paths (appliance/wire/bundle_paths.py, the boxes' own check)
and every file's sha256 against the signed manifest before it keeps a copy under
``HUB/models/<sha256>.tar``. A rollout names a bundle and a target:
``device:<id>``, ``site:<name>`` or ``all``, with an ``activate`` flag, so a programme
gives a new version to chosen boxes first and to everyone later. A box gets, per model
name, the newest published version rolled out to it (``for_device``). Same SQL on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import uuid
import zlib
from pathlib import Path
from typing import Any

from appliance.errors import ModelPackageError
from appliance.hub.db import Connection
from appliance.hub.records import now
from appliance.wire.bundle_paths import check_bundle, check_manifest_files, open_bundle_file
from appliance.wire.model_signature import (
    BUNDLE_PREFIX,
    key_id,
    read_public,
    signed_parts,
    verify_manifest,
)

MAX_BUNDLE_BYTES = 4 << 30
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,39}$")
MAX_REPORTED = 200  # model versions one box may report


def bundles_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


# -- keys --------------------------------------------------------------------------
def trust_key(conn: Connection, public: str) -> str:
    """Trust a programme's public key (base64 or PEM text) for publishing; its id."""
    text = read_public(public)
    kid = key_id(text)
    with conn.transaction():
        conn.execute(
            "INSERT INTO model_keys (key_id, public_key, trusted_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key_id) DO NOTHING",
            (kid, text, now()),
        )
    return kid


def trusted_keys(conn: Connection) -> dict[str, str]:
    return {r["key_id"]: r["public_key"] for r in conn.execute("SELECT * FROM model_keys")}


# -- publishing --------------------------------------------------------------------
def _check_files(file: Path, manifest: dict[str, Any]) -> None:
    """The file's members and the manifest's paths (the check pack and every box make:
    plain files under ``bundle/`` only, no absolute or ``..`` path, nothing unlisted),
    then every file's sha256 against the signed manifest: a file a box would refuse is
    never published (each box checks again when it installs)."""
    with open_bundle_file(file) as tar:
        members = check_bundle(tar, manifest)
        for rel, sha in check_manifest_files(manifest).items():
            member = members[BUNDLE_PREFIX + rel]
            digest = hashlib.sha256()
            source = tar.extractfile(member)
            while block := source.read(1 << 20):
                digest.update(block)
            if digest.hexdigest() != sha:
                raise ModelPackageError(f"{member.name}: sha256 differs from the signed manifest")


def _copy_hashed(file: Path, folder: Path) -> tuple[Path, str, int]:
    """Copy ``file`` into ``folder`` (fsynced); its path there, sha256 and size."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    digest, size = hashlib.sha256(), 0
    try:
        with open(file, "rb") as source, open(tmp, "wb") as out:
            while block := source.read(1 << 20):
                size += len(block)
                if size > MAX_BUNDLE_BYTES:
                    raise ModelPackageError("larger than any model bundle should be")
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        target = folder / f"{sha}.tar"
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target, sha, size


def publish(conn: Connection, data_dir: Path, file: Path) -> dict[str, Any]:
    """Verify a signed bundle file with the hub's trusted keys and keep it for boxes."""
    try:
        manifest_bytes, signature = signed_parts(Path(file))
        kid = verify_manifest(manifest_bytes, signature, trusted_keys(conn))
        manifest = json.loads(manifest_bytes)
        name, version = str(manifest["name"]), str(manifest["version"])
        if not NAME.match(name) or not VERSION.match(version):
            raise ModelPackageError(f"implausible model name or version: {name!r} {version!r}")
        _check_files(Path(file), manifest)
    except ModelPackageError as exc:
        raise ModelPackageError(f"{Path(file).name} not published: {exc}") from exc
    except (ValueError, KeyError, TypeError, tarfile.TarError, OSError, zlib.error) as exc:
        raise ModelPackageError(f"{Path(file).name}: unreadable bundle file ({exc})") from exc
    path, sha, size = _copy_hashed(Path(file), bundles_dir(data_dir))
    with conn.transaction():
        held = conn.one(
            "SELECT * FROM model_bundles WHERE name = ? AND version = ?", (name, version)
        )
        if held and held["sha256"] != sha:
            raise ModelPackageError(
                f"{name} {version} is already published with other content: give it a new version"
            )
        if not held:
            conn.execute(
                "INSERT INTO model_bundles (sha256, name, version, size_bytes, key_id,"
                " stored_path, published_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha, name, version, size, kid, str(path), now()),
            )
    return {
        "name": name,
        "version": version,
        "sha256": sha,
        "size": size,
        "key_id": kid,
        "already": bool(held),
    }


# -- rollouts ----------------------------------------------------------------------
def rollout(
    conn: Connection, name: str, version: str, targets: list[str], activate: bool
) -> dict[str, Any]:
    """Give ``name`` ``version`` to ``targets`` (``device:ID``, ``site:NAME``, ``all``);
    with ``activate`` the boxes make it active once installed, else it stays in shadow.
    Rolling out again to a target changes its activate flag."""
    with conn.transaction():
        bundle = conn.one(
            "SELECT * FROM model_bundles WHERE name = ? AND version = ?", (name, version)
        )
        if bundle is None:
            raise ModelPackageError(f"{name} {version} is not published: appliance hub publish")
        for target in targets:
            kind, _, value = target.partition(":")
            if kind == "device" and not conn.one("SELECT id FROM devices WHERE id = ?", (value,)):
                raise ModelPackageError(f"no device {value}")
            if kind not in ("device", "site", "all") or (kind != "all") != bool(value):
                raise ModelPackageError(f"not a rollout target: {target!r}")
            conn.execute(
                "INSERT INTO rollouts (sha256, target, activate, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256, target) DO UPDATE SET"
                " activate = excluded.activate, updated_at = excluded.updated_at",
                (bundle["sha256"], target, int(activate), now(), now()),
            )
    return {"name": name, "version": version, "targets": targets, "activate": activate}


def _rolled_out(conn: Connection, device: dict[str, Any]) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT b.name, b.version, b.sha256, b.size_bytes, b.published_at, r.activate"
        " FROM rollouts r JOIN model_bundles b ON b.sha256 = r.sha256"
        " WHERE r.target IN (?, ?, 'all') ORDER BY b.published_at, b.version",
        (f"device:{device['id']}", f"site:{device['site']}"),
    )


def for_device(conn: Connection, device: dict[str, Any]) -> list[dict[str, Any]]:
    """What this box should have: per model name, the newest published version rolled
    out to it (to it, its site or everyone), and whether to activate it."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in _rolled_out(conn, device):
        entry = chosen.get(row["name"])
        if entry is None or entry["sha256"] != row["sha256"]:
            entry = chosen[row["name"]] = {
                "name": row["name"],
                "version": row["version"],
                "sha256": row["sha256"],
                "size": int(row["size_bytes"]),
                "activate": False,
            }
        entry["activate"] = entry["activate"] or bool(row["activate"])
    return [chosen[n] for n in sorted(chosen)]


def bundle_for_device(conn: Connection, device: dict[str, Any], sha: str) -> dict | None:
    """The published file ``sha`` if it was rolled out to this box (else None: 404)."""
    if any(r["sha256"] == sha for r in _rolled_out(conn, device)):
        return conn.one("SELECT * FROM model_bundles WHERE sha256 = ?", (sha,))
    return None


# -- what boxes run ----------------------------------------------------------------
def validate_report(body: Any) -> list[dict[str, str]]:
    if not isinstance(body, dict) or not isinstance(body.get("models"), list):
        raise ValueError('expected {"models": [{"name", "version", "state"}, ...]}')
    if len(body["models"]) > MAX_REPORTED:
        raise ValueError(f"at most {MAX_REPORTED} model versions")
    rows = []
    for item in body["models"]:
        fields = [
            item.get(f) if isinstance(item, dict) else None for f in ("name", "version", "state")
        ]
        if not all(isinstance(v, str) and 0 < len(v) <= 100 for v in fields):
            raise ValueError("each model needs name, version and state as short text")
        rows.append(dict(zip(("name", "version", "state"), fields, strict=True)))
    return rows


def record_device_models(conn: Connection, device_id: str, models: list[dict[str, str]]) -> None:
    """Replace what the box runs with its latest report (call inside a transaction)."""
    conn.execute("DELETE FROM device_models WHERE device_id = ?", (device_id,))
    stamp = now()
    conn.executemany(
        "INSERT INTO device_models (device_id, name, version, state, reported_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, name, version) DO NOTHING",
        [(device_id, m["name"], m["version"], m["state"], stamp) for m in models],
    )


def device_models(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """device id -> the versions it reported (refused ones left out), active first."""
    order = {"active": 0, "shadow": 1, "installed": 2}
    found: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(
        "SELECT * FROM device_models WHERE state <> 'refused' ORDER BY device_id, name, version"
    ):
        found.setdefault(row["device_id"], []).append(row)
    for rows in found.values():
        rows.sort(key=lambda r: (r["name"], order.get(r["state"], 9), r["version"]))
    return found


def published(conn: Connection) -> list[dict[str, Any]]:
    """Every published file with its rollout targets (for the dashboard and the CLI)."""
    bundles = conn.execute("SELECT * FROM model_bundles ORDER BY name, published_at")
    targets: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute("SELECT * FROM rollouts ORDER BY created_at, target"):
        targets.setdefault(row["sha256"], []).append(
            {"target": row["target"], "activate": bool(row["activate"])}
        )
    return [{**b, "rollouts": targets.get(b["sha256"], [])} for b in bundles]
