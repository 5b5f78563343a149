"""A programme key, a "new" version of a committed bundle, and a box that trusts the key.

The new version is the committed cxr-adult-abnormal bundle copied with another version
and another calibration (so its scores differ on the same image); its files, and so
their sha256 in the manifest, are the committed ones.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

from helpers import bundle_dir

NAME = "cxr-adult-abnormal"
NEW = "9.0.0"  # newer than any shipped version
SHIPPED = bundle_dir(NAME).name  # the version the package carries (active on a new box)


def new_version(
    folder: Path, version: str = NEW, name: str = NAME, changes: dict | None = None
) -> Path:
    """A copy of the committed bundle ``name`` as ``version``, its manifest re-hashed."""
    source = bundle_dir(name)
    target = folder / name / version
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    if name == NAME:
        manifest["calibration"] = {**manifest["calibration"], "a": 0.9}
    manifest.update(changes or {})
    from appliance.inference.bundle import file_sha256

    for rel in manifest["files"]:
        manifest["files"][rel]["sha256"] = file_sha256(target / rel)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


def rewrite_tar(source: Path, target: Path, change) -> Path:
    """Copy a bundle file member by member; ``change(name, bytes)`` returns new bytes
    or None to leave the member out."""
    with tarfile.open(source) as tar_in, tarfile.open(target, "w") as tar_out:
        for member in tar_in.getmembers():
            data = change(member.name, tar_in.extractfile(member).read())
            if data is None:
                continue
            member.size = len(data)
            tar_out.addfile(member, io.BytesIO(data))
    return target
