"""Files on disk: atomic writes that survive a power cut, and a free-space guard."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

from appliance.errors import StorageFullError, StoreError

CHUNK = 1 << 20
SQLITE_FULL = 13  # sqlite3.SQLITE_FULL from Python 3.11


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_free_space(folder: Path, need_bytes: int, reserve_mb: int) -> None:
    """Refuse before writing when the write would eat into the reserve."""
    free = shutil.disk_usage(folder).free
    if free - need_bytes < reserve_mb * 1024 * 1024:
        raise StorageFullError(
            f"disk nearly full: {free // (1024 * 1024)} MB free, {reserve_mb} MB kept in reserve"
        )


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the disk is full: our own
    guard, the operating system (ENOSPC, EDQUOT) or SQLite (SQLITE_FULL)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StorageFullError):
            return True
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, sqlite3.Error) and (
            getattr(seen, "sqlite_errorcode", None) == SQLITE_FULL
            or "database or disk is full" in str(seen)  # Python 3.10 has no error code
        ):
            return True
        seen = seen.__cause__
    return False


def fsync_dir(folder: Path) -> None:
    """Make a file's creation, rename or removal in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _translate(exc: OSError, target: Path) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(f"disk full while writing {target.name}")
    return StoreError(f"cannot write {target}: {exc.strerror or exc}")


def atomic_write_bytes(target: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``target`` so that ``target`` is either absent or complete.

    temp file on the same filesystem -> fsync -> rename -> fsync the folder. The temp
    file is made 0600 and keeps that mode (secrets rely on it). ``tmp_dir`` (the data
    dir's tmp/, cleared at start-up) defaults to a hidden name beside the target.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir is None:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    else:
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="incoming-")
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, target)
        fsync_dir(target.parent)
    except OSError as exc:
        _discard(tmp_name)
        raise _translate(exc, target) from exc
    except BaseException:
        _discard(tmp_name)
        raise


def write_chunks(chunks: Iterable[bytes], tmp_dir: Path) -> tuple[Path, str, int]:
    """Write ``chunks`` to a new file in ``tmp_dir`` while hashing them: (path, sha256,
    size). Nothing is fsynced yet: most received files are checked, then either moved
    into place with ``move_into_place`` or dropped as duplicates."""
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except OSError as exc:
        _discard(name)
        raise _translate(exc, Path(name)) from exc
    except BaseException:
        _discard(name)
        raise
    return Path(name), digest.hexdigest(), size


def move_into_place(source: Path, target: Path) -> None:
    """fsync ``source``, rename it to ``target``, fsync the folder: after a power cut
    ``target`` is either absent or complete (the same promise as ``atomic_write_bytes``)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(source, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise _translate(exc, target) from exc


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def clear_tmp(tmp_dir: Path) -> int:
    """Remove half-written temp files left by a crash; they were never acknowledged."""
    removed = 0
    for leftover in tmp_dir.glob("incoming-*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
