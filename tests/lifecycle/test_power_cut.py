"""A power cut (SIGKILL) during install or activation leaves the active model intact
and screening going on.

The command runs in a real subprocess; ``MODELS_TEST_PAUSE_AT`` (test-only, see
appliance/lifecycle/install.py) stops it at a named step, where it is killed.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TESTS
from lifecycle.modelkit import NAME, NEW, SHIPPED

import appliance
from appliance.lifecycle.activation import activate, listing
from appliance.lifecycle.install import install
from appliance.screening.models import ModelSet
from appliance.screening.pipeline import Screener
from appliance.store import model_versions
from appliance.worker import Worker

OLD = SHIPPED
CXR = sorted((TESTS / "data" / "cxr64").glob("*.png"))


def killed_at(step: str, *args: str, data_dir) -> None:
    """Run ``appliance models ARGS`` until it reaches ``step``, then SIGKILL it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["MODELS_TEST_PAUSE_AT"] = step
    # The package under test, wherever it was imported from.
    env["PYTHONPATH"] = os.pathsep.join([str(Path(appliance.__file__).parents[1])] + sys.path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "models", *args, "--data-dir", str(data_dir)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + 120, ""
    try:
        while f"paused at {step}" not in seen:
            assert proc.poll() is None, f"ended before {step}: {seen}"
            assert time.monotonic() < deadline, f"never reached {step}: {seen}"
            if selector.select(timeout=1):
                seen += proc.stderr.readline()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def still_screens(store, config, importer, image) -> str:
    """The box as it starts after the cut: load what the database says, screen one."""
    models = ModelSet(config, log_progress=lambda line: None).load()
    try:
        assert not models.errors
        image_id = importer.import_path(image, source="upload").image_id
        assert Worker(store, config, Screener(models, config), name="after").drain() == 1
        row = (
            store.conn()
            .execute("SELECT model_name, model_version FROM results WHERE image_id=?", (image_id,))
            .fetchone()
        )
        return f"{row[0]} {row[1]}"
    finally:
        models.close()


@pytest.mark.parametrize("step", ["install.staged", "install.renamed"])
def test_a_power_cut_during_install_leaves_the_active_model_and_a_clean_retry(
    trusting_box, signed_file, importer, step
):
    store, config = trusting_box
    killed_at(step, "install", str(signed_file), data_dir=config.data_dir)
    assert model_versions.row(store.conn(), NAME, NEW) is None
    states = {(r["name"], r["version"]): r["state"] for r in listing(store, config)}
    assert states[(NAME, OLD)] == "active" and (NAME, NEW) not in states
    assert still_screens(store, config, importer, CXR[0]) == f"{NAME} {OLD}"
    # The next install clears what the cut left and goes through.
    assert install(store, config, signed_file)["state"] == "shadow"
    assert not any((config.data_dir / "models" / ".staging").iterdir())


def test_a_power_cut_during_activation_leaves_the_previous_version_active(
    trusting_box, signed_file, importer
):
    store, config = trusting_box
    install(store, config, signed_file)
    killed_at("activate.before_commit", "activate", NAME, NEW, data_dir=config.data_dir)
    assert model_versions.active_row(store.conn(), NAME)["version"] == OLD
    assert model_versions.row(store.conn(), NAME, NEW)["state"] == "shadow"
    assert still_screens(store, config, importer, CXR[1]) == f"{NAME} {OLD}"
    # And activating again, uninterrupted, takes.
    activate(store, config, NAME, NEW)
    assert still_screens(store, config, importer, CXR[2]) == f"{NAME} {NEW}"
