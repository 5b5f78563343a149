"""Every bomb of issue 12 through every door of a real ``appliance serve``.

Doors: the upload API, C-STORE with storescu, a USB volume, the hot folder, and
``appliance ingest`` as a process. Each bomb must be refused at the door with its plain
reason, before any decode (so no screening job is ever made for it), while a real image
sent the same way beside it is stored; and the service's peak resident memory
(VmHWM, read from /proc) stays within 1 GB, the maintainers' bound.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from crafted import bombs
from helpers import FUNDUS_DIR, Served, require_tool, scaled_rg1

PEAK_RSS_BOUND_MB = 1024
GOOD_PHOTO = FUNDUS_DIR / "hrf_12_h.jpg"
DOORS = ["upload", "dicom", "usb", "hot-folder", "ingest"]


def peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


@pytest.fixture
def box(tmp_path):
    """The service with every door open: USB root, hot folder, DICOM on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_USB_ROOTS=str(tmp_path / "media"),
        APPLIANCE_USB_REQUIRE_MOUNTPOINT="false",
        APPLIANCE_USB_POLL_SECONDS="0.2",
        APPLIANCE_HOT_FOLDER=str(tmp_path / "hot"),
        APPLIANCE_HOT_FOLDER_POLL_SECONDS="0.1",
        APPLIANCE_HOT_FOLDER_SETTLE_SECONDS="0.2",
        APPLIANCE_DICOM_HOST="127.0.0.1",
        APPLIANCE_MIN_FREE_MB="1",
        PYTHONUNBUFFERED="1",
    )
    (tmp_path / "media").mkdir()
    served = Served(tmp_path / "data", env)
    yield served
    served.close()


def rows(data_dir: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(f"file:{data_dir / 'appliance.db'}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    return check()


def reasons_by_name(data_dir: Path) -> dict[str, str]:
    return dict(rows(data_dir, "SELECT original_name, reason FROM quarantine"))


def send_upload(box: Served, folder: Path) -> dict[str, str]:
    token = (box.data_dir / "secrets" / "api_token").read_text().strip()
    reasons = {}
    for path in sorted(folder.iterdir()):
        request = urllib.request.Request(
            f"{box.url}/api/upload",
            data=path.read_bytes(),
            headers={"Authorization": f"Bearer {token}", "X-Filename": path.name},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status in (200, 201)
            (result,) = json.load(response)["results"]
        reasons[path.name] = result.get("reason") or result["status"]
    return reasons


def send_dicom(box: Served, folder: Path) -> dict[str, str]:
    """Each file with storescu; the reason is the quarantine row it made."""
    require_tool("storescu")
    reasons = {}
    for bomb in [b for b in bombs() if b.kind == "dicom"] + [None]:
        path = folder / bomb.filename if bomb else folder / "good.dcm"
        before = rows(box.data_dir, "SELECT COUNT(*) FROM quarantine")[0][0]
        flags = bomb.storescu_flags if bomb else ()
        done = subprocess.run(
            ["storescu", "-d", "-aec", "APPLIANCE", *flags, "127.0.0.1", str(box.dicom_port)]
            + [str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if bomb is None:
            assert "0x0000: Success" in done.stdout + done.stderr
            reasons[path.name] = "stored"
            continue
        assert "0xc210" in (done.stdout + done.stderr).lower()  # cannot understand
        new = rows(box.data_dir, "SELECT reason FROM quarantine WHERE id > ?", before)
        reasons[path.name] = new[0][0] if new else "no quarantine row"
    return reasons


def send_usb(box: Served, folder: Path) -> dict[str, str]:
    volume = box.data_dir.parent / "media" / "STICK"
    shutil.copytree(folder, box.data_dir.parent / "staging")
    (box.data_dir.parent / "staging").rename(volume)  # the stick appears whole
    wait_for(lambda: rows(box.data_dir, "SELECT 1 FROM volumes WHERE state='imported'"))
    return _outcomes(box, folder)


def send_hot_folder(box: Served, folder: Path) -> dict[str, str]:
    hot = box.data_dir.parent / "hot"
    for path in folder.iterdir():
        (hot / f".{path.name}").write_bytes(path.read_bytes())
        (hot / f".{path.name}").rename(hot / path.name)  # as a copy tool does
    wait_for(lambda: not any(hot.iterdir()))
    return _outcomes(box, folder)


def send_ingest(box: Served, folder: Path) -> dict[str, str]:
    """``appliance ingest`` as its own process, on the service's data directory."""
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "ingest", "--data-dir", str(box.data_dir)]
        + ["--json", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "APPLIANCE_USB_ROOTS": "", "APPLIANCE_MIN_FREE_MB": "1"},
    )
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    return {f["name"]: f.get("reason") or f["status"] for f in files}


def _outcomes(box: Served, folder: Path) -> dict[str, str]:
    names = {p.name for p in folder.iterdir()}
    stored = {r[0] for r in rows(box.data_dir, "SELECT original_name FROM images")}
    found = wait_for(lambda: names <= set(reasons_by_name(box.data_dir)) | stored)
    assert found, names - set(reasons_by_name(box.data_dir)) - stored
    reasons = reasons_by_name(box.data_dir)
    return {name: "stored" if name in stored else reasons[name] for name in names}


SEND = {
    "upload": send_upload,
    "dicom": send_dicom,
    "usb": send_usb,
    "hot-folder": send_hot_folder,
    "ingest": send_ingest,
}


@pytest.fixture(scope="module")
def good_dicom(tmp_path_factory) -> Path:
    return scaled_rg1(tmp_path_factory.mktemp("good"), 0.25)


@pytest.mark.slow
@pytest.mark.parametrize("door", DOORS)
def test_every_bomb_is_refused_at_every_door_within_a_gigabyte(box, door, tmp_path, good_dicom):
    folder = tmp_path / "outgoing"
    folder.mkdir()
    for bomb in bombs():
        (folder / bomb.filename).write_bytes(bomb.data)
    good = "good.dcm" if door == "dicom" else "good.jpg"
    shutil.copy(good_dicom if door == "dicom" else GOOD_PHOTO, folder / good)
    baseline = peak_rss_mb(box.proc.pid)

    outcomes = SEND[door](box, folder)

    expected = {b.filename: b.reason for b in bombs() if door != "dicom" or b.kind == "dicom"}
    refused = {name: outcomes.get(name, "missing") for name in expected}
    wrong = {n: r for n, r in refused.items() if expected[n] not in r}
    assert wrong == {}, wrong
    assert outcomes[good] == "stored"
    # Refused before any decode: the only screening job is the good image's.
    assert rows(box.data_dir, "SELECT COUNT(*) FROM jobs")[0][0] == 1
    assert box.wait_healthy()["status"] == "ok"
    peak = peak_rss_mb(box.proc.pid)
    print(f"{door}: service peak RSS {baseline} MB at start, {peak} MB after the bombs")
    assert peak <= PEAK_RSS_BOUND_MB
