"""Image sizes from each format's own header, read before any pixel is decoded.

A crafted file that kills the box is a defect of the door it came through, not of the
decoder: a 389 KB TIFF can declare 20000 x 20000 pixels, and a 4 KB DICOM can carry a
JPEG whose frame header says 30000 x 30000 while its Rows/Columns say 512. So every door
reads what the decoder itself will believe -- the PNG IHDR, the JPEG SOF, the TIFF IFD,
the JPEG 2000 SIZ -- and checks it against ``max_image_pixels`` first.

Each reader is a small pure function of ``read_at(offset, size) -> bytes`` (fewer bytes
at the end of the data), so the same code reads a file on disk, bytes in memory or the
fragments of one DICOM frame, and never reads more than a header's worth.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from appliance.errors import DecodeError, UnsupportedFileError

ReadAt = Callable[[int, int], bytes]

DAMAGED = "The image file is damaged and cannot be decoded."
MIN_SIDE = 16
MB = 1024 * 1024

# Bounds on the header walk itself, so a crafted header cannot make it loop for long.
MAX_JPEG_SEGMENTS = 4096
MAX_TIFF_ENTRIES = 4096
MAX_JP2_BOXES = 256
# ISO/IEC 15444-1 numbers tiles 0..65534; OpenJPEG allocates per tile.
MAX_J2K_TILES = 65535

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_START = b"\xff\x4f\xff\x51"  # SOC, then SIZ: always the first two markers

# SOF0-3, 5-7, 9-11, 13-15 (DHT C4, JPG C8 and DAC CC are not frames) and SOF55 (JPEG-LS).
JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)


@dataclass(frozen=True)
class ImageLimits:
    """What one image may declare and what decoding it may cost (the settings
    ``max_image_pixels``, ``max_image_frames``, ``upload_max_mb``, ``max_decode_mb``)."""

    max_pixels: int = 100_000_000
    max_frames: int = 1000
    max_bytes: int = 512 * MB  # a file, or a deflated DICOM dataset once unpacked
    max_decode_bytes: int = 600 * MB  # working memory of one decode, estimated

    @classmethod
    def from_config(cls, config: Any) -> ImageLimits:
        return cls(
            config.max_image_pixels,
            config.max_image_frames,
            config.upload_max_mb * MB,
            config.max_decode_mb * MB,
        )

    @classmethod
    def of(cls, limits: ImageLimits | int) -> ImageLimits:
        """Limits as given, or the defaults with ``max_pixels`` (older callers pass it)."""
        return limits if isinstance(limits, ImageLimits) else cls(max_pixels=limits)


def decode_memory(
    pixels: int,
    samples: int,
    bits: int,
    float64_step: bool = False,
    copies: int = 1,
    encoded_bytes: int = 0,
) -> int:
    """Bytes one decode holds at its peak, from what the headers declare: the encoded
    data read in, the decoded samples (``copies`` of them where a colour conversion makes
    another), the float32 pixels made from them (three channels or one), and for a grey
    DICOM image with a rescale or a lookup table pydicom's float64 values on the way;
    plus a tenth for what the decoders allocate besides (measured: tests/ingest)."""
    stored = samples * max(1, (bits + 7) // 8)
    channels = 3 if samples >= 3 else 1
    per_pixel = stored * copies + 4 * channels + (16 if float64_step else 0)
    return pixels * per_pixel * 11 // 10 + encoded_bytes


@dataclass(frozen=True)
class ImageHeader:
    """What a decoder will allocate for: size, samples per pixel, bits per sample."""

    kind: str
    width: int
    height: int
    samples: int = 1
    bits: int = 8
    # Largest block a decoder allocates besides the image (a TIFF tile), in pixels.
    block_pixels: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height


def from_bytes(raw: bytes | memoryview) -> ReadAt:
    def read_at(offset: int, size: int) -> bytes:
        return bytes(raw[offset : offset + size]) if offset >= 0 else b""

    return read_at


def from_file(fh: BinaryIO) -> ReadAt:
    def read_at(offset: int, size: int) -> bytes:
        if offset < 0:
            return b""
        fh.seek(offset)
        return fh.read(size)

    return read_at


def from_segments(read_at: ReadAt, segments: Sequence[tuple[int, int]]) -> ReadAt:
    """One view over several (offset, length) pieces: a frame split into fragments."""

    def joined(offset: int, size: int) -> bytes:
        out = bytearray()
        start = 0
        for seg_offset, seg_length in segments:
            if len(out) >= size:
                break
            end = start + seg_length
            if offset + len(out) < end:
                inner = offset + len(out) - start
                out += read_at(seg_offset + inner, min(size - len(out), seg_length - inner))
            start = end
        return bytes(out)

    return joined


def damaged(detail: str) -> DecodeError:
    return DecodeError(DAMAGED, detail=detail)


def _exact(read_at: ReadAt, offset: int, size: int, what: str) -> bytes:
    data = read_at(offset, size)
    if len(data) < size:
        raise damaged(f"{what}: the data ends early")
    return data


def png_header(read_at: ReadAt) -> ImageHeader:
    head = _exact(read_at, 0, 29, "PNG header")
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise damaged("PNG has no IHDR chunk first")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if samples is None or depth not in (1, 2, 4, 8, 16):
        raise damaged(f"PNG colour type {colour} with depth {depth}")
    return ImageHeader("png", width, height, samples, depth)


def jpeg_header(read_at: ReadAt) -> ImageHeader:
    """The first frame header (SOFn), found by walking the marker segments before it."""
    if read_at(0, 2) != b"\xff\xd8":
        raise damaged("JPEG does not start with SOI")
    pos = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        marker = read_at(pos, 2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise damaged(f"JPEG has no frame header (no marker at byte {pos})")
        code = marker[1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code in (0x01, 0xD8) or 0xD0 <= code <= 0xD7:  # markers without a length
            pos += 2
            continue
        if code in (0xD9, 0xDA):
            raise damaged("JPEG image data starts before any frame header")
        (length,) = struct.unpack(">H", _exact(read_at, pos + 2, 2, "JPEG segment"))
        if length < 2:
            raise damaged(f"JPEG segment {code:02X} of length {length}")
        if code in JPEG_SOF:
            body = _exact(read_at, pos + 4, 6, "JPEG frame header")
            precision, height, width, components = struct.unpack(">BHHB", body)
            if height == 0:  # the height would come later, in a DNL segment
                raise damaged("JPEG frame header without a height (DNL)")
            return ImageHeader("jpeg", width, height, components, precision)
        pos += 2 + length
    raise damaged("JPEG has too many segments before its frame header")


_TIFF_TYPES = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8: size of one value
_TIFF_WANTED = {256, 257, 258, 277, 322, 323}  # width, length, bits, samples, tile w, h


def tiff_header(read_at: ReadAt) -> ImageHeader:
    """The first image file directory: what OpenCV (libtiff) decodes. BigTIFF included."""
    head = _exact(read_at, 0, 8, "TIFF header")
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        raise damaged("TIFF byte order mark")
    (version,) = struct.unpack(order + "H", head[2:4])
    if version == 42:
        (ifd,) = struct.unpack(order + "I", head[4:8])
        count_fmt, entry_size, value_size = "H", 12, 4
    elif version == 43:  # BigTIFF: 8-byte offsets and counts
        extra = _exact(read_at, 4, 12, "BigTIFF header")
        if struct.unpack(order + "HH", extra[:4]) != (8, 0):
            raise damaged("BigTIFF offset size")
        (ifd,) = struct.unpack(order + "Q", extra[4:12])
        count_fmt, entry_size, value_size = "Q", 20, 8
    else:
        raise damaged(f"TIFF version {version}")
    count_bytes = struct.calcsize(count_fmt)
    (count,) = struct.unpack(order + count_fmt, _exact(read_at, ifd, count_bytes, "TIFF IFD"))
    if not 0 < count <= MAX_TIFF_ENTRIES:
        raise damaged(f"TIFF directory with {count} entries")
    entries = _exact(read_at, ifd + count_bytes, count * entry_size, "TIFF IFD entries")
    tags: dict[int, int] = {}
    for index in range(count):
        entry = entries[index * entry_size : (index + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag not in _TIFF_WANTED:
            continue
        tags[tag] = _tiff_value(read_at, order, entry[4:], kind, value_size)
    if 256 not in tags or 257 not in tags:
        raise damaged("TIFF without ImageWidth/ImageLength")
    tile = tags.get(322, 0) * tags.get(323, 0)
    return ImageHeader(
        "tiff", tags[256], tags[257], tags.get(277, 1), tags.get(258, 1), block_pixels=tile
    )


def _tiff_value(read_at: ReadAt, order: str, rest: bytes, kind: int, value_size: int) -> int:
    """The largest of an entry's first few values (BitsPerSample has one per sample)."""
    size = _TIFF_TYPES.get(kind)
    if size is None:
        raise damaged(f"TIFF size tag of type {kind}")
    count_fmt = "I" if value_size == 4 else "Q"
    (count,) = struct.unpack(order + count_fmt, rest[:value_size])
    field = rest[value_size : 2 * value_size]
    if count == 0:
        raise damaged("TIFF size tag without a value")
    wanted = min(count, 8)
    if count * size <= value_size:
        data = field[: wanted * size]
    else:
        (offset,) = struct.unpack(order + count_fmt, field)
        data = _exact(read_at, offset, wanted * size, "TIFF tag value")
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
    return max(struct.unpack(f"{order}{wanted}{fmt}", data))


def j2k_header(read_at: ReadAt) -> ImageHeader:
    """The SIZ segment of a raw codestream, or of the codestream inside a JP2 file."""
    head = read_at(0, 12)
    if head[:4] == J2K_START:
        return _j2k_siz(read_at, 0)
    if head != JP2_SIGNATURE:
        raise damaged("neither a JPEG 2000 codestream nor a JP2 file")
    pos = 0
    for _ in range(MAX_JP2_BOXES):
        box = _exact(read_at, pos, 8, "JP2 box")
        length, kind = struct.unpack(">I4s", box)
        header = 8
        if length == 1:
            (length,) = struct.unpack(">Q", _exact(read_at, pos + 8, 8, "JP2 box"))
            header = 16
        if kind == b"jp2c":
            return _j2k_siz(read_at, pos + header)
        if length < header:  # 0 means "to the end": only allowed for the last box
            break
        pos += length
    raise damaged("JP2 file without a codestream box")


def _j2k_siz(read_at: ReadAt, start: int) -> ImageHeader:
    head = _exact(read_at, start, 6, "JPEG 2000 SIZ")
    if head[:4] != J2K_START:
        raise damaged("JPEG 2000 codestream does not start with SOC and SIZ")
    (length,) = struct.unpack(">H", head[4:6])
    body = _exact(read_at, start + 6, max(length - 2, 0), "JPEG 2000 SIZ")
    if len(body) < 39:  # Rsiz, 8 sizes and offsets, Csiz, then 3 bytes per component
        raise damaged(f"JPEG 2000 SIZ of length {length}")
    x, y, x0, y0, tile_w, tile_h, tile_x0, tile_y0, components = struct.unpack(
        ">IIIIIIIIH", body[2:36]
    )
    if not (x0 < x and y0 < y and tile_w and tile_h and 0 < components <= 16384):
        raise damaged(f"JPEG 2000 SIZ {x}x{y} from {x0},{y0}, {components} components")
    if tile_x0 > x0 or tile_y0 > y0 or len(body) < 36 + 3 * components:
        raise damaged("JPEG 2000 SIZ tile origin or component list")
    tiles = -(-(x - tile_x0) // tile_w) * -(-(y - tile_y0) // tile_h)
    if tiles > MAX_J2K_TILES:
        raise damaged(f"JPEG 2000 codestream of {tiles} tiles")
    described = body[36 : 36 + 3 * components]
    if any(described[i + 1] == 0 or described[i + 2] == 0 for i in range(0, len(described), 3)):
        raise damaged("JPEG 2000 component subsampling of 0")
    bits = max((described[i] & 0x7F) + 1 for i in range(0, len(described), 3))
    return ImageHeader("j2k", x - x0, y - y0, components, bits)


READERS: dict[str, Callable[[ReadAt], ImageHeader]] = {
    "png": png_header,
    "jpeg": jpeg_header,
    "tiff": tiff_header,
    "j2k": j2k_header,
}


def check_size(header: ImageHeader, limits: ImageLimits | int, encoded_bytes: int = 0) -> None:
    """Refuse what no decoder should be asked to allocate, in words a nurse can read."""
    limits = ImageLimits.of(limits)
    width, height = header.width, header.height
    if header.pixels > limits.max_pixels or header.block_pixels > limits.max_pixels:
        raise UnsupportedFileError(
            f"The image is {width} × {height} pixels, far larger than any X-ray or "
            "photograph; it was not imported."
        )
    if min(width, height) < MIN_SIDE:
        raise UnsupportedFileError(f"The image is only {width} × {height} pixels: too small.")
    if not 0 < header.samples <= 4 or not 0 < header.bits <= 32:
        raise damaged(f"{header.kind}: {header.samples} samples of {header.bits} bits")
    check_memory(width, height, header.samples, header.bits, limits, encoded_bytes=encoded_bytes)


def check_memory(
    width: int,
    height: int,
    samples: int,
    bits: int,
    limits: ImageLimits,
    float64_step: bool = False,
    copies: int = 1,
    encoded_bytes: int = 0,
) -> None:
    """Refuse an image whose decoding would need more than ``max_decode_mb``: a colour
    photo of 9000 x 9000 is within ``max_image_pixels`` but needs 1.4 GB to decode."""
    need = decode_memory(width * height, samples, bits, float64_step, copies, encoded_bytes)
    if need > limits.max_decode_bytes:
        raise UnsupportedFileError(
            f"The image is too large to process safely ({width} × {height} pixels); "
            "it was not imported.",
            detail=f"decoding needs about {need // MB} MB, {limits.max_decode_bytes // MB} MB"
            " allowed",
        )
