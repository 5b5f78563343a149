"""Read a DICOM file's header, check it holds a usable image, and describe it.

These checks are cheap (no pixel decoding) so the DICOM listener can run them before it
answers the sender: a file that fails here is refused (0xC210) and kept in quarantine.
Read from a path, the pixel data stays on disk: only the first frame's codestream header
(JPEG SOF, JPEG 2000 SIZ, RLE header) is read, and it must agree with Rows, Columns and
Samples per Pixel -- the decoder believes the codestream, not the tags.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from appliance.errors import DecodeError, UnsupportedFileError
from appliance.ingest import headers
from appliance.store.images import ImageRecord

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
ENCAPSULATED_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
MIN_SIDE = 16
DEFAULT_MAX_BYTES = headers.ImageLimits().max_bytes
# Read from a file, values larger than this (the pixel data) stay on disk.
DEFER_BYTES = 64 * 1024
# A frame may be split into fragments; more than this many is a crafted file.
MAX_FRAGMENTS = 100_000

INCOMPLETE = "The file is incomplete (cut off while copying or sending). Copy or send it again."
DAMAGED = "The DICOM file is damaged and cannot be read. Send or copy it again."

RLE = "1.2.840.10008.1.2.5"
# The codestream inside each frame, by transfer syntax: what headers.py reads.
CODESTREAMS = {
    "1.2.840.10008.1.2.4.50": "jpeg",  # baseline
    "1.2.840.10008.1.2.4.51": "jpeg",  # extended
    "1.2.840.10008.1.2.4.57": "jpeg",  # lossless
    "1.2.840.10008.1.2.4.70": "jpeg",  # lossless SV1
    "1.2.840.10008.1.2.4.80": "jpeg",  # JPEG-LS lossless (SOF55)
    "1.2.840.10008.1.2.4.81": "jpeg",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "j2k",
    "1.2.840.10008.1.2.4.91": "j2k",
    "1.2.840.10008.1.2.4.92": "j2k",
    "1.2.840.10008.1.2.4.93": "j2k",
    "1.2.840.10008.1.2.4.201": "j2k",  # HTJ2K
    "1.2.840.10008.1.2.4.202": "j2k",
    "1.2.840.10008.1.2.4.203": "j2k",
}

# Tags that make pydicom compute a grey image's values in float64 (headers.decode_memory).
_FLOAT64_TAGS = ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "VOILUTSequence")
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
_SEQUENCE_END = b"\xfe\xff\xdd\xe0"  # (FFFE,E0DD)


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def read_dicom(source: bytes | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Dataset:
    """Parse a DICOM file's elements. From a path, the pixel data is not read into memory.

    ``max_bytes`` bounds a deflated dataset once unpacked: pydicom inflates it whole.
    """
    in_memory = not isinstance(source, Path)
    if (len(source) if in_memory else source.stat().st_size) == 0:
        raise UnsupportedFileError("The file is empty (0 bytes). Copy or send it again.")
    # pydicom reports a file cut off mid-element with a warning, not an error; record
    # warnings here so the outcome is the same whatever the process's warning filters.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with BytesIO(source) if in_memory else open(source, "rb") as fh:
                deflated = _refuse_deflate_bomb(fh, max_bytes)
                fh.seek(0)
                # A deflated dataset is read from an unpacked copy in memory, whose
                # offsets are not the file's: nothing of it can be left on disk.
                defer = None if in_memory or deflated else DEFER_BYTES
                ds = pydicom.dcmread(fh, force=True, defer_size=defer)
                # Touch the main dataset so a broken tag surfaces here, not later.
                ds.get("SOPClassUID")
                if defer is None:
                    ds.get("PixelData")
        except (InvalidDicomError, EOFError) as exc:
            raise DecodeError(INCOMPLETE, detail=str(exc)) from exc
        except UnsupportedFileError:
            raise
        except Exception as exc:  # pydicom raises many types on broken input
            raise DecodeError(DAMAGED, detail=f"{type(exc).__name__}: {exc}") from exc
    for warning in caught:
        if "end of file" in str(warning.message).lower():
            raise DecodeError(INCOMPLETE, detail=str(warning.message))
    if defer is not None:
        ds.filename = str(source)  # deferred values are read from here
    if len(ds) == 0:
        raise DecodeError(INCOMPLETE, detail="no data elements after the header")
    if not ds.get("SOPClassUID") and "PixelData" not in ds:
        raise UnsupportedFileError("This DICOM file holds no image.")
    return ds


def _refuse_deflate_bomb(fh, max_bytes: int) -> bool:
    """A deflated dataset is unpacked whole by pydicom: measure it first, keeping nothing.

    1 MB of deflate can unpack to a gigabyte; the unpacked dataset is held to the same
    limit as any file the box accepts. Returns whether the dataset is deflated."""
    read_preamble(fh, True)
    # pydicom has no public reader for the meta group alone that leaves the file at the
    # dataset; this one is what dcmread itself calls.
    from pydicom.filereader import _read_file_meta_info

    meta = _read_file_meta_info(fh)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return False
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while (chunk := fh.read(1 << 20)) and not inflater.eof:
        while chunk:
            total += len(inflater.decompress(chunk, 1 << 20))
            if total > max_bytes:
                raise UnsupportedFileError(
                    "Unpacked, this DICOM file would be larger than the "
                    f"{max_bytes // (1024 * 1024)} MB limit for one image."
                )
            chunk = inflater.unconsumed_tail
    return True


def check_image_dataset(ds: Dataset, limits: headers.ImageLimits | int) -> None:
    """Raise an ``IngestError`` with a nurse-readable reason unless ``ds`` is a usable image
    that can be decoded within ``limits`` (an int: ``max_image_pixels``)."""
    limits = headers.ImageLimits.of(limits)
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class.startswith(SR_PREFIX):
        raise UnsupportedFileError("This is a DICOM structured report (text), not an image.")
    if sop_class.startswith(ENCAPSULATED_DOCUMENT_PREFIX):
        raise UnsupportedFileError(
            "This DICOM file holds a document (such as a PDF), not an image."
        )
    if "PixelData" not in ds:
        name = getattr(ds.get("SOPClassUID"), "name", "") or "unknown kind"
        raise UnsupportedFileError(f"This DICOM file holds no image ({name}).")

    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 0)
    frames = int(ds.get("NumberOfFrames") or 1)
    if rows < 1 or cols < 1 or bits not in (1, 8, 16, 32) or samples not in (1, 3) or frames < 1:
        raise DecodeError(
            "The image description in this DICOM file is missing or invalid.",
            detail=f"rows={rows} columns={cols} bits={bits} samples={samples} frames={frames}",
        )
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise UnsupportedFileError(f"The image is only {cols} × {rows} pixels: too small.")
    if rows * cols > limits.max_pixels:
        raise UnsupportedFileError(
            f"The image is {cols} × {rows} pixels, far larger than any X-ray or photograph; "
            "it was not imported."
        )
    if frames > limits.max_frames:
        raise UnsupportedFileError(
            f"The image has {frames} frames, more than the {limits.max_frames} the box "
            "accepts; it was not imported."
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    palette = photometric == "PALETTE COLOR"  # one sample in, three out
    tsyntax = transfer_syntax(ds)
    with _pixel_data(ds) as (read_at, size):
        # The decoder reads one frame's share of the pixel data (a deflated dataset is
        # unpacked whole, in memory).
        encoded = size if tsyntax == DeflatedExplicitVRLittleEndian else size // frames
        headers.check_memory(
            cols,
            rows,
            3 if palette else samples,
            bits,
            limits,
            float64_step=samples == 1 and not palette and any(k in ds for k in _FLOAT64_TAGS),
            copies=2 if palette or photometric.startswith("YBR") else 1,
            encoded_bytes=encoded,
        )
        if tsyntax is not None and tsyntax.is_encapsulated:
            first_frame = _first_frame(read_at, size, frames, str(tsyntax))
            _check_codestream(first_frame, str(tsyntax), (cols, rows, samples, bits), limits)
            return
    expected = (rows * cols * samples * bits * frames + 7) // 8
    if photometric == "YBR_FULL_422":
        expected = expected * 2 // 3  # chroma stored at half horizontal resolution
    if size < expected:
        raise DecodeError(
            INCOMPLETE, detail=f"pixel data {size} bytes, {frames} frame(s) need {expected}"
        )


@contextmanager
def _pixel_data(ds: Dataset) -> Iterator[tuple[headers.ReadAt, int]]:
    """``read_at`` over the Pixel Data value and its size, reading a deferred value (one
    left on disk by ``read_dicom``) from the file instead of loading it."""
    element = ds.get_item("PixelData", keep_deferred=True)
    if getattr(element, "value", b"") is None and ds.filename:
        with open(ds.filename, "rb") as fh:
            fh.seek(0, 2)
            start = element.value_tell
            size = fh.tell() - start
            if element.length != 0xFFFFFFFF:
                size = min(size, element.length)
            read = headers.from_file(fh)
            yield (lambda offset, n: read(start + offset, max(0, min(n, size - offset)))), size
        return
    value = ds.PixelData
    yield headers.from_bytes(value), len(value)


def _first_frame(read_at: headers.ReadAt, size: int, frames: int, tsyntax: str) -> headers.ReadAt:
    """The first frame of encapsulated pixel data, after checking the fragments add up."""
    table, fragments = _fragments(read_at, size)
    if not fragments or fragments[0][1] == 0:
        raise DecodeError(INCOMPLETE, detail="no compressed frame found")
    if frames > len(fragments):  # every frame is at least one fragment (PS3.5 A.4)
        raise DecodeError(DAMAGED, detail=f"{frames} frames in {len(fragments)} fragments")
    if tsyntax != RLE:
        # JPEG, JPEG-LS and JPEG 2000 streams all end with the marker FF D9; a frame cut
        # off in transit or while copying does not. Encoders pad to even length with 00
        # or FF, so look at the last few bytes.
        offset, length = fragments[-1]
        if b"\xff\xd9" not in read_at(offset + max(0, length - 4), min(4, length)):
            raise DecodeError(INCOMPLETE, detail="compressed frame has no end marker")
    if frames == 1:
        first = fragments
    elif len(table) > 1:  # offsets count from the first fragment's item tag
        origin = fragments[0][0] - 8
        first = [f for f in fragments if f[0] - 8 - origin < table[1]]
    else:
        first = fragments[:1]
    return headers.from_segments(read_at, first)


def _fragments(read_at: headers.ReadAt, size: int) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """(basic offset table, [(offset, length) of each fragment]) from the item headers."""
    head = read_at(0, 8)
    if len(head) < 8 or head[:4] != _ITEM:
        raise DecodeError(INCOMPLETE, detail="encapsulated pixel data without an offset table")
    (table_length,) = struct.unpack("<I", head[4:])
    if table_length % 4 or 8 + table_length > size:
        raise DecodeError(DAMAGED, detail=f"basic offset table of {table_length} bytes")
    table = struct.unpack(f"<{table_length // 4}I", read_at(8, table_length))
    pos, fragments = 8 + table_length, []
    while pos < size:
        head = read_at(pos, 8)
        if head[:4] == _SEQUENCE_END:
            break
        if len(head) < 8 or head[:4] != _ITEM:
            raise DecodeError(DAMAGED, detail=f"no fragment item at byte {pos} of pixel data")
        (length,) = struct.unpack("<I", head[4:])
        if pos + 8 + length > size:
            raise DecodeError(INCOMPLETE, detail="a fragment runs past the end of the file")
        fragments.append((pos + 8, length))
        if len(fragments) > MAX_FRAGMENTS:
            raise DecodeError(DAMAGED, detail=f"more than {MAX_FRAGMENTS} fragments")
        pos += 8 + length
    return table, fragments


def _check_codestream(
    frame: headers.ReadAt,
    tsyntax: str,
    described: tuple[int, int, int, int],
    limits: headers.ImageLimits,
) -> None:
    """The decoder sizes its output from the codestream: it must agree with the tags."""
    cols, rows, samples, bits = described
    if tsyntax == RLE:  # a 64-byte header: the number of segments, then their offsets
        head = frame(0, 64)
        segments = int.from_bytes(head[:4], "little")
        if len(head) < 64 or segments != samples * max(1, bits // 8):
            raise DecodeError(DAMAGED, detail=f"RLE header with {segments} segments")
        return
    kind = CODESTREAMS.get(tsyntax)
    if kind is None:  # a syntax no installed decoder reads: decoding will refuse it
        return
    try:
        header = headers.READERS[kind](frame)
    except DecodeError as exc:
        raise DecodeError(DAMAGED, detail=exc.detail) from exc
    headers.check_size(header, limits)
    if (header.width, header.height, header.samples) != (cols, rows, samples):
        raise DecodeError(
            DAMAGED,
            detail=f"{kind} codestream is {header.width}x{header.height}x{header.samples},"
            f" Rows/Columns/SamplesPerPixel say {cols}x{rows}x{samples}",
        )


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def dicom_record(
    ds: Dataset,
    *,
    sha256: str,
    size_bytes: int,
    source: str,
    source_detail: str = "",
    original_name: str = "",
) -> ImageRecord:
    tsyntax = transfer_syntax(ds)
    sop_uid = _text(ds, "SOPInstanceUID")
    study_uid = _text(ds, "StudyInstanceUID") or f"2.25.{int(sha256[:30], 16)}"
    return ImageRecord(
        sha256=sha256,
        size_bytes=size_bytes,
        file_format="dicom",
        source=source,
        source_detail=source_detail,
        original_name=original_name,
        study_instance_uid=study_uid,
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=sop_uid,
        sop_class_uid=_text(ds, "SOPClassUID"),
        transfer_syntax_uid=str(tsyntax) if tsyntax else None,
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_age=_text(ds, "PatientAge"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber"),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        rows=int(ds.get("Rows") or 0) or None,
        columns=int(ds.get("Columns") or 0) or None,
        frames=int(ds.get("NumberOfFrames") or 1),
    )
