"""1,000 mutated real files through a running ``appliance serve`` (tests/fuzzkit.py).

Done when: 0 crashes, 0 5xx, every file stored or quarantined with a reason, every
stored one screened or quarantined at decode (no job failed or left unfinished), and
the service's peak resident memory (VmHWM) within 1 GB. ``bench/fuzz.py`` runs more.
"""

from __future__ import annotations

import os

import pytest
from fuzzkit import drive, mutants
from helpers import Served

FILES = 1000
PEAK_RSS_BOUND_MB = 1024


@pytest.mark.slow
def test_a_thousand_mutated_files_crash_nothing_and_each_gets_an_outcome(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_USB_ROOTS="", APPLIANCE_MIN_FREE_MB="1")
    served = Served(tmp_path / "data", env)
    try:
        tally = drive(served, mutants(FILES, seed=12), settle_seconds=240)
        health = served.wait_healthy()
    finally:
        served.close()
    row = tally.row()
    print(row)
    assert row["files"] == FILES
    assert (row["crashes"], row["5xx"]) == (0, 0), row
    assert tally.no_reason == []
    assert row["stored"] + row["quarantined_at_door"] == FILES, tally.statuses
    assert (row["jobs_failed"], row["jobs_unfinished"]) == (0, 0), row
    assert row["peak_rss_mb"] <= PEAK_RSS_BOUND_MB, row
    assert health["status"] == "ok"
    # pydicom logs each decoder plugin's refusal with its traceback; what must not be in
    # the log is a job that failed, or a thread that died.
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "failed, now" not in log
    assert "Exception in thread" not in log and "worker loop error" not in log
