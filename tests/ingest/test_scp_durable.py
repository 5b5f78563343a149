"""A C-STORE is answered only once its image is durable (issue 28: speed is never
bought with safety), and the received bytes are stored as sent, written once.

Watched through real mechanisms, the SCP itself untouched: ``os.fsync`` observed (each
call goes through to the real one), pynetdicom's EVT_DIMSE_SENT (fired as the response
is handed to the network layer, before any byte of it is sent) and a second SQLite
connection (it sees committed rows only). Moving the fsync of the file or of its
folder, or the commit, after the response makes these tests fail.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import tempfile
from pathlib import Path

import pydicom
import pytest
from helpers import free_port, require_tool, scaled_rg1
from pydicom.uid import generate_uid
from pynetdicom import evt

from appliance.ingest.importer import Importer
from appliance.ingest.scp import StoreSCP
from appliance.store.files import sha256_file


@pytest.fixture
def scp(store, config):
    scp = StoreSCP(
        Importer(store, config), ae_title="APPLIANCE", port=free_port(), host="127.0.0.1"
    )
    scp.start()
    yield scp
    scp.stop()


@pytest.fixture
def instances(tmp_path) -> list[Path]:
    """Three distinct instances of the real RG1 chest CR at half size (1.8 MB each)."""
    rg1 = pydicom.dcmread(scaled_rg1(tmp_path, 0.5))
    paths = []
    for n in range(3):
        rg1.SOPInstanceUID = generate_uid()
        rg1.file_meta.MediaStorageSOPInstanceUID = rg1.SOPInstanceUID
        paths.append(tmp_path / f"rg1-{n}.dcm")
        rg1.save_as(paths[-1])
    return paths


def send(scp: StoreSCP, files: list[Path]) -> str:
    require_tool("storescu")
    done = subprocess.run(
        ["storescu", "-v", "-aec", "APPLIANCE", "127.0.0.1", str(scp.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


class FsyncLog:
    """Every fsync of the process: (device, inode, names in it for a folder)."""

    def __init__(self, monkeypatch) -> None:
        self.synced: list[tuple[int, int, frozenset[str] | None]] = []
        real = os.fsync

        def observed(fd: int) -> None:
            real(fd)
            info = os.fstat(fd)
            names = frozenset(os.listdir(fd)) if stat.S_ISDIR(info.st_mode) else None
            self.synced.append((info.st_dev, info.st_ino, names))

        monkeypatch.setattr(os, "fsync", observed)

    def file_synced(self, path: Path) -> bool:
        info = path.stat()
        return any((d, i, n) == (info.st_dev, info.st_ino, None) for d, i, n in self.synced)

    def name_synced(self, path: Path) -> bool:
        """The folder was fsynced while it held ``path``'s name: the rename is durable."""
        info = path.parent.stat()
        return any(
            (d, i) == (info.st_dev, info.st_ino) and n is not None and path.name in n
            for d, i, n in self.synced
        )


def test_every_response_leaves_after_fsync_and_commit(scp, store, instances, monkeypatch):
    fsyncs = FsyncLog(monkeypatch)
    at_response = []

    def on_sent(event) -> None:
        command = event.message.command_set
        if event.message.__class__.__name__ != "C_STORE_RSP":
            return
        uid = str(command.AffectedSOPInstanceUID)
        # What another process would find after a kill -9 or a power cut now.
        reader = sqlite3.connect(store.db_path)
        row = reader.execute(
            "SELECT stored_path FROM images WHERE sop_instance_uid=?", (uid,)
        ).fetchone()
        reader.close()
        path = store.data_dir / row[0] if row else None
        at_response.append(
            (
                uid,
                command.Status,
                row is not None,
                bool(path and fsyncs.file_synced(path)),
                bool(path and fsyncs.name_synced(path)),
            )
        )

    scp.server.bind(evt.EVT_DIMSE_SENT, on_sent)
    output = send(scp, instances)
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in instances]
    # (uid, status, committed, file fsynced, its name in the folder fsynced)
    assert at_response == [(uid, 0x0000, True, True, True) for uid in uids], output


def test_the_received_file_is_moved_into_the_store_not_copied(scp, store, instances, monkeypatch):
    """pynetdicom's spool file (the dataset exactly as received, never decoded and
    encoded again) is renamed into tmp/ and then into images/: the stored file is that
    very file (same inode), its bytes written once; nothing is left behind."""
    spool = Path(tempfile.mkdtemp(prefix="pynetdicom-spool-", dir=store.data_dir.parent))
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where pynetdicom spools
    spooled: set[int] = set()
    scp.server.bind(
        evt.EVT_DATA_RECV, lambda event: spooled.update(f.stat().st_ino for f in spool.iterdir())
    )
    output = send(scp, instances)
    assert output.count("Received Store Response (Success)") == 3, output
    rows = store.conn().execute("SELECT stored_path, sha256 FROM images ORDER BY id").fetchall()
    assert len(rows) == 3
    for path, (stored_path, sha) in zip(instances, rows, strict=True):
        stored = store.data_dir / stored_path
        assert stored.stat().st_ino in spooled
        assert sha256_file(stored) == sha
        sent, kept = pydicom.dcmread(path), pydicom.dcmread(stored)
        assert kept.SOPInstanceUID == sent.SOPInstanceUID
        assert kept.PixelData == sent.PixelData
    assert list(spool.iterdir()) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_a_spool_on_another_file_system_is_copied(scp, store, instances, monkeypatch):
    """/dev/shm is a tmpfs: pynetdicom's spool there cannot be renamed into the data
    dir, so it is copied (and still hashed, fsynced and committed before the answer)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == store.tmp_dir.stat().st_dev:
        pytest.skip("no separate tmpfs at /dev/shm here")
    spool = Path(tempfile.mkdtemp(prefix="pynetdicom-spool-", dir=shm))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(spool))
        output = send(scp, instances[:1])
        assert output.count("Received Store Response (Success)") == 1, output
        (stored_path, sha), *_ = store.conn().execute("SELECT stored_path, sha256 FROM images")
        assert sha256_file(store.data_dir / stored_path) == sha
        assert list(spool.iterdir()) == []
    finally:
        for leftover in spool.iterdir():
            leftover.unlink()
        spool.rmdir()
