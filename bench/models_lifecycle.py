"""Model lifecycle benchmark: the activation pause and what shadow mode costs per image.

    python bench/models_lifecycle.py [--json] [--images 40]

Builds data directories in a temporary folder, with the committed bundles and a "new"
cxr-adult-abnormal version (the committed one with another version and calibration,
packed, signed with a fresh programme key and installed through ``appliance.lifecycle``):

* shadow cost: the same ``--images`` chest X-rays (tests/data/cxr64) screened by the
  real worker in a box without a shadow and in one with the new version in shadow;
  per-image wall time of each (``Worker.drain``), the difference, and the shadow's own
  time as the worker recorded it (``shadow_results.timings``).
* activation pause: a worker thread screens a queue of 3 x ``--images`` images; after
  a third of them the new version is activated (another thread, as the CLI would from
  another process). Reported: the model-set swap itself (the only moment a job waits),
  the longest gap between two results around the switch against the median gap, and how
  long after the activation the first image was screened by the new version (meanwhile
  the old version screens: the new set loads in the background). Goal: pause <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test kit's "new version" of a bundle

from lifecycle.modelkit import NAME, NEW, new_version  # noqa: E402

from appliance.config import load_config  # noqa: E402
from appliance.ingest.importer import Importer  # noqa: E402
from appliance.lifecycle.activation import activate  # noqa: E402
from appliance.lifecycle.install import install  # noqa: E402
from appliance.lifecycle.keys import trust  # noqa: E402
from appliance.lifecycle.pack import pack  # noqa: E402
from appliance.screening.models import ModelSet  # noqa: E402
from appliance.screening.pipeline import Screener  # noqa: E402
from appliance.store.db import Store  # noqa: E402
from appliance.wire.model_signature import new_key  # noqa: E402
from appliance.worker import Worker  # noqa: E402

CXR = sorted((ROOT / "tests" / "data" / "cxr64").glob("*.png"))
PAUSE_GOAL_MS = 1000.0


def box(folder: Path, signed: Path | None, public: str | None):
    config = load_config(folder, environ={}, usb_roots=[], min_free_mb=1)
    store = Store.open(config.data_dir)
    if signed is not None:
        trust(config.data_dir, public)
        install(store, config, signed, actor="bench")
    models = ModelSet(config, log_progress=lambda line: None).load()
    screener = Screener(models, config)
    return store, config, screener, Worker(store, config, screener, name="bench")


def queue(store, config, paths) -> None:
    importer = Importer(store, config)
    for index, path in enumerate(paths):
        # The same pixels under another name and bytes: the store keeps one per sha256.
        copy = Path(config.data_dir) / "tmp" / f"{index}-{path.name}"
        copy.write_bytes(path.read_bytes() + index.to_bytes(4, "big"))
        importer.import_path(copy, source="upload")


def timed_drain(store, config, worker, paths) -> float:
    queue(store, config, paths)
    started = time.perf_counter()
    done = worker.drain()
    return (time.perf_counter() - started) * 1000 / max(done, 1)


def shadow_cost(base: Path, signed: Path, public: str, images: int) -> dict:
    paths = [CXR[i % len(CXR)] for i in range(images)]
    out = {}
    for label, file in (("without_shadow", None), ("with_shadow", signed)):
        store, config, screener, worker = box(base / label, file, public)
        timed_drain(store, config, worker, paths[:5])  # warm-up
        out[label] = timed_drain(store, config, worker, paths)
        if file is not None:
            rows = store.conn().execute("SELECT timings FROM shadow_results").fetchall()
            out["shadow_own_ms"] = statistics.mean(json.loads(r[0])["shadow"] for r in rows)
            out["shadow_results"] = len(rows)
        screener.models.close()
        store.close()
    out["added_ms"] = out["with_shadow"] - out["without_shadow"]
    return out


def activation_pause(base: Path, signed: Path, public: str, images: int) -> dict:
    store, config, screener, worker = box(base / "activation", signed, public)
    paths = [CXR[i % len(CXR)] for i in range(3 * images)]
    queue(store, config, paths)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.05))
    thread.start()
    conn = store.conn()
    while conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] < images:
        time.sleep(0.01)
    activated = datetime.fromisoformat(
        conn.execute("SELECT strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')").fetchone()[0]
    )
    activate(store, config, NAME, NEW, actor="bench")
    while conn.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0]:
        time.sleep(0.05)
    stop.set()
    thread.join()
    rows = conn.execute("SELECT created_at, model_version, model_name FROM results ORDER BY id")
    done = [(datetime.fromisoformat(r[0]), r[1], r[2]) for r in rows]
    gaps = [(b[0] - a[0]).total_seconds() * 1000 for a, b in zip(done, done[1:], strict=False)]
    first_new = next(i for i, r in enumerate(done) if r[2] == NAME and r[1] == NEW)
    around = gaps[max(0, images - 2) : first_new + 1]
    screener.models.close()
    store.close()
    return {
        "swap_ms": screener.last_swap_ms,
        "median_gap_ms": statistics.median(gaps),
        "max_gap_around_switch_ms": max(around),
        "pause_ms": max(around) - statistics.median(gaps),
        "switched_after_ms": (done[first_new][0] - activated).total_seconds() * 1000,
        "images_on_old_version_after_activation": sum(
            1 for r in done[images:first_new] if r[2] == NAME
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-models-"))
    try:
        key = base / "programme.key"
        public = new_key(key)
        signed = base / "new.tar"
        pack(new_version(base / "built"), key, signed)
        report = {
            "images": args.images,
            "shadow": shadow_cost(base, signed, public, args.images),
            "activation": activation_pause(base, signed, public, args.images),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["activation"]["goal_ms"] = PAUSE_GOAL_MS
    report["activation"]["ok"] = report["activation"]["pause_ms"] <= PAUSE_GOAL_MS
    if args.json:
        print(json.dumps(report, indent=2))
        return
    s, a = report["shadow"], report["activation"]
    rows = [
        ("per image, no shadow (ms)", s["without_shadow"]),
        ("per image, with shadow (ms)", s["with_shadow"]),
        ("shadow's added latency per image (ms)", s["added_ms"]),
        ("shadow's own time per image (ms)", s["shadow_own_ms"]),
        ("model-set swap (ms)", a["swap_ms"]),
        ("median gap between results (ms)", a["median_gap_ms"]),
        ("longest gap around the switch (ms)", a["max_gap_around_switch_ms"]),
        ("activation pause (ms, goal <= 1000)", a["pause_ms"]),
        ("first new-version result after (ms)", a["switched_after_ms"]),
    ]
    print(f"{'measure':40} {'value':>10}")
    for label, value in rows:
        print(f"{label:40} {value:10.2f}")
    print(f"images: {args.images} per run; pause within goal: {a['ok']}")


if __name__ == "__main__":
    main()
