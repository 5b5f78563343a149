"""The DICOM listener against dcmtk's echoscu/storescu, over real sockets on localhost."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pydicom
import pytest
from helpers import free_port, require_tool, scaled_rg1, testdata
from pydicom.encaps import encapsulate, generate_frames

from appliance.ingest.importer import Importer
from appliance.ingest.scp import StoreSCP


@pytest.fixture
def scp_for(store):
    """Start an SCP with the given settings; stopped after the test."""
    started = []

    def start(config, **kwargs) -> StoreSCP:
        scp = StoreSCP(
            Importer(store, config),
            ae_title="APPLIANCE",
            port=free_port(),
            host="127.0.0.1",
            **kwargs,
        )
        scp.start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


@pytest.fixture
def scp(scp_for, config) -> StoreSCP:
    return scp_for(config)


def storescu(scp: StoreSCP, *args: str, calling: str = "XRAY1", called: str = "APPLIANCE") -> str:
    require_tool("storescu")
    flags = [a for a in args if a.startswith("-")]
    files = [a for a in args if not a.startswith("-")]
    result = subprocess.run(
        [
            "storescu",
            "-d",
            "-aet",
            calling,
            "-aec",
            called,
            *flags,
            "127.0.0.1",
            str(scp.port),
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout + result.stderr


def statuses(output: str) -> list[str]:
    """The C-STORE response status codes storescu printed, e.g. ['0x0000']."""
    return re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", output)


def _stored(store) -> list[tuple]:
    return [
        tuple(r)
        for r in store.conn().execute(
            "SELECT sop_instance_uid, transfer_syntax_uid, source_detail FROM images ORDER BY id"
        )
    ]


def test_echo(scp):
    require_tool("echoscu")
    result = subprocess.run(
        ["echoscu", "-v", "-aec", "APPLIANCE", "127.0.0.1", str(scp.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def syntax_files(tmp_path_factory) -> dict[str, tuple[list[str], Path, str]]:
    """(storescu flag, file, expected stored transfer syntax) per syntax, made by dcmtk."""
    out = tmp_path_factory.mktemp("syntaxes")
    small = scaled_rg1(out, 0.5)

    def made(tool: list[str], name: str) -> Path:
        target = out / name
        subprocess.run([*tool, str(small), str(target)], check=True, capture_output=True)
        return target

    return {
        "explicit": ([], small, "1.2.840.10008.1.2.1"),
        "implicit": (["-xi"], made(["dcmconv", "+ti"], "implicit.dcm"), "1.2.840.10008.1.2"),
        "deflate": (["-xd"], made(["dcmconv", "+td"], "deflate.dcm"), "1.2.840.10008.1.2.1.99"),
        "jpeg-lossless": (
            ["-xs"],
            made(["dcmcjpeg", "+e1"], "jpegll.dcm"),
            "1.2.840.10008.1.2.4.70",
        ),
        "jpeg-ls": (["-xt"], made(["dcmcjpls", "+el"], "jls.dcm"), "1.2.840.10008.1.2.4.80"),
        "rle": (["-xr"], made(["dcmcrle"], "rle.dcm"), "1.2.840.10008.1.2.5"),
        "j2k-lossless": (["-xv"], testdata("RG1_J2KR.dcm"), "1.2.840.10008.1.2.4.90"),
        "j2k-lossy": (["-xw"], testdata("RG1_J2KI.dcm"), "1.2.840.10008.1.2.4.91"),
        "jpeg-baseline": (["-xy"], testdata("SC_rgb_jpeg_dcmtk.dcm"), "1.2.840.10008.1.2.4.50"),
    }


@pytest.mark.parametrize(
    "syntax",
    [
        "explicit",
        "implicit",
        "deflate",
        "jpeg-lossless",
        "jpeg-ls",
        "rle",
        "j2k-lossless",
        "j2k-lossy",
        "jpeg-baseline",
    ],
)
def test_store_each_transfer_syntax(scp, store, syntax_files, syntax):
    flags, path, expected_syntax = syntax_files[syntax]
    output = storescu(scp, *flags, str(path))
    assert statuses(output) == ["0x0000"], output
    [(sop, stored_syntax, sender)] = _stored(store)
    assert sop == pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert stored_syntax == expected_syntax
    assert sender.startswith("XRAY1@127.0.0.1")


def test_success_only_after_the_file_is_recorded_and_a_resend_is_one_image(scp, store):
    path = testdata("RG1_J2KI.dcm")
    for _ in range(2):
        assert statuses(storescu(scp, "-xw", str(path))) == ["0x0000"]
    [(sop, _, _)] = _stored(store)
    row = store.conn().execute("SELECT stored_path FROM images").fetchone()
    stored = pydicom.dcmread(store.data_dir / row["stored_path"])
    assert stored.SOPInstanceUID == sop and len(stored.PixelData) > 100_000


def test_only_allowed_calling_aets_may_send(scp_for, config, store):
    scp = scp_for(config, allowed_aets=["XRAY1"])
    refused = storescu(scp, str(testdata("RG3_J2KI.dcm")), "-xw", calling="INTRUDER")
    assert "Association Rejected" in refused
    allowed = storescu(scp, "-xw", str(testdata("RG3_J2KI.dcm")), calling="XRAY1")
    assert statuses(allowed) == ["0x0000"]
    assert len(_stored(store)) == 1


def test_wrong_called_aet_is_rejected(scp, store):
    output = storescu(scp, "-xw", str(testdata("RG3_J2KI.dcm")), called="SOMEONEELSE")
    assert "Association Rejected" in output and _stored(store) == []


def test_unsupported_sop_class_is_not_negotiated(scp, store):
    output = storescu(scp, str(testdata("CT_small.dcm")))
    assert "No presentation context" in output or "no acceptable presentation" in output.lower()
    assert _stored(store) == []


def test_damaged_dataset_answers_c210_and_is_quarantined(scp, store, tmp_path):
    ds = pydicom.dcmread(testdata("RG1_J2KI.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])  # codestream cut in half
    damaged = tmp_path / "damaged.dcm"
    ds.save_as(damaged)
    output = storescu(scp, "-xw", str(damaged))
    assert statuses(output) == ["0xc210"], output
    assert _stored(store) == []
    row = store.conn().execute("SELECT reason, source FROM quarantine").fetchone()
    assert "incomplete" in row["reason"] and row["source"] == "dicom"


def test_full_disk_answers_a700_and_stores_nothing(scp_for, config, store):
    scp = scp_for(config.with_overrides(min_free_mb=10**9))
    output = storescu(scp, "-xw", str(testdata("RG1_J2KI.dcm")))
    assert statuses(output) == ["0xa700"], output
    assert _stored(store) == []


def test_handler_never_raises_into_the_network_layer(scp, store):
    """A database that refuses the write gives a failure status; the SCP keeps serving."""
    conn = store.conn()
    conn.execute(
        "CREATE TRIGGER block_images BEFORE INSERT ON images "
        "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
    )
    output = storescu(scp, "-xw", str(testdata("RG3_J2KI.dcm")))
    assert statuses(output) == ["0xa701"], output  # retry later: the sender keeps its copy
    conn.execute("DROP TRIGGER block_images")
    output = storescu(scp, "-xw", str(testdata("RG3_J2KI.dcm")))
    assert statuses(output) == ["0x0000"]
    assert len(_stored(store)) == 1


def test_a_high_priority_store_is_screened_first(scp, store):
    """storescu has no priority flag, so pynetdicom's SCU sends the HIGH request."""
    from pynetdicom import AE
    from pynetdicom.sop_class import ComputedRadiographyImageStorage

    ae = AE(ae_title="XRAY1")
    ae.add_requested_context(ComputedRadiographyImageStorage, "1.2.840.10008.1.2.4.91")
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="APPLIANCE")
    assert assoc.is_established
    normal = assoc.send_c_store(pydicom.dcmread(testdata("RG3_J2KI.dcm")), priority=0)
    urgent = assoc.send_c_store(pydicom.dcmread(testdata("RG1_J2KI.dcm")), priority=1)
    assoc.release()
    assert (normal.Status, urgent.Status) == (0, 0)
    order = [
        r[0]
        for r in store.conn().execute(
            "SELECT i.body_part FROM jobs j JOIN images i ON i.id = j.image_id"
            " ORDER BY j.priority, j.id"
        )
    ]
    assert order == ["CHEST", "EXTREMITY"]


def test_a_dataset_is_hashed_as_it_arrives_not_read_again(scp, store, tmp_path, monkeypatch):
    """Issue 28: the sha-256 of the received file is kept up while its PDUs arrive, so
    it is not read again before the response. With hashlib's file hashing made to fail,
    two images in one association (a command and its data in separate PDUs, as dcmtk
    sends them) are stored all the same, each under its file's true hash."""

    def no_rereading(*args, **kwargs):
        raise AssertionError("the received file was hashed again")

    monkeypatch.setattr(hashlib, "file_digest", no_rereading)
    first, second = scaled_rg1(tmp_path, 0.5), testdata("RG1_J2KI.dcm")
    assert statuses(storescu(scp, "-xw", str(first), str(second))) == ["0x0000", "0x0000"]
    rows = store.conn().execute("SELECT sha256, stored_path FROM images ORDER BY id").fetchall()
    assert len(rows) == 2
    for sha, relative in rows:
        assert hashlib.sha256((store.data_dir / relative).read_bytes()).hexdigest() == sha
