"""Installing a signed bundle file: verified before anything is put in place.

1. the tar's members: regular files only, ``signature.json`` and ``bundle/...``, no
   path leaving the bundle (appliance/wire/bundle_paths.py);
2. the signature over ``manifest.json``'s exact bytes, with a trusted programme key;
   then the manifest's paths and the members agree, nothing unlisted: all before the
   staging folder exists;
3. the manifest's schema, the model's name and version, its input contract against
   the running version, the appliance version it needs;
4. each file, streamed into ``<data_dir>/models/.staging/``, hashed on the way and
   checked against the (signed) manifest; fsynced;
5. one rename into ``<data_dir>/models/<name>/<version>/``, then one transaction
   that records the version in shadow and audits it.

A power cut before 5's rename leaves only staging (cleared by the next install); after
the rename but before the commit, a folder no row names, which nothing loads and the
next install of that version replaces. The running models are never touched. A refused
file is audited with the reason (and recorded as ``refused`` where its manifest named
a model and version).

``MODELS_TEST_PAUSE_AT=<step>`` (test-only, see tests/lifecycle/test_power_cut.py) makes
the process stop at a named step so a test can kill it there with SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import BundleError, ModelPackageError
from appliance.inference.bundle import MANIFEST, read_manifest, verify_files
from appliance.lifecycle.checks import VERSION_PATTERN, check_new_version
from appliance.lifecycle.keys import trusted
from appliance.lifecycle.pack import PREFIX
from appliance.screening.models import (
    REQUIRED,
    installed_dir,
    models_dir,
    newest_bundles,
    version_dir,
)
from appliance.store import model_versions
from appliance.store.db import Store, audit
from appliance.store.files import fsync_dir
from appliance.wire.bundle_paths import check_bundle, check_members, open_bundle_file
from appliance.wire.model_signature import SIGNATURE_FILE, verify_manifest

PAUSE_ENV = "MODELS_TEST_PAUSE_AT"  # test-only: see the module docstring
STAGING = ".staging"
MAX_MANIFEST_BYTES = 1 << 20


def pause_point(step: str) -> None:
    """Test-only: stop here (for a SIGKILL) when ``MODELS_TEST_PAUSE_AT`` names ``step``."""
    if os.environ.get(PAUSE_ENV) == step:
        print(f"paused at {step}", file=sys.stderr, flush=True)
        time.sleep(600)



def running_manifest(store: Store, config: Config, name: str) -> dict[str, Any] | None:
    """The manifest of the version the box runs for ``name`` (active, else shipped)."""
    row = model_versions.active_row(store.conn(), name)
    folder = version_dir(config, row) if row else newest_bundles(models_dir(config)).get(name)
    return read_manifest(folder) if folder else None


class _Attempt:
    """What is known so far about the file being installed (for the refusal record)."""

    name: str | None = None
    version: str | None = None
    key_id: str | None = None


def install(store: Store, config: Config, file: Path, actor: str = "cli") -> dict[str, str]:
    """Install ``file`` into shadow; raise ModelPackageError (audited) when refused."""
    attempt = _Attempt()
    staging_root = Path(config.data_dir) / "models" / STAGING
    shutil.rmtree(staging_root, ignore_errors=True)  # what a power cut left
    staging = staging_root / uuid.uuid4().hex
    try:
        return _install(store, config, Path(file), staging, attempt, actor)
    except (BundleError, OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        reason = str(exc) if isinstance(exc, BundleError) else f"unreadable file ({exc})"
        with store.write() as conn:
            if attempt.name and attempt.version:
                model_versions.record_refused(
                    conn, attempt.name, attempt.version, attempt.key_id, reason
                )
            audit(conn, actor, "model.refused", f"file:{Path(file).name}", reason)
        raise ModelPackageError(f"{Path(file).name} refused: {reason}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo | None, limit: int) -> bytes | None:
    if member is None:
        return None
    if member.size > limit:
        raise ModelPackageError(f"{member.name} is too large")
    data = tar.extractfile(member).read()
    if len(data) != member.size:
        raise ModelPackageError(f"{member.name} is cut short (truncated file?)")
    return data


def _install(
    store: Store, config: Config, file: Path, staging: Path, attempt: _Attempt, actor: str
) -> dict[str, str]:
    with open_bundle_file(file) as tar:
        members = check_members(tar)  # stops at the first odd one: never read whole
        manifest_bytes = _read(tar, members.get(PREFIX + MANIFEST), MAX_MANIFEST_BYTES)
        if manifest_bytes is None:
            raise ModelPackageError("no bundle/manifest.json in the file")
        _note_identity(manifest_bytes, attempt)
        signature = _read(tar, members.get(SIGNATURE_FILE), MAX_MANIFEST_BYTES)
        attempt.key_id = verify_manifest(manifest_bytes, signature, trusted(config.data_dir))
        try:
            listed = json.loads(manifest_bytes)
        except ValueError as exc:
            raise ModelPackageError(f"unreadable bundle/manifest.json ({exc})") from exc
        # Every path, in the tar and in the signed manifest, before one byte is written:
        # a signature says who made the file, not that its paths stay in the bundle.
        check_bundle(members, listed)
        staging.mkdir(parents=True)
        (staging / MANIFEST).write_bytes(manifest_bytes)
        manifest = read_manifest(staging)  # the schema
        name, version = str(manifest["name"]), str(manifest["version"])
        check_new_version(manifest, running_manifest(store, config, name), REQUIRED)
        existing = model_versions.row(store.conn(), name, version)
        if existing and existing["state"] != model_versions.REFUSED:
            raise ModelPackageError(
                f"{name} {version} is already on this box ({existing['state']})"
            )
        for rel, meta in manifest["files"].items():
            _extract(tar, members[PREFIX + rel], staging, rel, str(meta["sha256"]))
    verify_files(staging, manifest)
    for folder in {p.parent for p in staging.rglob("*")} | {staging}:
        fsync_dir(folder)
    pause_point("install.staged")
    target = installed_dir(config, name, version)
    if target.exists():  # a folder no row names: a power cut after an earlier rename
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    fsync_dir(target.parent)
    pause_point("install.renamed")
    shipped = newest_bundles(models_dir(config)).get(name)
    with store.write() as conn:
        if shipped is not None:
            model_versions.remember_bundled(conn, name, shipped.name)
        model_versions.record_installed(conn, name, version, attempt.key_id)
        audit(conn, actor, "model.installed", f"model:{name}/{version}", f"key {attempt.key_id}")
    return {"name": name, "version": version, "key_id": attempt.key_id, "state": "shadow"}


def _note_identity(manifest_bytes: bytes, attempt: _Attempt) -> None:
    try:
        manifest = json.loads(manifest_bytes)
        name, version = str(manifest["name"]), str(manifest["version"])
    except (ValueError, KeyError, TypeError):
        return
    if name in REQUIRED and VERSION_PATTERN.match(version):
        attempt.name, attempt.version = name, version


def _extract(
    tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, rel: str, sha256: str
) -> None:
    """Stream one file out, hashing it on the way: a changed or cut-short file stops
    here, before the rest is read."""
    to = staging / rel
    # check_bundle already refused every path that leaves the bundle; this is the last
    # word before a write, should a path slip past it (a link in staging, say).
    if not to.resolve().is_relative_to(staging.resolve()):
        raise ModelPackageError(f"{member.name}: a path that leaves the bundle")
    to.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    source = tar.extractfile(member)
    with open(to, "wb") as out:
        while block := source.read(1 << 20):
            digest.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    if to.stat().st_size != member.size:
        raise ModelPackageError(f"{member.name} is cut short (truncated file?)")
    if digest.hexdigest() != sha256:
        raise ModelPackageError(
            f"{member.name}: sha256 differs from the signed manifest (tampered or corrupt)"
        )
