"""Header readers (PNG IHDR, JPEG SOF, TIFF/BigTIFF IFD, JPEG 2000 SIZ) and the DICOM
codestream agreement, on real files and on crafted lies: nothing is decoded."""

from __future__ import annotations

import struct
import warnings
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from crafted import (
    bigtiff_header,
    dicom_image,
    png_bomb,
    saved,
    small_bigtiff,
    small_j2k,
    small_jpeg,
    tiff_bomb,
    with_j2k_size,
    with_jpeg_size,
)
from helpers import FUNDUS_DIR, TESTS, testdata
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from appliance.errors import DecodeError, IngestError, UnsupportedFileError
from appliance.ingest import headers
from appliance.ingest.dicom import check_image_dataset, read_dicom
from appliance.ingest.raster import check_raster
from appliance.ingest.sniff import sniff

MAX = 100_000_000


def header_of(raw: bytes, kind: str) -> headers.ImageHeader:
    return headers.READERS[kind](headers.from_bytes(raw))


def encoded(extension: str, shape: tuple, dtype=np.uint8) -> bytes:
    return cv2.imencode(extension, np.zeros(shape, dtype))[1].tobytes()


# (file bytes, reader, expected (width, height, samples, bits)): real encoders' output.
REAL = [
    pytest.param(lambda: (FUNDUS_DIR / "IDRiD_003.jpg").read_bytes(), "jpeg", (1429, 949, 3, 8)),
    pytest.param(
        lambda: next((TESTS / "data" / "cxr64").glob("*.png")).read_bytes(), "png", (64, 64, 1, 8)
    ),
    pytest.param(lambda: encoded(".png", (30, 40, 3), np.uint16), "png", (40, 30, 3, 16)),
    pytest.param(lambda: encoded(".tif", (300, 200)), "tiff", (200, 300, 1, 8)),
    pytest.param(lambda: encoded(".tif", (30, 20, 3), np.uint16), "tiff", (20, 30, 3, 16)),
    pytest.param(small_bigtiff, "tiff", (32, 32, 1, 8)),
    pytest.param(small_j2k, "j2k", (64, 64, 1, 8)),
]


@pytest.mark.parametrize(("make", "kind", "expected"), REAL)
def test_each_reader_agrees_with_the_decoder_on_real_files(make, kind, expected):
    raw = make()
    header = header_of(raw, kind)
    assert (header.width, header.height, header.samples, header.bits) == expected
    if kind != "j2k":  # what OpenCV decodes has the size the header said
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (expected[1], expected[0])


def test_a_jp2_file_is_read_through_its_codestream_box():
    codestream = small_j2k(40)
    ihdr = b"ihdr" + struct.pack(">IIHBBBB", 40, 40, 1, 7, 7, 0, 0)
    jp2h = struct.pack(">I", 8 + 8 + len(ihdr) - 4) + b"jp2h" + struct.pack(">I", len(ihdr) + 4)
    jp2 = (
        headers.JP2_SIGNATURE
        + struct.pack(">I4s4sI4s", 20, b"ftyp", b"jp2 ", 0, b"jp2 ")
        + jp2h
        + ihdr
        + struct.pack(">I", 8 + len(codestream))
        + b"jp2c"
        + codestream
    )
    assert header_of(jp2, "j2k").pixels == 40 * 40


@pytest.mark.parametrize(
    ("raw", "kind", "side"),
    [
        (tiff_bomb(20000, 20000), "tiff", 20000),
        (tiff_bomb(30000, 30000, 3, 16), "tiff", 30000),
        (bigtiff_header(30000, 30000), "tiff", 30000),
        (with_jpeg_size(small_jpeg(64), 30000, 30000), "jpeg", 30000),
        (with_j2k_size(small_j2k(), 40000, 40000), "j2k", 40000),
    ],
    ids=["tiff", "tiff-rgb16", "bigtiff", "jpeg", "j2k"],
)
def test_bombs_are_refused_from_their_headers(raw, kind, side):
    with pytest.raises(UnsupportedFileError) as refused:
        headers.check_size(header_of(raw, kind), MAX)
    assert refused.value.reason.startswith(f"The image is {side} × {side} pixels")


def test_a_png_bomb_is_refused_reading_29_bytes():
    bomb = png_bomb(12000, 12000)
    read = []

    def read_at(offset, size):
        read.append(size)
        return bomb[offset : offset + size]

    with pytest.raises(UnsupportedFileError):
        headers.check_size(headers.png_header(read_at), MAX)
    assert sum(read) == 29


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xd8\xff\xda\x00\x02" + bytes(10),  # scan before any frame header
        with_jpeg_size(small_jpeg(64), 64, 0),  # height left to a DNL segment
        b"\xff\xd8" + b"\xff\xe0\x00\x01" * 3,  # segment length below 2
        small_jpeg(64)[:20],  # cut off before the frame header
    ],
)
def test_broken_jpeg_headers_are_damaged(raw):
    with pytest.raises(DecodeError):
        headers.jpeg_header(headers.from_bytes(raw))


def test_tiff_tiles_and_directories_are_bounded():
    tiled = bytearray(encoded(".tif", (64, 64)))
    # A directory claiming 60000 entries, and tile sizes beyond any image.
    with pytest.raises(DecodeError):
        headers.tiff_header(headers.from_bytes(b"II*\x00\x08\x00\x00\x00\x60\xea" + bytes(20)))
    entries = b"".join(
        struct.pack("<HHII", tag, 4, 1, value)
        for tag, value in ((256, 64), (257, 64), (322, 65536), (323, 65536))
    )
    tiled = b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 4) + entries + bytes(4)
    with pytest.raises(UnsupportedFileError):
        headers.check_size(headers.tiff_header(headers.from_bytes(tiled)), MAX)


def test_a_j2k_codestream_of_millions_of_tiles_is_damaged():
    siz = bytearray(small_j2k())
    struct.pack_into(">II", siz, 24, 1, 1)  # 64 x 64 tiles of one pixel: 4096 tiles, fine
    assert header_of(bytes(siz), "j2k").pixels == 64 * 64
    big = bytearray(with_j2k_size(small_j2k(), 9000, 9000))
    struct.pack_into(">II", big, 24, 16, 16)  # 9000 x 9000 in 16 x 16 tiles: 317 k tiles
    with pytest.raises(DecodeError):
        header_of(bytes(big), "j2k")


def test_bigtiff_is_recognised_as_tiff():
    assert sniff(small_bigtiff()[:512]) == "tiff"
    assert check_raster(small_bigtiff(), "tiff", MAX) == (32, 32)


def test_check_raster_reads_a_file_without_loading_it(tmp_path: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(20000, 20000))
    with open(path, "rb") as fh, pytest.raises(UnsupportedFileError):
        check_raster(fh, "png", MAX)


# -- DICOM: the codestream must agree with Rows, Columns and Samples per Pixel ---------


def dicom_file(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "image.dcm"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("from_file", [False, True], ids=["bytes", "file"])
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda: dicom_image(
                encapsulate([with_jpeg_size(small_jpeg(), 30000, 30000)]),
                rows=512,
                columns=512,
                syntax=JPEGBaseline8Bit,
            ),
            "30000 × 30000",
        ),
        (
            lambda: dicom_image(
                encapsulate([with_jpeg_size(small_jpeg(), 600, 512)]),
                rows=512,
                columns=512,
                syntax=JPEGBaseline8Bit,
            ),
            "damaged",
        ),
        (
            lambda: dicom_image(
                encapsulate([with_j2k_size(small_j2k(), 40000, 40000)]),
                rows=64,
                columns=64,
                syntax=JPEG2000Lossless,
            ),
            "40000 × 40000",
        ),
        (
            lambda: dicom_image(
                encapsulate([small_j2k()]), rows=64, columns=64, samples=3, syntax=JPEG2000Lossless
            ),
            "damaged",
        ),
        (
            lambda: dicom_image(bytes(64 * 64), rows=64, columns=64, frames=100_000),
            "100000 frames",
        ),
        (
            lambda: dicom_image(bytes(64 * 64 * 3), rows=64, columns=64, frames=5),
            "incomplete",
        ),
        (
            lambda: dicom_image(
                encapsulate([small_j2k()] * 2),
                rows=64,
                columns=64,
                frames=3,
                syntax=JPEG2000Lossless,
            ),
            "damaged",
        ),
        (
            lambda: dicom_image(
                encapsulate([struct.pack("<I", 3) + bytes(60) + bytes(100)]),
                rows=64,
                columns=64,
                syntax=RLELossless,
            ),
            "damaged",
        ),
    ],
    ids=[
        "jpeg-sof-30000",
        "jpeg-sof-disagrees",
        "j2k-siz-40000",
        "j2k-samples-disagree",
        "100000-frames",
        "frames-without-pixels",
        "more-frames-than-fragments",
        "rle-segments-disagree",
    ],
)
def test_dicom_lies_are_refused_before_decoding(tmp_path, make, reason, from_file):
    raw = saved(make())
    source = dicom_file(tmp_path, raw) if from_file else raw
    with pytest.raises(IngestError) as refused:
        check_image_dataset(read_dicom(source), MAX)
    assert reason in refused.value.reason.lower() or reason in refused.value.reason


def pydicom_encapsulated_files() -> list[Path]:
    """Every compressed DICOM file of pydicom's and pydicom-data's test sets."""
    folders = {testdata("RG1_J2KI.dcm").parent, testdata("SC_rgb_jpeg_dcmtk.dcm").parent}
    found = []
    for folder in sorted(folders):
        for path in sorted(folder.glob("*.dcm")):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if syntax is not None and syntax.is_encapsulated and ds.get("Rows"):
                found.append(path)
    return found


def test_real_compressed_files_pass_the_checks_they_can_decode_under():
    """No false refusal: every compressed test file pydicom can decode agrees with itself."""
    checked = 0
    for path in pydicom_encapsulated_files():
        try:  # files pydicom itself warns about or cannot decode are broken on purpose
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ds = pydicom.dcmread(path)
                ds.pixel_array  # noqa: B018
        except Exception:
            continue
        frames = int(ds.get("NumberOfFrames") or 1)
        if int(ds.Rows) < 16 or int(ds.Columns) < 16 or frames > 1000:
            continue
        for source in (path.read_bytes(), path):
            check_image_dataset(read_dicom(source), MAX)  # must not raise
        checked += 1
    assert checked >= 30


def test_a_multiframe_first_frame_is_found_through_the_offset_table(tmp_path):
    ds = pydicom.dcmread(testdata("SC_rgb_rle_2frame.dcm"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    ds.PixelData = encapsulate(frames, has_bot=True)
    buffer = BytesIO()
    ds.save_as(buffer)
    check_image_dataset(read_dicom(dicom_file(tmp_path, buffer.getvalue())), MAX)


def test_a_colour_photo_that_fits_the_pixel_cap_but_not_the_memory_is_refused():
    """A 77 KB JPEG declaring 9000 x 9000 colour: within max_image_pixels (81 < 100 MP),
    but decoding it took 2.1 GB. The estimate from its header refuses it first."""
    photo = cv2.imencode(".jpg", np.random.default_rng(3).integers(0, 255, (64, 64, 3), np.uint8))
    lie = with_jpeg_size(photo[1].tobytes(), 9000, 9000)
    with pytest.raises(UnsupportedFileError) as refused:
        check_raster(lie, "jpeg", headers.ImageLimits())
    assert refused.value.reason.startswith("The image is too large to process safely")
    assert "9000 × 9000" in refused.value.reason


MEASURE = """
import sys
from pathlib import Path
from appliance.ingest.decode import decode_file
def peak():
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024
decode_file(Path(sys.argv[1]), 10**9)  # warm up: imports, decoder plugins
before = peak()
decode_file(Path(sys.argv[2]), 10**9)
print(peak() - before)
"""


@pytest.mark.parametrize(
    ("make", "estimate"),
    [
        (
            lambda: cv2.imencode(
                ".png", np.random.default_rng(1).integers(0, 255, (3000, 2500, 3), np.uint8)
            )[1],
            headers.decode_memory(3000 * 2500, 3, 8, encoded_bytes=3000 * 2500 * 3),
        ),
        (
            lambda: cv2.imencode(".jpg", np.full((3000, 4000, 3), (10, 80, 200), np.uint8))[1],
            headers.decode_memory(3000 * 4000, 3, 8, encoded_bytes=100_000),
        ),
        (
            lambda: saved(
                dicom_image(
                    np.random.default_rng(2).integers(0, 4095, (3000, 3000), np.uint16).tobytes(),
                    rows=3000,
                    columns=3000,
                    bits=16,
                )
            ),
            headers.decode_memory(3000 * 3000, 1, 16, encoded_bytes=3000 * 3000 * 2),
        ),
    ],
    ids=["png-rgb", "jpeg-rgb", "dicom-grey16"],
)
def test_the_memory_estimate_is_not_below_what_decoding_takes(tmp_path, make, estimate):
    import subprocess
    import sys

    warm = tmp_path / "warm.png"
    warm.write_bytes(encoded(".png", (32, 32, 3)))
    target = tmp_path / "image"
    data = make()
    target.write_bytes(data if isinstance(data, bytes) else data.tobytes())
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(warm), str(target)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    measured = int(done.stdout)
    assert 0.6 * estimate < measured <= estimate, (measured >> 20, estimate >> 20)
