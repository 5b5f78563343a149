"""Secrets on disk (tokens, keys): readable by the owner only, never half-written."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, atomically (never a half-written secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def random_secret(path: Path, nbytes: int = 32) -> bytes:
    """The random key kept at ``path``, made on first use.

    Several processes may ask at once (the hub's workers starting together): each
    writes its own candidate, and ``os.link`` — which fails when ``path`` exists — lets
    exactly one become the key; every process then reads that one."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    write_secret(candidate, secrets.token_bytes(nbytes))
    try:
        os.link(candidate, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    finally:
        candidate.unlink()
    return path.read_bytes()
