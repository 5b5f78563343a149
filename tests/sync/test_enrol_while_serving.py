"""A running `appliance serve` starts syncing once the box is enrolled from another
process, without a restart (issue 24, defect 5): a real serve, a real hub on loopback,
`appliance sync enrol` as its own process."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from helpers import Served
from sync.synckit import clean_env, make_backlog
from web.boxkit import ADMIN_PIN, Browser

from appliance.store.db import Store


def hub_results(hub) -> int:
    conn = hub.conn()
    try:
        return len(conn.execute("SELECT entry_id FROM entries WHERE kind = 'result'"))
    finally:
        conn.close()


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_running_box_sends_after_an_enrolment_from_the_command_line(tmp_path, hub):
    data_dir = tmp_path / "box"
    env = {
        **clean_env(),
        "APPLIANCE_USB_ROOTS": "",
        "APPLIANCE_MIN_FREE_MB": "1",
        "APPLIANCE_DICOM_ENABLED": "false",
        "APPLIANCE_SYNC_INTERVAL_SECONDS": "0.3",
        "PYTHONUNBUFFERED": "1",
    }
    served = serve_box_with(data_dir, env)
    try:
        store = Store.open(data_dir)
        make_backlog(store, 2)  # screened before the box was enrolled
        time.sleep(1.0)  # passes of the sync thread while not enrolled: nothing to send
        assert hub_results(hub) == 0

        enrolled = subprocess.run(
            [sys.executable, "-m", "appliance", "sync", "enrol", "--data-dir", str(data_dir)]
            + ["--hub", hub.url, "--code", hub.enrol_code("Ndola")],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        assert wait_for(lambda: hub_results(hub) >= 2, 30, "the backlog at the hub")
        make_backlog(store, 1)  # a new result, after the enrolment: it follows by itself
        assert wait_for(lambda: hub_results(hub) >= 3, 30, "the new result at the hub")
        store.close()

        browser = Browser(served)
        browser.login("admin", ADMIN_PIN)
        _status, _response, page = browser.request("GET", "/system")
        page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
        assert f"Hub: {hub.url}" in page and "Enrolled for the site Ndola" in page
        assert "Waiting to send: 0 results" in page and "Received by the hub: 3 results" in page
        assert served.proc.poll() is None  # the same process all along
    finally:
        served.close()
    log = served.log_path.read_text()
    assert "not enrolled" not in log  # waiting for an enrolment is not a warning


def serve_box_with(data_dir, env) -> Served:
    """A real box with an admin (as ``boxkit.serve_box``), with this test's settings."""
    from appliance.store import users

    store = Store.open(data_dir)
    users.create_user(store, "admin", ADMIN_PIN, "admin")
    store.close()
    return Served(data_dir, env)
