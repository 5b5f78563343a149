"""The programme's side: one signed file per bundle version.

The file is a tar (optionally gzip) holding ``signature.json`` and the bundle under
``bundle/`` (``manifest.json`` and every file it lists, nothing else). Members are
regular files with fixed owner, mode and time, so the same bundle and key give the
same file.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from appliance.errors import ModelPackageError
from appliance.inference.bundle import MANIFEST, load_bundle, read_manifest
from appliance.wire.bundle_paths import check_bundle, check_manifest_files
from appliance.wire.model_signature import (
    BUNDLE_PREFIX,
    SIGNATURE_FILE,
    load_private,
    sign_manifest,
)

PREFIX = BUNDLE_PREFIX


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o644, 0, 0, 0
    info.uname = info.gname = ""
    return info


def _bundle_file(folder: Path, rel: str) -> Path:
    """A listed file, refused when it is a link (its target would be signed as if it
    were part of the bundle)."""
    path = folder / rel
    if path.is_symlink() or not path.resolve().is_relative_to(folder.resolve()):
        raise ModelPackageError(f"{rel}: a link, not a file in the bundle folder")
    return path


def pack(bundle_dir: Path, key_path: Path, out: Path) -> dict[str, str]:
    """Verify the bundle (every sha256), sign its manifest and write ``out``
    (``.gz`` in its name: gzip). Returns name, version, key id and the file."""
    # Every listed path is a plain one inside the bundle before anything else is read:
    # a box would refuse the file anyway, so it is never signed.
    check_manifest_files(read_manifest(Path(bundle_dir)))
    bundle = load_bundle(bundle_dir)  # a bundle that does not verify is never signed
    files = {rel: _bundle_file(bundle.path, rel) for rel in sorted(bundle.manifest["files"])}
    key = load_private(key_path)
    manifest_bytes = (bundle.path / MANIFEST).read_bytes()
    signature = sign_manifest(manifest_bytes, key)
    sig_bytes = (json.dumps(signature, indent=2) + "\n").encode()
    members = [
        _member(SIGNATURE_FILE, len(sig_bytes)),
        _member(PREFIX + MANIFEST, len(manifest_bytes)),
        *(_member(PREFIX + rel, path.stat().st_size) for rel, path in files.items()),
    ]
    check_bundle(members, bundle.manifest)  # the check publish and install make
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(members[0], io.BytesIO(sig_bytes))
        tar.addfile(members[1], io.BytesIO(manifest_bytes))
        for member, path in zip(members[2:], files.values(), strict=True):
            with open(path, "rb") as fh:
                tar.addfile(member, fh)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return {
        "name": bundle.name,
        "version": bundle.version,
        "key_id": signature["key_id"],
        "file": str(out),
    }
