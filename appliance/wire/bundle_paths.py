"""What a signed model bundle file may hold: one check, run before anything is written.

The same check runs where a bundle file is made or read: ``appliance models pack`` (the
programme, before it signs), ``appliance hub publish`` (before the hub keeps a copy for
every box) and ``appliance models install`` (before the box writes one byte to its
staging folder). A signature proves who made a file, not that its paths are sound.

A bundle file is a tar of regular files only: ``signature.json``, and ``bundle/<path>``
for ``manifest.json`` and for each file the manifest lists, nothing else. A path is a
plain relative one: no leading ``/``, no ``..``, ``.`` or empty part (``bundle//etc/x``
is ``/etc/x`` once joined to a folder), no backslash and no control character. Links,
hard links, devices, FIFOs, folders and sparse files are refused, and so is a file with
more members or more bytes than any model bundle has.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from appliance.errors import ModelPackageError
from appliance.wire.model_signature import BUNDLE_PREFIX, SIGNATURE_FILE

MANIFEST_NAME = "manifest.json"
MAX_MEMBERS = 256  # a bundle holds a handful of files
MAX_TOTAL_BYTES = 4 << 30
MAX_PATH_CHARS = 255
MAX_READ_BYTES = 16 << 20  # one read from the unpacked tar: a header, or a block of a file
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_path(rel: Any) -> str:
    """``rel`` when it is a plain path inside the bundle, else ModelPackageError."""
    if not isinstance(rel, str) or not rel or len(rel) > MAX_PATH_CHARS:
        raise ModelPackageError(f"{rel!r}: not a file name a bundle can hold")
    if rel.startswith("/"):
        raise ModelPackageError(f"{rel!r}: an absolute path, outside the bundle")
    if "\\" in rel or _CONTROL.search(rel):
        raise ModelPackageError(f"{rel!r}: a backslash or control character in a file name")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise ModelPackageError(f"{rel!r}: a path that leaves the bundle")
    return rel


def check_manifest_files(manifest: Any) -> dict[str, str]:
    """Every file the manifest lists: a plain path with a sha256. Returns path -> sha256."""
    files = manifest.get("files") if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping) or not files:
        raise ModelPackageError("the manifest lists no files")
    if len(files) > MAX_MEMBERS:
        raise ModelPackageError(f"the manifest lists more than {MAX_MEMBERS} files")
    found = {}
    for rel, meta in files.items():
        try:
            check_path(rel)
        except ModelPackageError as exc:
            raise ModelPackageError(f"the manifest lists {exc}") from None
        if rel in (MANIFEST_NAME, SIGNATURE_FILE):
            raise ModelPackageError(f"the manifest lists {rel!r}, which it cannot list")
        sha = meta.get("sha256") if isinstance(meta, Mapping) else None
        if not isinstance(sha, str) or not SHA256.match(sha):
            raise ModelPackageError(f"the manifest gives {rel!r} no sha256")
        found[rel] = sha
    return found


def check_members(members: Iterable[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """The tar's members by name, each a regular file at a sound path; stops reading at
    the first one that is not (a tar of 400,000 members is never read whole)."""
    found: dict[str, tarfile.TarInfo] = {}
    total = 0
    for member in members:
        if len(found) >= MAX_MEMBERS:
            raise ModelPackageError(f"more than {MAX_MEMBERS} members: not a model bundle file")
        name = member.name
        if not member.isreg() or member.issparse():
            raise ModelPackageError(f"{name}: not a plain file (a link, a device or a folder)")
        if name != SIGNATURE_FILE:
            try:  # bundle//etc/x is the absolute /etc/x once joined to a folder
                check_path(name[len(BUNDLE_PREFIX) :] if name.startswith(BUNDLE_PREFIX) else name)
            except ModelPackageError as exc:
                raise ModelPackageError(f"member {exc}") from None
            if not name.startswith(BUNDLE_PREFIX):
                raise ModelPackageError(f"{name}: not part of a bundle file (outside bundle/)")
        if name in found:
            raise ModelPackageError(f"{name}: twice in the file")
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise ModelPackageError("larger than any model bundle should be")
        found[name] = member
    return found


def check_bundle(members: Iterable[tarfile.TarInfo], manifest: Any) -> dict[str, tarfile.TarInfo]:
    """The whole check: the members, the manifest's paths, and that the two agree
    (``signature.json``, ``bundle/manifest.json`` and exactly the listed files)."""
    found = check_members(members.values() if isinstance(members, Mapping) else members)
    listed = {BUNDLE_PREFIX + rel for rel in check_manifest_files(manifest)}
    listed |= {BUNDLE_PREFIX + MANIFEST_NAME, SIGNATURE_FILE}
    if set(found) != listed:
        odd = sorted(set(found) ^ listed)
        raise ModelPackageError(f"files and manifest disagree: {', '.join(odd)}")
    return found


class _NoHugeReads:
    """The unpacked tar, refusing any one read larger than ``MAX_READ_BYTES``: tarfile
    reads an extended (pax) header or a long name in one call of whatever size the
    header claims, so a crafted file could otherwise ask for gigabytes of memory. Files
    are read in blocks and skipped by seeking, which this leaves alone."""

    def __init__(self, source) -> None:
        self.source = source

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > MAX_READ_BYTES:
            raise ModelPackageError("a tar header larger than any model bundle's")
        return self.source.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.source.seek(offset, whence)

    def tell(self) -> int:
        return self.source.tell()


@contextlib.contextmanager
def open_bundle_file(path: Path) -> Iterator[tarfile.TarFile]:
    """A bundle file (a tar, or a gzip of one, as ``pack`` writes it) for reading, with
    every read bounded (``_NoHugeReads``)."""
    with open(path, "rb") as raw:
        zipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(gzip.GzipFile(fileobj=raw)) if zipped else raw
            with tarfile.open(fileobj=_NoHugeReads(source), mode="r:") as tar:
                yield tar
