"""Sync benchmark: a 10,000-result backlog drained to the hub on loopback.

Two hubs in turn, SQLite (``hub.db``) and PostgreSQL (a throw-away cluster started from
the Debian binaries, as the tests do): wall time of ``SyncWorker.sync_once`` from probe
to the last acknowledgement, and bytes on the wire per result (both directions, headers
included, counted by a pass-through proxy; no images). Goals: <= 30 s, <= 1.5 KB/result.

    .venv/bin/python bench/sync.py [--json] [--results N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The tests' kit (hub, counting proxy, PostgreSQL launcher). bench/ itself leaves the path:
# this file is named sync.py and would hide the tests' ``sync`` folder.
sys.path[:] = [str(ROOT), str(ROOT / "tests")] + [
    p for p in sys.path[1:] if Path(p or ".").resolve() != Path(__file__).resolve().parent
]

from sync.synckit import (  # noqa: E402
    FaultProxy,
    HubThread,
    PostgresServer,
    enrol,
    make_backlog,
    postgres_binaries,
)

from appliance.config import load_config  # noqa: E402
from appliance.store.db import Store  # noqa: E402
from appliance.sync.worker import SyncWorker  # noqa: E402

GOAL_SECONDS = 30.0
GOAL_BYTES = 1536


def run_once(base: Path, database_url: str, count: int) -> dict:
    hub = HubThread(base / "hub", database_url)
    proxy = FaultProxy(hub.port, drop=0.0, cut=0.0, delay=0.0)  # counts bytes, no faults
    data_dir = base / "box"
    store = Store.open(data_dir)
    try:
        enrol(data_dir, hub.url, hub.enrol_code("Bench"))
        make_backlog(store, count)
        config = load_config(data_dir, environ={}, sync_hub_url=proxy.url)
        before = proxy.stats["bytes"]
        started = time.perf_counter()
        report = SyncWorker(store, config).sync_once()
        wall = time.perf_counter() - started
        assert report["acked"] == count, report
        conn = hub.conn()
        try:
            stored = conn.one("SELECT COUNT(*) AS n FROM entries")["n"]
        finally:
            conn.close()
        assert stored == count, stored
        per_result = (proxy.stats["bytes"] - before) / count
        return {
            "results": count,
            "wall_s": round(wall, 2),
            "results_per_s": round(count / wall),
            "bytes_per_result": round(per_result),
            "requests": proxy.stats["connections"],
            "meets_goal": wall <= GOAL_SECONDS and per_result <= GOAL_BYTES,
        }
    finally:
        proxy.close()
        hub.close()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", type=int, default=10_000)
    args = parser.parse_args()
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        out["sqlite"] = run_once(Path(tmp) / "sqlite", "", args.results)
    bindir = postgres_binaries()
    if bindir is None:
        out["postgresql"] = {"skipped": "PostgreSQL binaries not installed"}
    else:
        pg_base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        server = PostgresServer(bindir, pg_base)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
                out["postgresql"] = run_once(Path(tmp), server.create_database(), args.results)
        finally:
            server.stop()
            shutil.rmtree(pg_base, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, row in out.items():
            if "skipped" in row:
                print(f"{name:10} skipped: {row['skipped']}")
                continue
            print(
                f"{name:10} {row['results']} results in {row['wall_s']} s"
                f" ({row['results_per_s']}/s), {row['bytes_per_result']} B/result,"
                f" {row['requests']} requests — goal <= {GOAL_SECONDS:.0f} s and"
                f" <= {GOAL_BYTES} B: {'met' if row['meets_goal'] else 'NOT met'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
