"""FIFOs, links to /dev/zero and links off the volume: refused, never read, never hung on.

Each door is driven for real (USB watcher, hot folder, ``appliance ingest`` as a
process) and in a thread or process with a deadline, so a door that blocks on a FIFO or
reads /dev/zero fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import FUNDUS_DIR

from appliance.config import load_config
from appliance.ingest.hotfolder import LINK_OUT_OF_FOLDER, HotFolder
from appliance.ingest.importer import Importer
from appliance.ingest.sources import NOT_A_FILE
from appliance.ingest.usb import LINK_NOT_FOLLOWED, UsbWatcher

JPEG = (FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()
DEADLINE = 30  # seconds: every door answers long before


def lay_traps(folder: Path, outside: Path) -> None:
    """A good photo beside a FIFO, a link to /dev/zero, a link to a file off the volume,
    and a link that stays on it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.jpg").write_bytes(JPEG)
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.dcm").symlink_to("/dev/zero")
    outside.write_bytes(JPEG[:-100] + b"other" + JPEG[-100:])
    (folder / "elsewhere.jpg").symlink_to(outside)
    (folder / "same.jpg").symlink_to("good.jpg")


def within_deadline(action) -> object:
    """Run ``action`` in a thread; fail (not hang) if it does not return in time."""
    result: dict = {}

    def run():
        result["value"] = action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the door is stuck (a FIFO opened for reading, /dev/zero read)"
    return result.get("value")


def refusals(store) -> dict[str, str]:
    rows = store.conn().execute("SELECT original_name, reason FROM quarantine")
    return {row["original_name"]: row["reason"] for row in rows}


def test_a_stick_with_a_fifo_and_links_imports_only_its_own_files(tmp_path, store, config):
    root = tmp_path / "media"
    lay_traps(root / "STICK", tmp_path / "private.jpg")
    usb = config.with_overrides(usb_roots=[str(root)], usb_require_mountpoint=False)
    watcher = UsbWatcher(Importer(store, usb), threading.Event())

    within_deadline(watcher.poll_once)

    assert store.conn().execute("SELECT original_name FROM images").fetchone()[0] == "good.jpg"
    assert refusals(store) == {
        "pipe.jpg": NOT_A_FILE,
        "zero.dcm": LINK_NOT_FOLLOWED,
        "elsewhere.jpg": LINK_NOT_FOLLOWED,
    }
    assert (root / "STICK" / "pipe.jpg").exists()  # the stick is never changed


def test_a_dicomdir_that_is_a_fifo_or_dev_zero_does_not_stop_the_listing(tmp_path, store, config):
    for trap in ("fifo", "zero"):
        volume = tmp_path / trap / "STICK"
        volume.mkdir(parents=True)
        (volume / "good.jpg").write_bytes(JPEG)
        if trap == "fifo":
            os.mkfifo(volume / "DICOMDIR")
        else:
            (volume / "DICOMDIR").symlink_to("/dev/zero")
        usb = config.with_overrides(usb_roots=[str(volume.parent)], usb_require_mountpoint=False)
        within_deadline(UsbWatcher(Importer(store, usb), threading.Event()).poll_once)
    assert store.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1


def test_the_hot_folder_refuses_a_fifo_and_links_and_leaves_them(tmp_path, store, config):
    folder = tmp_path / "incoming"
    lay_traps(folder, tmp_path / "private.jpg")
    (folder / "same.jpg").unlink()  # would dangle once good.jpg is taken
    settings = config.with_overrides(hot_folder=str(folder), hot_folder_settle_seconds=0)
    watcher = HotFolder(Importer(store, settings), folder, threading.Event())

    within_deadline(watcher.scan_once)
    within_deadline(watcher.scan_once)  # the refused are not tried again

    assert refusals(store) == {
        "pipe.jpg": NOT_A_FILE,
        "zero.dcm": LINK_OUT_OF_FOLDER,
        "elsewhere.jpg": LINK_OUT_OF_FOLDER,
    }
    assert store.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["elsewhere.jpg", "pipe.jpg", "zero.dcm"]
    assert (tmp_path / "private.jpg").exists()


def test_a_file_growing_past_the_limit_while_read_is_refused(tmp_path, store, config):
    """The size is enforced while reading, not only from stat(): a link to /dev/zero
    given by name (followed on purpose) is refused as a device, and a sparse file that
    claims little and grows is cut at the limit."""
    importer = Importer(store, config.with_overrides(upload_max_mb=1))
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    assert within_deadline(lambda: importer.import_path(link, source="cli")).reason == NOT_A_FILE

    class Growing:
        def __init__(self):
            self.sent = 0

        def read(self, size):
            self.sent += size
            return bytes(size)

    stream = Growing()
    with pytest.raises(Exception) as refused:
        importer.import_stream(stream, source="upload")
    assert "larger than the 1 MB limit" in refused.value.reason
    assert stream.sent <= 2 * 1024 * 1024
    assert not any(store.tmp_dir.iterdir())


def test_appliance_ingest_as_a_process_refuses_fifos_and_devices(tmp_path):
    folder = tmp_path / "export"
    lay_traps(folder, tmp_path / "private.jpg")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_USB_ROOTS="", APPLIANCE_MIN_FREE_MB="1")
    command = [sys.executable, "-m", "appliance", "ingest", "--data-dir", str(data), "--json"]
    # prlimit: if /dev/zero were read, the process would fail, not take the box down.
    limit = ["prlimit", f"--as={3 * 1024**3}"]
    done = subprocess.run(
        [*limit, *command, str(folder), str(folder / "pipe.jpg"), str(folder / "zero.dcm")],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    by_name = {}
    for entry in files:
        by_name.setdefault(entry["name"], []).append((entry["status"], entry.get("reason")))
    assert by_name["good.jpg"] == [("stored", None)]
    assert by_name["same.jpg"] == [("duplicate", None)]  # a link that stays inside
    assert by_name["elsewhere.jpg"] == [("refused", LINK_NOT_FOLLOWED)]
    # In the folder: the FIFO is not a file, the link leaves it; named directly: both
    # are followed (the operator chose them) and found to be a FIFO and a device.
    assert by_name["pipe.jpg"] == [("refused", NOT_A_FILE)] * 2
    assert by_name["zero.dcm"] == [("refused", LINK_NOT_FOLLOWED), ("refused", NOT_A_FILE)]
    config = load_config(data, environ={})
    assert not any((config.data_dir / "tmp").iterdir())
