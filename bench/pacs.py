"""PACS export benchmark: what DICOM results to PACS add to a result's critical path.

    python bench/pacs.py [--json] [--results 200] [--gap-ms 50]

The critical path is the worker's write transaction that stores a result (the store's
own ``insert_result``, commit included): the PACS rows are written inside it, and the
objects are built and sent afterwards by the sender thread. Timed per result, in a
fresh data directory each:

- ``none``: no ``pacs_destinations`` (the baseline);
- ``queued``: two PACS configured, no sender running (the rows only);
- ``sending``: two PACS configured and the sender running beside the worker, building
  the SR and Secondary Capture and sending them: to a real Orthanc where the binary is
  installed (one of the two PACS then answers), else to closed ports (backoff).

Results come ``--gap-ms`` apart (screening takes at least that). Goal: PACS export adds
at most 20 ms (median and 95th percentile) to the commit.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from appliance.config import load_config  # noqa: E402
from appliance.pacs.sender import PacsSender  # noqa: E402
from appliance.pacs.targets import register  # noqa: E402
from appliance.store.db import Store, utc_now  # noqa: E402
from appliance.store.results import insert_result  # noqa: E402

GOAL_MS = 20.0


def add_image(store: Store, n: int) -> int:
    now = utc_now()
    with store.write() as conn:
        study = conn.execute(
            "INSERT INTO studies (study_instance_uid, patient_id, created_at) VALUES (?, ?, ?)",
            (f"2.25.{10**20 + n}", f"P{n:06d}", now),
        ).lastrowid
        return conn.execute(
            "INSERT INTO images (study_id, file_format, source, original_name, sha256,"
            " size_bytes, stored_path, received_at, state, rows, columns, preview_path,"
            " modality) VALUES (?, 'png', 'usb', ?, ?, 1, '', ?, 'decoded', 1024, 1024,"
            " 'previews/bench.jpg', 'OT')",
            (study, f"IM{n:06d}.png", f"{n:064x}", now),
        ).lastrowid


def commit_times(store: Store, count: int, gap_s: float) -> list[float]:
    rng = np.random.default_rng(1)
    times = []
    for n in range(count):
        image_id = add_image(store, n)
        p = float(rng.random())
        result = {
            "route": "chest_xray",
            "probability": p,
            "score": round(100 * p),
            "threshold": 0.5,
            "triage": "review" if p >= 0.5 else "routine",
            "model": {"name": "cxr-pneumonia", "version": "1.1.0", "sha256": "0" * 64},
        }
        started = time.perf_counter()
        with store.write() as conn:
            insert_result(conn, image_id, None, result, None)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(gap_s)
    return times


def scenario(name: str, folder: Path, args, destinations: list[str]) -> dict:
    config = load_config(
        folder / name,
        environ={},
        usb_roots=[],
        min_free_mb=1,
        pacs_destinations=destinations,
        pacs_interval_seconds=0.2,
        pacs_retry_min_seconds=0.5,
        pacs_retry_max_seconds=2.0,
        pacs_timeout_seconds=5.0,
    )
    store = Store.open(config.data_dir)
    grey = np.tile(np.linspace(0, 255, 1024, dtype=np.uint8), (1024, 1))
    Image.fromarray(grey).save(config.data_dir / "previews" / "bench.jpg")
    register(store, config)
    stop = threading.Event()
    sender = None
    if name == "sending":
        sender = threading.Thread(
            target=PacsSender(store, config).run_forever, args=(stop,), daemon=True
        )
        sender.start()
    try:
        times = commit_times(store, args.results, args.gap_ms / 1000)
    finally:
        stop.set()
        if sender is not None:
            sender.join(timeout=30)
    sent = (
        store.conn()
        .execute("SELECT COUNT(*) FROM outbox WHERE destination = 'pacs' AND state = 'acked'")
        .fetchone()[0]
    )
    store.close()
    ordered = sorted(times)
    return {
        "scenario": name,
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "sent_during_run": sent,
    }


def orthanc_kit():
    """tests/pacs/orthanc.py (this file's own name hides the tests' ``pacs`` folder)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("orthanc_kit", ROOT / "tests/pacs/orthanc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # a closed port's retries are expected here
    folder = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    orthanc = None
    try:
        if shutil.which("Orthanc"):
            orthanc = orthanc_kit().Orthanc(folder / "orthanc")
            live = orthanc.address
        else:
            live = "NOWHERE@127.0.0.1:9"
        two = [live, "ELSEWHERE@127.0.0.1:7:sr"]
        rows = [
            scenario("none", folder, args, []),
            scenario("queued", folder, args, two),
            scenario("sending", folder, args, two),
        ]
    finally:
        if orthanc is not None:
            orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    base = rows[0]
    for row in rows:
        row["added_median_ms"] = round(row["median_ms"] - base["median_ms"], 2)
        row["added_p95_ms"] = round(row["p95_ms"] - base["p95_ms"], 2)
    worst = max(max(r["added_median_ms"], r["added_p95_ms"]) for r in rows)
    summary = {
        "results": args.results,
        "pacs": "Orthanc" if orthanc else "none reachable",
        "rows": rows,
        "goal_ms": GOAL_MS,
        "meets_goal": worst <= GOAL_MS,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"result commit, {args.results} results {args.gap_ms:.0f} ms apart ({summary['pacs']})")
    print(
        f"{'scenario':<10} {'median ms':>10} {'p95 ms':>8} {'added med':>10}"
        f" {'added p95':>10} {'sent':>6}"
    )
    for r in rows:
        print(
            f"{r['scenario']:<10} {r['median_ms']:>10.2f} {r['p95_ms']:>8.2f}"
            f" {r['added_median_ms']:>10.2f} {r['added_p95_ms']:>10.2f} {r['sent_during_run']:>6}"
        )
    print(
        f"goal: PACS export adds <= {GOAL_MS:.0f} ms:"
        f" {'met' if summary['meets_goal'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
