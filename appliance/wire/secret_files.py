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
    """The random key kept at ``path``, made on first use."""
    if not path.exists():
        write_secret(path, secrets.token_bytes(nbytes))
    return path.read_bytes()
