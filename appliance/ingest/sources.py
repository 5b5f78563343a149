"""Opening what a door hands us: only plain files, never more than the limit.

A stick or the hot folder can hold a FIFO (opening it for reading waits for a writer
that never comes), a link to ``/dev/zero`` (reading never ends) or a link to the box's
own files. So a file is opened without blocking and without following a final link,
taken only if it is a regular file inside the volume it was found on, and read in
chunks that stop at ``upload_max_mb`` however large the file claims or turns out to be.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from appliance.errors import FileTooLargeError, IngestError

CHUNK = 1 << 20

NOT_A_FILE = "This is not a regular file (a device, pipe or folder); it was not read."


def too_large(limit_bytes: int, size: int | None = None) -> FileTooLargeError:
    """The refusal for a file over the limit; ``size`` when known before reading."""
    limit_mb = limit_bytes // (1024 * 1024)
    if size is None:  # found while reading: the rest was never read
        return FileTooLargeError(f"The file is larger than the {limit_mb} MB limit for one image.")
    size_mb = size // (1024 * 1024)
    return FileTooLargeError(
        f"The file is {size_mb} MB, larger than the {limit_mb} MB limit for one image."
    )


@contextmanager
def open_regular(
    path: Path, within: Path | None = None, outside_reason: str = ""
) -> Iterator[BinaryIO]:
    """Open ``path`` for reading if it is a regular file (inside ``within``, if given;
    ``outside_reason`` says why a link leaving it is refused, in the door's words).

    Raises ``IngestError`` with a plain reason for anything else, ``OSError`` when the
    file cannot be opened at all.
    """
    target = Path(path)
    if within is not None:
        # A link may point anywhere on the box's own disk: follow it only to see where.
        target = target.resolve()
        if not target.is_relative_to(Path(within).resolve()):
            raise IngestError(outside_reason, detail=f"{path} -> {target}")
    # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
    # O_NOFOLLOW: the resolved name must not have become a link since.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(target, flags | (os.O_NOFOLLOW if within is not None else 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise IngestError(NOT_A_FILE, detail=f"{path}: mode {stat.filemode(mode)}")
        os.set_blocking(fd, True)  # a regular file: reads behave as usual
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_limited(fh: BinaryIO, limit_bytes: int) -> Iterator[bytes]:
    """The file's chunks, refusing as soon as more than ``limit_bytes`` have come."""
    total = 0
    while chunk := fh.read(CHUNK):
        total += len(chunk)
        if total > limit_bytes:
            raise too_large(limit_bytes)
        yield chunk
