"""Read a DICOM file's header, check it holds a usable image, and describe it.

These checks are cheap (no pixel decoding) so the DICOM listener can run them before it
answers the sender: a file that fails here is refused (0xC210) and kept in quarantine.
"""

from __future__ import annotations

import warnings
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from appliance.errors import DecodeError, UnsupportedFileError
from appliance.store.images import ImageRecord

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
ENCAPSULATED_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
MIN_SIDE = 16

INCOMPLETE = "The file is incomplete (cut off while copying or sending). Copy or send it again."
DAMAGED = "The DICOM file is damaged and cannot be read. Send or copy it again."


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def read_dicom(raw: bytes) -> Dataset:
    if not raw:
        raise UnsupportedFileError("The file is empty (0 bytes). Copy or send it again.")
    # pydicom reports a file cut off mid-element with a warning, not an error; record
    # warnings here so the outcome is the same whatever the process's warning filters.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(BytesIO(raw), force=True)
            # Touch the main dataset so a broken tag surfaces here, not later.
            ds.get("SOPClassUID")
            ds.get("PixelData")
        except (InvalidDicomError, EOFError) as exc:
            raise DecodeError(INCOMPLETE, detail=str(exc)) from exc
        except Exception as exc:  # pydicom raises many types on broken input
            raise DecodeError(DAMAGED, detail=f"{type(exc).__name__}: {exc}") from exc
    for warning in caught:
        if "end of file" in str(warning.message).lower():
            raise DecodeError(INCOMPLETE, detail=str(warning.message))
    if len(ds) == 0:
        raise DecodeError(INCOMPLETE, detail="no data elements after the header")
    if not ds.get("SOPClassUID") and "PixelData" not in ds:
        raise UnsupportedFileError("This DICOM file holds no image.")
    return ds


def check_image_dataset(ds: Dataset, max_pixels: int) -> None:
    """Raise an ``IngestError`` with a nurse-readable reason unless ``ds`` is a usable image."""
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
    if rows < 1 or cols < 1 or bits not in (1, 8, 16, 32) or samples not in (1, 3):
        raise DecodeError(
            "The image description in this DICOM file is missing or invalid.",
            detail=f"rows={rows} columns={cols} bits={bits} samples={samples}",
        )
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise UnsupportedFileError(f"The image is only {cols} × {rows} pixels: too small.")
    if rows * cols > max_pixels:
        raise UnsupportedFileError(
            f"The image is {cols} × {rows} pixels, far larger than any X-ray or photograph; "
            "it was not imported."
        )

    tsyntax = transfer_syntax(ds)
    if tsyntax is not None and tsyntax.is_encapsulated:
        _check_encapsulated(ds.PixelData, frames, str(tsyntax))
    else:
        expected = rows * cols * samples * bits // 8
        if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
            expected = expected * 2 // 3  # chroma stored at half horizontal resolution
        if len(ds.PixelData) < expected:
            raise DecodeError(
                INCOMPLETE, detail=f"pixel data {len(ds.PixelData)} bytes, frame needs {expected}"
            )


def _check_encapsulated(pixel_data: bytes, frames: int, tsyntax: str) -> None:
    try:
        all_frames = list(generate_frames(pixel_data, number_of_frames=frames))
    except Exception as exc:
        raise DecodeError(INCOMPLETE, detail=f"fragments: {exc}") from exc
    if not all_frames or not all_frames[0]:
        raise DecodeError(INCOMPLETE, detail="no compressed frame found")
    if tsyntax == "1.2.840.10008.1.2.5":  # RLE: a 64-byte header, 1..15 segments
        segments = int.from_bytes(all_frames[0][:4], "little")
        if len(all_frames[0]) < 64 or not 1 <= segments <= 15:
            raise DecodeError(DAMAGED, detail="RLE header invalid")
        return
    # JPEG, JPEG-LS and JPEG 2000 streams all end with the marker FF D9; a frame cut off
    # in transit or while copying does not.
    # Encoders pad to even length with 00 or FF, so look at the last few bytes.
    if b"\xff\xd9" not in all_frames[-1][-4:]:
        raise DecodeError(INCOMPLETE, detail="compressed frame has no end marker")


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
