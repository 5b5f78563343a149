"""When a photo was taken, from its JPEG's EXIF block (DateTimeOriginal, else DateTime).

Only this one value is read, by walking the marker segments before the image data (as
``headers.jpeg_header`` does) and the TIFF directories inside the APP1 "Exif" segment:
no pixel is decoded and nothing past a bounded number of entries is believed. A camera
writes local time without a zone; it is kept as read (``taken_at`` compares photos from
one camera with one another, never with the box's clock).
"""

from __future__ import annotations

import struct
from datetime import datetime

from appliance.ingest.headers import ReadAt

MAX_SEGMENTS = 64
MAX_ENTRIES = 512
DATETIME_ORIGINAL, DATETIME, EXIF_IFD = 0x9003, 0x0132, 0x8769


def photo_taken_at(read_at: ReadAt) -> datetime | None:
    """The camera's capture time of a JPEG, or None when it does not say (or is damaged)."""
    try:
        block = _exif_block(read_at)
        return _datetime(block) if block else None
    except (struct.error, ValueError, IndexError):
        return None


def _exif_block(read_at: ReadAt) -> bytes | None:
    if read_at(0, 2) != b"\xff\xd8":
        return None
    pos = 2
    for _ in range(MAX_SEGMENTS):
        marker = read_at(pos, 4)
        if len(marker) < 4 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):
            return None
        (length,) = struct.unpack(">H", marker[2:4])
        if marker[1] == 0xE1:
            body = read_at(pos + 4, length - 2)
            if body.startswith(b"Exif\x00\x00"):
                return body[6:]
        pos += 2 + length
    return None


def _entries(tiff: bytes, order: str, offset: int):
    (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    for index in range(min(count, MAX_ENTRIES)):
        start = offset + 2 + 12 * index
        tag, kind, number = struct.unpack(order + "HHI", tiff[start : start + 8])
        yield tag, kind, number, tiff[start + 8 : start + 12]


def _datetime(tiff: bytes) -> datetime | None:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    (ifd0,) = struct.unpack(order + "I", tiff[4:8])
    found: dict[int, datetime] = {}
    directories = [ifd0]  # IFD0, then the Exif IFD it points to (followed once)
    for offset in directories:
        for tag, kind, number, value in _entries(tiff, order, offset):
            if tag == EXIF_IFD and kind == 4 and len(directories) == 1:
                directories.append(struct.unpack(order + "I", value)[0])
            elif tag in (DATETIME_ORIGINAL, DATETIME) and kind == 2 and number >= 19:
                (at,) = struct.unpack(order + "I", value)
                text = tiff[at : at + 19].decode("ascii")
                found[tag] = datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    return found.get(DATETIME_ORIGINAL) or found.get(DATETIME)
