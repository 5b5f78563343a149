"""Calibration and monitoring benchmark: ``appliance calibrate`` on 50,000 results.

    python bench/calibrate.py [--json] [--results 50000] [--verified 0.2] [--repeats 5]

Builds a data directory in a temporary folder holding ``--results`` results of the
installed child chest model (studies, images, results and their outbox rows written by
the store's own ``insert_result``, 2,500 per transaction), with scores drawn from two
overlapping distributions (30 % positive), and confirmatory outcomes for a
``--verified`` share of them imported from a CSV by ``import_csv``, as a lab register
would come in. Then times, median of ``--repeats``:

- ``calibrate()`` (what the page and the CLI compute);
- ``appliance calibrate MODEL --json`` as a process (Python start-up included);
- the monitoring report (``monitor.report``: every model's windows, health).

Goal: calibrate on 50,000 results in at most 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.config import load_config
from appliance.inference.bundle import read_manifest
from appliance.monitoring import calibration, monitor, outcome_import
from appliance.screening.models import CXR, models_dir, newest_bundles
from appliance.store.db import Store, utc_now
from appliance.store.results import insert_result

GOAL_S = 1.0
ROOT = Path(__file__).resolve().parent.parent


def fill(store: Store, version: str, count: int, verified: float, seed: int = 1) -> int:
    rng = np.random.default_rng(seed)
    labels = rng.random(count) < 0.3
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.17), 0.0005, 0.9995)
    lines = ["original_name,test,result,date"]
    now = utc_now()
    for start in range(0, count, 2500):
        with store.write() as conn:
            for n in range(start, min(start + 2500, count)):
                study = conn.execute(
                    "INSERT INTO studies (study_instance_uid, patient_id, created_at)"
                    " VALUES (?, ?, ?)",
                    (f"2.25.{n}", f"P{n:06d}", now),
                ).lastrowid
                image = conn.execute(
                    "INSERT INTO images (study_id, file_format, source, original_name, sha256,"
                    " size_bytes, stored_path, received_at, state, rows, columns)"
                    " VALUES (?, 'png', 'usb', ?, ?, 1, '', ?, 'decoded', 2048, 2048)",
                    (study, f"IM{n:06d}.png", f"{n:064x}", now),
                ).lastrowid
                p = float(scores[n])
                insert_result(
                    conn,
                    image,
                    None,
                    {
                        "route": "chest_xray",
                        "probability": p,
                        "score": round(100 * p),
                        "threshold": 0.5,
                        "triage": "review" if p >= 0.5 else "routine",
                        "model": {"name": CXR, "version": version, "sha256": "0" * 64},
                        "router": {"chest_xray": 0.98, "fundus_photo": 0.01, "other": 0.01},
                        "image_stats": {
                            "mean": 0.45 + 0.05 * rng.standard_normal(),
                            "contrast": 0.2,
                            "layout": [0.4] * 9,
                        },
                    },
                    None,
                )
                if rng.random() < verified:
                    result = "positive" if labels[n] else "negative"
                    lines.append(f"IM{n:06d}.png,xpert,{result},2024-05-01")
    report = outcome_import.import_csv(
        store, "\n".join(lines) + "\n", entered_by="bench", source="csv", match_days=14
    )
    assert report.ok, report.problems[:3]
    return report.imported


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", type=int, default=50_000)
    parser.add_argument("--verified", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-calibrate-"))
    try:
        config = load_config(folder / "data", environ={}, usb_roots=[], min_free_mb=1)
        store = Store.open(config.data_dir)
        version = read_manifest(newest_bundles(models_dir(config))[CXR])["version"]
        started = time.perf_counter()
        verified = fill(store, version, args.results, args.verified)
        build_s = time.perf_counter() - started
        report = calibration.calibrate(store, config, CXR, 0.9)
        calibrate_s = timed(lambda: calibration.calibrate(store, config, CXR, 0.9), args.repeats)
        monitor_s = timed(lambda: monitor.report(store, config), args.repeats)
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env["PYTHONPATH"] = str(ROOT)
        command = [
            sys.executable,
            "-m",
            "appliance",
            "calibrate",
            CXR,
            "--json",
            "--data-dir",
            str(config.data_dir),
        ]
        cli_s = timed(
            lambda: subprocess.run(command, check=True, capture_output=True, env=env),
            max(1, args.repeats // 2),
        )
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = {
        "results": args.results,
        "confirmed_outcomes": verified,
        "n_positive": report["n_positive"],
        "n_negative": report["n_negative"],
        "recommended_threshold": report["recommended_threshold"],
        "build_s": round(build_s, 1),
        "calibrate_s": round(calibrate_s, 3),
        "cli_calibrate_s": round(cli_s, 3),
        "monitor_report_s": round(monitor_s, 3),
        "goal_s": GOAL_S,
        "meets_goal": calibrate_s <= GOAL_S,
    }
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{args.results:,} results, {verified:,} confirmed outcomes "
        f"({report['n_positive']:,} positive, {report['n_negative']:,} negative); "
        f"built in {build_s:.0f} s"
    )
    print(f"{'what':<46} {'median':>10}")
    print(f"{'calibrate() (page and CLI computation)':<46} {calibrate_s:>9.3f}s")
    print(f"{'appliance calibrate --json (whole process)':<46} {cli_s:>9.3f}s")
    print(f"{'monitoring report (all models, health)':<46} {monitor_s:>9.3f}s")
    print(
        f"goal: calibrate <= {GOAL_S:.1f} s on {args.results:,} results: "
        + ("met" if rows["meets_goal"] else "NOT met")
    )


if __name__ == "__main__":
    main()
