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

from appliance.inference.bundle import MANIFEST, load_bundle
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


def pack(bundle_dir: Path, key_path: Path, out: Path) -> dict[str, str]:
    """Verify the bundle (every sha256), sign its manifest and write ``out``
    (``.gz`` in its name: gzip). Returns name, version, key id and the file."""
    bundle = load_bundle(bundle_dir)  # a bundle that does not verify is never signed
    key = load_private(key_path)
    manifest_bytes = (bundle.path / MANIFEST).read_bytes()
    signature = sign_manifest(manifest_bytes, key)
    sig_bytes = (json.dumps(signature, indent=2) + "\n").encode()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member(SIGNATURE_FILE, len(sig_bytes)), io.BytesIO(sig_bytes))
        tar.addfile(_member(PREFIX + MANIFEST, len(manifest_bytes)), io.BytesIO(manifest_bytes))
        for rel in sorted(bundle.manifest["files"]):
            path = bundle.path / rel
            with open(path, "rb") as fh:
                tar.addfile(_member(PREFIX + rel, path.stat().st_size), fh)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return {
        "name": bundle.name,
        "version": bundle.version,
        "key_id": signature["key_id"],
        "file": str(out),
    }
