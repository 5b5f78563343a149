"""``bench/hub_load.py`` still runs end to end (a few boxes, a lossy link, a small queue
threshold so some are told to come back): the figures in docs/hub.md come from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sync.synckit import clean_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform != "linux", reason="gunicorn pre-forks: Linux")
def test_the_load_bench_stores_every_entry_exactly_once(postgres):
    url = postgres.create_database()
    argv = [sys.executable, str(ROOT / "bench" / "hub_load.py"), "--boxes", "12"]
    argv += ["--results", "40", "--batch", "20", "--drop", "0.3", "--workers", "2"]
    argv += ["--shed-after-ms", "1", "--retry-max", "1", "--database-url", url, "--json"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, env=clean_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["sent"] == report["stored"] == 12 * 50 and report["duplicates"] == 0
    assert report["exactly_once"] and report["tallies_match"] and report["errors"] == 0
    # Drops happened; each cost a box a failed try, or (on a kept connection) an
    # immediate second try on a new one.
    assert report["dropped_by_proxy"] > 0
    assert report["requests"] >= 12 * 4  # a probe and three batches each, at least
