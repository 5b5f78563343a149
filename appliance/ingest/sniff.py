"""Recognise what a file is from its first bytes (names and extensions lie)."""

from __future__ import annotations

from pathlib import Path

HEADER_BYTES = 512

IMAGE_KINDS = ("dicom", "jpeg", "png", "tiff")

# Plain-language reasons for files that are not images at all.
NOT_AN_IMAGE = {
    "empty": "The file is empty (0 bytes). Copy or send it again.",
    "pdf": "This is a PDF document, not an image.",
    "zip": "This is a compressed archive (ZIP), not an image. Unpack it and import the images.",
    "text": "This is a text file, not an image.",
    "unknown": "This file is not an image the box can read (expected DICOM, JPEG, PNG or TIFF).",
}


def sniff(header: bytes) -> str:
    """Return dicom, jpeg, png, tiff, pdf, zip, text, empty or unknown."""
    if not header:
        return "empty"
    if len(header) >= 132 and header[128:132] == b"DICM":
        return "dicom"
    if header.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if header.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if header[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF, BigTIFF
        return "tiff"
    if header.startswith(b"%PDF"):
        return "pdf"
    if header.startswith(b"PK\x03\x04"):
        return "zip"
    if _looks_like_bare_dicom(header):
        return "dicom"
    if _looks_like_text(header):
        return "text"
    return "unknown"


def _looks_like_bare_dicom(header: bytes) -> bool:
    """DICOM without the 128-byte preamble: the file meta group (0002) first, as some
    DICOMDIR exports write it, or an old file starting straight with group 0008."""
    if len(header) < 8:
        return False
    group = int.from_bytes(header[0:2], "little")
    element = int.from_bytes(header[2:4], "little")
    if group == 0x0002:
        return element in (0x0000, 0x0001, 0x0002)
    return group == 0x0008 and element in (0x0000, 0x0005, 0x0008, 0x0016)


def _looks_like_text(header: bytes) -> bool:
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch >= 0x20 or ch in b"\t\r\n" for ch in header)


def sniff_file(path: Path, within: Path | None = None, outside_reason: str = "") -> str:
    """What a file is, from its first bytes; ``IngestError`` for a FIFO, a device or a
    link leaving ``within`` (see sources.open_regular), which are never read."""
    from appliance.ingest.sources import open_regular

    with open_regular(path, within, outside_reason) as fh:
        return sniff(fh.read(HEADER_BYTES))
