"""A photo's capture time from its EXIF block (ingest/exif.py), nothing decoded."""

from __future__ import annotations

from datetime import datetime
from io import BytesIO

from helpers import FUNDUS_DIR

from appliance.ingest.exif import photo_taken_at
from appliance.ingest.headers import from_file


def taken(data: bytes):
    return photo_taken_at(from_file(BytesIO(data)))


def test_a_cameras_photo_says_when_it_was_taken():
    assert taken((FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()) == datetime(2007, 2, 19, 12, 51, 57)


def test_no_exif_or_a_damaged_block_says_nothing():
    assert taken((FUNDUS_DIR / "IDRiD_003.jpg").read_bytes()) is None
    good = (FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()
    start = good.index(b"Exif\x00\x00")
    for cut in (start + 10, start + 40, start + 80):
        assert taken(good[:cut]) is None  # cut short: no exception, no time
    assert taken(b"\xff\xd8\xff\xe1\xff\xffExif\x00\x00MM") is None
    assert taken(b"not a jpeg") is None
