"""Crafted files with lying headers: decompression bombs and their DICOM cousins.

Each is small on disk and declares far more than it holds, or declares one thing in its
DICOM tags and another in the codestream the decoder will believe. They are made here,
in a few seconds, from small real parts (a JPEG from OpenCV, a JPEG 2000 codestream from
pydicom's encoder), so nothing large is committed. ``bench/fuzz.py`` uses them too.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def dicom_image(
    pixel_data: bytes,
    *,
    rows: int,
    columns: int,
    syntax: str = ExplicitVRLittleEndian,
    samples: int = 1,
    bits: int = 8,
    frames: int | None = None,
) -> Dataset:
    """A Secondary Capture dataset around ``pixel_data`` (already encoded for ``syntax``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "CRAFTED"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = pixel_data
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        ds["PixelData"].VR = "OB"
    return ds


def saved(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _ifd_entry(tag: int, kind: int, count: int, value: int) -> bytes:
    return struct.pack("<HHII", tag, kind, count, value)


def tiff_bomb(width: int, height: int, samples: int = 1, bits: int = 8) -> bytes:
    """A deflate-compressed striped TIFF whose strips all point at one small compressed
    strip of zeros: a few KB that decode to width x height x samples x bits of pixels."""
    rows_per_strip = max(1, (2 << 20) // (width * samples * bits // 8))
    strip = zlib.compress(bytes(rows_per_strip * width * samples * bits // 8), 9)
    strips = -(-height // rows_per_strip)
    entries = 11
    ifd = 8
    after_ifd = ifd + 2 + 12 * entries + 4
    bits_at = after_ifd
    offsets_at = bits_at + 2 * samples
    counts_at = offsets_at + 4 * strips
    strip_at = counts_at + 4 * strips
    body = [
        _ifd_entry(256, 4, 1, width),
        _ifd_entry(257, 4, 1, height),
        _ifd_entry(258, 3, samples, bits if samples == 1 else bits_at),
        _ifd_entry(259, 3, 1, 8),  # deflate
        _ifd_entry(262, 3, 1, 1 if samples == 1 else 2),
        _ifd_entry(273, 4, strips, offsets_at),
        _ifd_entry(277, 3, 1, samples),
        _ifd_entry(278, 4, 1, rows_per_strip),
        _ifd_entry(279, 4, strips, counts_at),
        _ifd_entry(284, 3, 1, 1),
        _ifd_entry(339, 3, 1, 1),
    ]
    return b"".join(
        [
            b"II*\x00",
            struct.pack("<I", ifd),
            struct.pack("<H", entries),
            *body,
            b"\x00\x00\x00\x00",
            struct.pack(f"<{samples}H", *[bits] * samples),
            struct.pack(f"<{strips}I", *[strip_at] * strips),
            struct.pack(f"<{strips}I", *[len(strip)] * strips),
            strip,
        ]
    )


def bigtiff_header(width: int, height: int) -> bytes:
    """A BigTIFF (version 43) whose first directory declares width x height grey."""
    entries = [
        struct.pack("<HHQQ", 256, 16, 1, width),
        struct.pack("<HHQQ", 257, 16, 1, height),
        struct.pack("<HHQQ", 258, 3, 1, 8),
        struct.pack("<HHQQ", 259, 3, 1, 1),
        struct.pack("<HHQQ", 262, 3, 1, 1),
        struct.pack("<HHQQ", 273, 16, 1, 0),
        struct.pack("<HHQQ", 277, 3, 1, 1),
        struct.pack("<HHQQ", 279, 16, 1, 0),
    ]
    return (
        b"II+\x00\x08\x00\x00\x00"
        + struct.pack("<Q", 16)
        + struct.pack("<Q", len(entries))
        + b"".join(entries)
        + bytes(8)
    )


def small_bigtiff(side: int = 32) -> bytes:
    """A real, decodable BigTIFF (uncompressed grey): OpenCV reads these."""
    pixels = (np.arange(side * side) % 251).astype(np.uint8).tobytes()
    fields = [
        (256, 16, side),
        (257, 16, side),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 16, 16 + 8 + 20 * 9 + 8),
        (277, 3, 1),
        (278, 16, side),
        (279, 16, len(pixels)),
    ]
    ifd = b"".join(struct.pack("<HHQQ", tag, kind, 1, value) for tag, kind, value in fields)
    return (
        b"II+\x00\x08\x00\x00\x00" + struct.pack("<QQ", 16, len(fields)) + ifd + bytes(8) + pixels
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """An honest PNG of width x height black grey pixels: deflate packs it ~1000:1."""
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def small_jpeg(side: int = 512) -> bytes:
    pixels = (np.indices((side, side)).sum(axis=0) % 256).astype(np.uint8)
    return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF0) claiming another size."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def small_j2k(side: int = 64) -> bytes:
    """A lossless JPEG 2000 codestream made by pydicom's encoder (pylibjpeg-openjpeg)."""
    arr = (np.indices((side, side)).sum(axis=0) % 256).astype(np.uint8)
    ds = dicom_image(arr.tobytes(), rows=side, columns=side)
    ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg")
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=1))


def with_j2k_size(codestream: bytes, width: int, height: int) -> bytes:
    """The same codestream with its SIZ (image and tile size) claiming another size."""
    assert codestream[:4] == b"\xff\x4f\xff\x51"
    siz = bytearray(codestream)
    struct.pack_into(">II", siz, 8, width, height)  # Xsiz, Ysiz
    struct.pack_into(">II", siz, 24, width, height)  # XTsiz, YTsiz: one tile
    return bytes(siz)


def deflate_bomb(pixel_bytes: int) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM whose dataset unpacks to
    ``pixel_bytes`` of zero pixel data (1 GB packs into about 1 MB)."""
    side = 1024
    frames = pixel_bytes // (side * side)
    ds = dicom_image(b"", rows=side, columns=side, frames=frames)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    del ds.PixelData
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(head, ds)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pieces = [packer.compress(head.getvalue())]
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, frames * side * side)
    pieces.append(packer.compress(element))
    chunk = bytes(side * side)
    pieces.extend(packer.compress(chunk) for _ in range(frames))
    pieces.append(packer.flush())
    meta = DicomBytesIO()
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + b"".join(pieces)


@dataclass(frozen=True)
class Bomb:
    name: str
    kind: str  # dicom, tiff, png, jpeg
    data: bytes
    reason: str  # a fragment of the plain-language reason it must be refused with
    storescu_flags: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}.{ {'dicom': 'dcm', 'jpeg': 'jpg'}.get(self.kind, self.kind) }"


@functools.cache
def bombs() -> tuple[Bomb, ...]:
    """Every bomb of issue 12 (and a few of their relatives), built once per process."""
    jpeg = small_jpeg()
    return (
        Bomb("tiff-20000-grey", "tiff", tiff_bomb(20000, 20000), "20000 × 20000 pixels"),
        Bomb("tiff-30000-rgb16", "tiff", tiff_bomb(30000, 30000, 3, 16), "30000 × 30000 pixels"),
        Bomb("bigtiff-30000", "tiff", bigtiff_header(30000, 30000), "30000 × 30000 pixels"),
        Bomb("png-20000", "png", png_bomb(20000, 20000), "20000 × 20000 pixels"),
        Bomb("jpeg-sof-30000", "jpeg", with_jpeg_size(jpeg, 30000, 30000), "30000 × 30000"),
        Bomb(
            "dicom-jpeg-sof-30000",
            "dicom",
            saved(
                dicom_image(
                    encapsulate([with_jpeg_size(jpeg, 30000, 30000)]),
                    rows=512,
                    columns=512,
                    syntax=JPEGBaseline8Bit,
                )
            ),
            "30000 × 30000 pixels",
            ("-xy",),
        ),
        Bomb(
            "dicom-j2k-siz-40000",
            "dicom",
            saved(
                dicom_image(
                    encapsulate([with_j2k_size(small_j2k(), 40000, 40000)]),
                    rows=64,
                    columns=64,
                    syntax=JPEG2000Lossless,
                )
            ),
            "40000 × 40000 pixels",
            ("-xv",),
        ),
        Bomb(
            "dicom-100000-frames",
            "dicom",
            saved(dicom_image(bytes(64 * 64), rows=64, columns=64, frames=100_000)),
            "100000 frames",
        ),
        Bomb("dicom-deflate-1gb", "dicom", deflate_bomb(1 << 30), "Unpacked", ("-xd",)),
    )
