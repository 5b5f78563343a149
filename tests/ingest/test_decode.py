"""Decoding real radiographs and photographs in every transfer syntax the box accepts.

The transcoded copies of RG1 are made with dcmtk's own tools (dcmcjpeg, dcmcjpls,
dcmcrle, dcmconv), so the decoder is checked against another implementation's output.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from helpers import FUNDUS_DIR, require_tool, testdata

from appliance.errors import DecodeError, UnsupportedFileError
from appliance.ingest.decode import decode_bytes

RG1 = "RG1_UNCR.dcm"


@pytest.fixture(scope="module")
def rg1_reference() -> np.ndarray:
    return decode_bytes(testdata(RG1).read_bytes()).pixels


@pytest.fixture(scope="module")
def transcoded(tmp_path_factory) -> dict[str, Path]:
    """RG1 in each lossless syntax, written by dcmtk."""
    out = tmp_path_factory.mktemp("rg1")
    source = testdata(RG1)
    commands = {
        "1.2.840.10008.1.2": ["dcmconv", "+ti"],  # implicit VR little endian
        "1.2.840.10008.1.2.1.99": ["dcmconv", "+td"],  # deflated
        "1.2.840.10008.1.2.4.70": ["dcmcjpeg", "+e1"],  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.57": ["dcmcjpeg", "+el"],  # JPEG lossless, process 14
        "1.2.840.10008.1.2.4.80": ["dcmcjpls", "+el"],  # JPEG-LS lossless
        "1.2.840.10008.1.2.5": ["dcmcrle"],  # RLE
    }
    made = {}
    for uid, command in commands.items():
        require_tool(command[0])
        target = out / f"{uid}.dcm"
        subprocess.run([*command, str(source), str(target)], check=True, capture_output=True)
        assert (
            str(pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID) == uid
        )
        made[uid] = target
    made["1.2.840.10008.1.2.4.90"] = testdata("RG1_J2KR.dcm")
    return made


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.90",
    ],
)
def test_lossless_syntaxes_decode_to_the_identical_image(transcoded, rg1_reference, uid):
    decoded = decode_bytes(transcoded[uid].read_bytes())
    assert decoded.transfer_syntax_uid == uid
    assert decoded.pixels.shape == rg1_reference.shape == (1955, 1841)
    np.testing.assert_array_equal(decoded.pixels, rg1_reference)


def test_lossy_jpeg2000_is_close(rg1_reference):
    lossy = decode_bytes(testdata("RG1_J2KI.dcm").read_bytes()).pixels
    difference = np.abs(lossy - rg1_reference)
    assert difference.mean() < 0.005
    assert np.corrcoef(lossy[::8, ::8].ravel(), rg1_reference[::8, ::8].ravel())[0, 1] > 0.99


def test_monochrome1_chest_is_inverted_so_lungs_are_dark(rg1_reference):
    decoded = decode_bytes(testdata(RG1).read_bytes())
    assert decoded.photometric == "MONOCHROME1" and decoded.inverted and decoded.voi == "window"
    image = decoded.pixels
    h, w = image.shape
    lungs = np.concatenate(
        [
            image[int(h * 0.3) : int(h * 0.6), int(w * 0.2) : int(w * 0.35)].ravel(),
            image[int(h * 0.3) : int(h * 0.6), int(w * 0.65) : int(w * 0.8)].ravel(),
        ]
    )
    spine = image[int(h * 0.3) : int(h * 0.6), int(w * 0.47) : int(w * 0.53)]
    assert lungs.mean() < spine.mean() - 0.1
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.dtype == np.float32


def rg1_as(photometric: str, shape: str | None) -> bytes:
    """RG1's own pixels, labelled with this Photometric Interpretation and Presentation
    LUT Shape (None: no shape at all), as a device would send them."""
    from io import BytesIO

    ds = pydicom.dcmread(testdata(RG1))
    ds.PhotometricInterpretation = photometric
    if shape is not None:
        ds.PresentationLUTShape = shape
    buffer = BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "photometric, shape, shown",
    [
        # RG1's pixels are MONOCHROME1 (bright air): seen as sent, lungs come out dark.
        ("MONOCHROME1", None, "as_reference"),
        ("MONOCHROME1", "INVERSE", "as_reference"),  # the standard's pair: one inversion
        ("MONOCHROME1", "IDENTITY", "as_reference"),  # against the rule: MONOCHROME1 wins
        ("MONOCHROME2", "INVERSE", "as_reference"),  # "show me inverted": lungs dark again
        ("MONOCHROME2", "IDENTITY", "inverted"),  # taken as stored: air bright
        ("MONOCHROME2", None, "inverted"),
    ],
)
def test_presentation_lut_shape_inverse_is_honoured(rg1_reference, photometric, shape, shown):
    decoded = decode_bytes(rg1_as(photometric, shape))
    expected = rg1_reference if shown == "as_reference" else 1.0 - rg1_reference
    assert decoded.inverted is (shown == "as_reference")
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)


def test_ybr_is_converted_to_rgb():
    rgb = decode_bytes(testdata("SC_rgb.dcm").read_bytes())
    ybr = decode_bytes(testdata("SC_ybr_full_422_uncompressed.dcm").read_bytes())
    jpeg = decode_bytes(testdata("SC_rgb_jpeg_dcmtk.dcm").read_bytes())  # baseline, YBR inside
    assert rgb.is_colour and ybr.is_colour and jpeg.is_colour
    assert np.abs(ybr.pixels - rgb.pixels).mean() < 0.02
    assert np.abs(jpeg.pixels - rgb.pixels).mean() < 0.03
    # the red band at the top of the test pattern is red, not a YBR mix
    assert rgb.pixels[2, 50, 0] > 0.9 and rgb.pixels[2, 50, 1] < 0.1


def test_multiframe_takes_frame_one_and_says_so():
    decoded = decode_bytes(testdata("SC_rgb_rle_2frame.dcm").read_bytes())
    single = decode_bytes(testdata("SC_rgb_rle.dcm").read_bytes())
    assert decoded.frames_total == 2 and decoded.frame_used == 0
    np.testing.assert_array_equal(decoded.pixels, single.pixels)
    assert decoded.summary()["frames_total"] == 2


def test_other_syntaxes_decode():
    for name in (
        "JPGExtended.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPEG2000.dcm",
        "image_dfl.dcm",
        "MR_small_RLE.dcm",
    ):
        decoded = decode_bytes(testdata(name).read_bytes())
        assert decoded.pixels.ndim == 2 and np.isfinite(decoded.pixels).all(), name


def test_real_fundus_jpeg_decodes_as_rgb():
    decoded = decode_bytes((FUNDUS_DIR / "IDRiD_003.jpg").read_bytes())
    assert decoded.is_colour and decoded.pixels.shape == (949, 1429, 3)
    red, green, blue = (decoded.pixels[300:600, 500:900, c].mean() for c in range(3))
    assert red > green > blue  # a retina is orange-red, so RGB order is right


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert a minimal EXIF APP1 segment holding only the Orientation tag."""
    tiff = (
        b"MM\x00*\x00\x00\x00\x08"
        + b"\x00\x01"
        + b"\x01\x12\x00\x03\x00\x00\x00\x01"
        + orientation.to_bytes(2, "big")
        + b"\x00\x00"
        + b"\x00\x00\x00\x00"
    )
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def test_exif_orientation_is_honoured():
    photo = cv2.imread(str(FUNDUS_DIR / "hrf_12_h.jpg"))
    ok, encoded = cv2.imencode(".jpg", photo)
    rotated = decode_bytes(_with_exif_orientation(encoded.tobytes(), 6))  # 90° clockwise
    upright = decode_bytes(encoded.tobytes())
    assert upright.pixels.shape[:2] == (701, 1051)
    assert rotated.pixels.shape[:2] == (1051, 701)
    np.testing.assert_allclose(rotated.pixels, np.rot90(upright.pixels, k=-1), atol=0.02)


def test_png_16_bit_grey_keeps_its_depth(tmp_path):
    ramp = np.arange(256 * 64, dtype=np.uint16).reshape(64, 256) * 4
    ok, encoded = cv2.imencode(".png", ramp)
    decoded = decode_bytes(encoded.tobytes())
    assert not decoded.is_colour
    np.testing.assert_allclose(decoded.pixels, ramp / 65535.0, atol=1e-6)


def _truncated(name: str, fraction: float) -> bytes:
    raw = testdata(name).read_bytes()
    return raw[: int(len(raw) * fraction)]


def _without_pixels() -> bytes:
    from io import BytesIO

    ds = pydicom.dcmread(testdata("CT_small.dcm"))
    del ds.PixelData
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _absurd() -> bytes:
    from io import BytesIO

    ds = pydicom.dcmread(testdata("CT_small.dcm"))
    ds.Rows = ds.Columns = 60000
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize(
    "make, error, reason",
    [
        (lambda: b"", UnsupportedFileError, "empty"),
        (lambda: _truncated("RG1_UNCR.dcm", 0.5), DecodeError, "incomplete"),
        (lambda: _truncated("RG1_J2KR.dcm", 0.7), DecodeError, "incomplete"),
        (lambda: _truncated("RG1_UNCR.dcm", 0.01), DecodeError, "incomplete"),
        (lambda: (FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()[:30000], DecodeError, "incomplete"),
        (_without_pixels, UnsupportedFileError, "holds no image"),
        (lambda: testdata("test-SR.dcm").read_bytes(), UnsupportedFileError, "structured report"),
        (lambda: testdata("rtplan.dcm").read_bytes(), UnsupportedFileError, "holds no image"),
        (
            lambda: b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
            UnsupportedFileError,
            "PDF document",
        ),
        (_absurd, UnsupportedFileError, "far larger than any X-ray"),
        (lambda: b"Patient notes: cough for 3 weeks\n", UnsupportedFileError, "text file"),
        (lambda: bytes(range(256)) * 4, UnsupportedFileError, "not an image the box can read"),
    ],
)
def test_broken_inputs_get_a_plain_reason(make, error, reason):
    with pytest.raises(error) as caught:
        decode_bytes(make())
    assert reason in caught.value.reason


def test_jpeg2000_decodes_at_reduced_resolution_when_less_is_needed(rg1_reference):
    """glymur over the system's libopenjp2 skips the finest wavelet level."""
    pytest.importorskip("glymur")
    import time

    raw = testdata("RG1_J2KR.dcm").read_bytes()
    started = time.perf_counter()
    reduced = decode_bytes(raw, max_side=1024)
    reduced_s = time.perf_counter() - started
    started = time.perf_counter()
    full = decode_bytes(raw)
    full_s = time.perf_counter() - started
    if reduced.summary()["reduced_by"] == 1:
        pytest.skip("libopenjp2 is not installed: the full decode is used (apt libopenjp2-7)")
    assert reduced.pixels.shape == (978, 921) and reduced.summary()["reduced_by"] == 2
    assert full.summary()["reduced_by"] == 1 and full.pixels.shape == (1955, 1841)
    shrunk = cv2.resize(full.pixels, (921, 978), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.pixels - shrunk).mean() < 0.01  # same picture, same grey levels
    assert reduced.inverted and reduced.voi == "window"
    assert reduced_s < full_s  # ~0.13 s against ~0.5 s here


def test_levels_to_skip_keeps_the_preview_size():
    from appliance.ingest.j2k import levels_to_skip

    assert levels_to_skip(1955, 1024, 5) == 1  # 978 px is close enough to 1024
    assert levels_to_skip(4000, 1024, 5) == 2
    assert levels_to_skip(4000, 1024, 1) == 1  # no more levels than the stream has
    assert levels_to_skip(800, 1024, 5) == 0


def test_uncompressed_radiograph_is_read_at_reduced_resolution_when_less_is_needed(tmp_path):
    """The screening path needs ~1000 px: RG1's stored integers are averaged 2 x 2 before
    any float copy exists (as a JPEG 2000 level skip gives), the same picture."""
    from appliance.ingest.decode import decode_file

    path = testdata(RG1)
    reduced = decode_file(path, max_side=1024)
    full = decode_file(path)
    assert reduced.pixels.shape == (977, 920) and reduced.summary()["reduced_by"] == 2
    assert full.pixels.shape == (1955, 1841) and full.summary()["reduced_by"] == 1
    shrunk = cv2.resize(full.pixels[:1954, :1840], (920, 977), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.pixels - shrunk).max() < 1e-4  # window and inversion are linear
    assert reduced.inverted and reduced.voi == "window"
    assert decode_file(path, max_side=4096).summary()["reduced_by"] == 1


@pytest.mark.parametrize("signed", [False, True])
def test_pixels_read_from_the_file_match_pydicoms_decoder(tmp_path, signed):
    """Straight from the file (12 of 16 bits used, junk in the unused bits, signed or
    not): the same values as pydicom's own decoder gives for the same file in memory."""
    rng = np.random.default_rng(28)
    values = rng.integers(-2048 if signed else 0, 2048 if signed else 4096, (300, 280))
    stored = values.astype(np.int16 if signed else np.uint16)
    junk = stored.view(np.uint16) | (rng.integers(0, 16, stored.shape, dtype=np.uint16) << 12)
    ds = pydicom.dcmread(testdata("CT_small.dcm"))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = int(signed)
    ds.PixelData = junk.tobytes()
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        ds.pop(keyword, None)
    path = tmp_path / "junk-bits.dcm"
    ds.save_as(path, enforce_file_format=True)
    from appliance.ingest.decode import decode_file

    from_file = decode_file(path).pixels
    from_pydicom = decode_bytes(path.read_bytes()).pixels  # pydicom's decoder, in memory
    assert np.array_equal(from_file, from_pydicom)


def _camera_frame_jpeg(orientation: int | None = None) -> tuple[bytes, np.ndarray]:
    """A real fundus photo brought up to a Kowa camera's native 4288 x 2848 frame."""
    photo = cv2.resize(cv2.imread(str(FUNDUS_DIR / "IDRiD_003.jpg")), (4288, 2848),
                       interpolation=cv2.INTER_CUBIC)
    ok, encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    raw = encoded.tobytes()
    return (raw if orientation is None else _with_exif_orientation(raw, orientation)), photo


def test_a_camera_frame_far_larger_than_needed_is_decoded_smaller():
    raw, photo = _camera_frame_jpeg()
    small = decode_bytes(raw, max_side=1024)
    assert small.pixels.shape == (712, 1072, 3)  # 1/4: the longest side stays >= ~1024
    assert small.summary()["reduced_by"] == 4
    expected = cv2.resize(photo, (1072, 712), interpolation=cv2.INTER_AREA)[:, :, ::-1] / 255.0
    assert np.abs(small.pixels - expected).mean() < 0.01  # the same picture, smaller
    whole = decode_bytes(raw)  # no max_side: the full frame, as the full-detail view asks
    assert whole.pixels.shape == (2848, 4288, 3) and whole.summary()["reduced_by"] == 1


def test_a_reduced_decode_keeps_the_exif_orientation():
    raw, _ = _camera_frame_jpeg(orientation=6)  # taken with the camera turned
    small = decode_bytes(raw, max_side=1024)
    assert small.pixels.shape == (1072, 712, 3)


@pytest.mark.parametrize(
    ("longest", "max_side", "factor"),
    [(4288, 1024, 4), (4288, None, 1), (2144, 1024, 2), (1429, 1024, 1), (20000, 512, 8)],
)
def test_jpeg_reduction_keeps_the_side_near_what_is_needed(longest, max_side, factor):
    from appliance.ingest.raster import jpeg_reduction

    assert jpeg_reduction(longest, max_side) == factor
