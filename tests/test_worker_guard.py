"""A job whose decode stopped the box is never decoded in the service again blindly.

A real ``appliance work`` process is killed with SIGKILL in the middle of decoding a
large radiograph (what the OOM killer does to the service). On its next attempt the job
is decoded first in a child process under a real address-space limit: too little memory
and the image is quarantined with a plain reason; enough (a power cut, not a bomb) and
it is screened as usual.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import scaled_rg1

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.ingest.sandbox import UNSAFE
from appliance.store.db import Store


def worker_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_USB_ROOTS="", APPLIANCE_MIN_FREE_MB="1", APPLIANCE_JOB_LEASE_SECONDS="1")
    env.update({f"APPLIANCE_{k.upper()}": v for k, v in settings.items()})
    return env


def job(data: Path) -> sqlite3.Row:
    conn = sqlite3.connect(f"file:{data / 'appliance.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM jobs WHERE kind='screen'").fetchone()
    finally:
        conn.close()


@pytest.fixture
def stopped_mid_decode(tmp_path) -> Path:
    """The data dir after a worker was killed with SIGKILL while decoding RG1 x4 (115 MB)."""
    data = tmp_path / "data"
    store = Store.open(data)
    Importer(store, load_config(data, environ={}, min_free_mb=1)).import_path(
        scaled_rg1(tmp_path, 4), source="dicom"
    )
    store.close()
    worker = subprocess.Popen(
        [sys.executable, "-m", "appliance", "work", "--data-dir", str(data)],
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while job(data)["decoding_since"] is None and time.monotonic() < deadline:
            assert worker.poll() is None
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    row = job(data)
    assert row["state"] == "running" and row["decoding_since"] is not None, dict(row)
    time.sleep(1.2)  # the killed worker's lease runs out
    return data


def drain(data: Path, **settings: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "work", "--data-dir", str(data), "--drain"],
        env=worker_env(**settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def image_and_quarantine(data: Path) -> tuple[str, list[tuple]]:
    conn = sqlite3.connect(data / "appliance.db")
    try:
        state = conn.execute("SELECT state FROM images").fetchone()[0]
        return state, conn.execute("SELECT reason, detail FROM quarantine").fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_decode_that_stopped_the_box_is_retried_only_within_a_memory_limit(
    stopped_mid_decode,
):
    log = drain(stopped_mid_decode, decode_retry_memory_mb="400")
    assert "in a child process limited to 400 MB" in log
    state, quarantined = image_and_quarantine(stopped_mid_decode)
    assert state == "quarantined"
    ((reason, detail),) = quarantined
    assert reason == UNSAFE
    assert "memory" in detail.lower(), detail
    row = job(stopped_mid_decode)
    assert (row["state"], row["decoding_since"], row["attempts"]) == ("done", None, 2)


@pytest.mark.slow
def test_after_a_power_cut_mid_decode_a_sound_image_is_still_screened(stopped_mid_decode):
    drain(stopped_mid_decode)  # the default limit: the image decodes in the child
    state, quarantined = image_and_quarantine(stopped_mid_decode)
    assert (state, quarantined) == ("decoded", [])
    row = job(stopped_mid_decode)
    assert (row["state"], row["decoding_since"]) == ("done", None)
