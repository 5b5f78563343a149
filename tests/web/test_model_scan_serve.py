"""A USB stick of archive bombs beside a signed model file, on a real ``appliance serve``
(issue 25, finding 7): the stick's model files are looked for in a background task, and
only each file's first members are read, so every Import page request stays under 1 s
and the serve process under 400 MB (its peak resident memory, VmHWM), while the signed
file is still offered to the admin. A folder under the USB root stands for the stick."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from helpers import Served
from lifecycle.hostile_bundles import header_bomb_tar_gz, many_members_tar_gz, zeros_bomb_tgz
from lifecycle.modelkit import NAME, NEW, new_version
from web.boxkit import ADMIN_PIN, Browser

from appliance.lifecycle.pack import pack
from appliance.store import users
from appliance.store.db import Store
from appliance.wire.model_signature import new_key

MAX_REQUEST_SECONDS = 1.0
MAX_SERVE_MB = 400


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak, in MB (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M)[1]) for k in ("VmRSS", "VmHWM")}
    return {k: v / 1024 for k, v in kb.items()}


@pytest.fixture
def box(tmp_path):
    data_dir = tmp_path / "data"
    store = Store.open(data_dir)
    users.create_user(store, "admin", ADMIN_PIN, "admin")
    store.close()
    (tmp_path / "usb").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        {
            "APPLIANCE_USB_ROOTS": str(tmp_path / "usb"),
            "APPLIANCE_USB_REQUIRE_MOUNTPOINT": "false",  # no USB bus in a test machine
            "APPLIANCE_USB_POLL_SECONDS": "0.5",
            "APPLIANCE_USB_AUTO_IMPORT": "false",
            "APPLIANCE_DICOM_ENABLED": "false",
            "APPLIANCE_MIN_FREE_MB": "1",
            "APPLIANCE_INFERENCE_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    served = Served(data_dir, env)
    yield served
    served.close()


def bomb_stick(folder: Path) -> str:
    """The three bombs and one signed model file; returns the model file's name."""
    folder.mkdir(parents=True)
    many_members_tar_gz(folder / "members.tar.gz")  # 400,000 members, 2.8 MB
    zeros_bomb_tgz(folder / "zeros.tgz")  # 4 GiB of zeros, 4 MB
    header_bomb_tar_gz(folder / "header.tar.gz")  # a 1 GiB tar header, 1 MB
    key = folder.parent / "programme.key"
    new_key(key)
    (folder / "models").mkdir()
    signed = folder / "models" / f"{NAME}-{NEW}.tar.gz"
    pack(new_version(folder.parent / "built"), key, signed)
    return f"models/{signed.name}"


def test_a_stick_of_archive_bombs_keeps_the_import_page_fast_and_serve_small(box, tmp_path):
    admin = Browser(box)
    admin.login("admin", ADMIN_PIN)
    signed = bomb_stick(tmp_path / "staging" / "STICK")
    start_memory = memory_mb(box.proc.pid)
    took: dict[str, float] = {}

    def timed(name: str, method: str, path: str, form: dict | None = None) -> str:
        start = time.monotonic()
        status, _response, text = admin.request(method, path, form)
        took[name] = max(took.get(name, 0.0), time.monotonic() - start)
        assert status in (200, 302), (path, status)
        return text

    (tmp_path / "staging" / "STICK").rename(tmp_path / "usb" / "STICK")  # plugged in
    deadline = time.monotonic() + 30
    while "STICK" not in (index := timed("import page", "GET", "/import/")):
        assert time.monotonic() < deadline, "the stick never appeared"
        time.sleep(0.2)
    token = re.search(r'name="csrf_token" value="([^"]+)"', index)[1]
    timed("look for sticks now", "POST", "/import/scan", {"csrf_token": token})
    volume = re.search(r'href="(/import/volume/\d+)"', timed("import page", "GET", "/import/"))[1]

    first = timed("stick page", "GET", volume)
    assert "Looking for model files on this stick" in first or signed in first
    deadline = time.monotonic() + 30
    while True:  # what the page's script does until the scan has finished
        _status, _response, answer = admin.request("GET", f"{volume}/models")
        if json.loads(answer)["finished"]:
            break
        assert time.monotonic() < deadline, "the model-file scan never finished"
        for _ in range(3):  # meanwhile the page is used as usual
            timed("stick page", "GET", volume)
        time.sleep(0.2)
    for _ in range(5):
        page = timed("stick page", "GET", volume)
    memory = memory_mb(box.proc.pid)
    print(
        f"\nslowest request: {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in took.items())};"
        f" serve RSS {start_memory['VmRSS']:.0f} -> {memory['VmRSS']:.0f} MB,"
        f" peak (VmHWM) {start_memory['VmHWM']:.0f} -> {memory['VmHWM']:.0f} MB"
    )
    assert "Install model" in page and signed in page
    for bomb in ("members.tar.gz", "zeros.tgz", "header.tar.gz"):
        assert f'value="{bomb}"' not in page  # listed as other files, never offered
    assert max(took.values()) < MAX_REQUEST_SECONDS, took
    assert memory["VmHWM"] < MAX_SERVE_MB, memory
