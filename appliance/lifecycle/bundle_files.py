"""Signed bundle files on a USB stick (or any folder): found, never installed by
themselves. The Import page offers each to an admin, who installs it into shadow with
the same ``install`` as ``appliance models install``.

A file counts when its name ends in ``.tar``, ``.tar.gz`` or ``.tgz`` and the tar holds
a ``signature.json`` beside ``bundle/manifest.json`` among its first members (only those
two are read, a few MB at most whatever the file is: ``signed_parts``; the signature and
everything else are checked by ``install``). The walk is bounded (depth, entries, files
looked into) and follows no link, like the image import. A stick is anyone's: the page
runs this in a background task, never in a request (appliance/web/imports.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.errors import ModelPackageError
from appliance.wire.model_signature import signed_parts

SUFFIXES = (".tar", ".tar.gz", ".tgz")
MAX_DEPTH = 3
MAX_ENTRIES = 5000
MAX_BYTES = 4 << 30
MAX_FILES = 50  # tar files looked into on one stick: a programme ships a few


def _candidates(root: Path) -> list[Path]:
    found: list[Path] = []
    seen = 0
    folders = [(root, 0)]
    while folders:
        folder, depth = folders.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_ENTRIES:
                return found
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                if depth + 1 < MAX_DEPTH:
                    folders.append((Path(entry.path), depth + 1))
            elif entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(SUFFIXES):
                if entry.stat(follow_symlinks=False).st_size <= MAX_BYTES:
                    found.append(Path(entry.path))
                    if len(found) >= MAX_FILES:
                        return found
    return found


def find_bundle_files(root: Path) -> list[Path]:
    """The signed bundle files under ``root``, sorted by path."""
    bundles = []
    for path in _candidates(Path(root)):
        try:
            _manifest, signature = signed_parts(path)
        except ModelPackageError:
            continue
        if signature is not None:
            bundles.append(path)
    return sorted(bundles)
