"""UI benchmark: worklist and study pages with 10,000 results in the store.

    python bench/ui.py [--json] [--results 10000] [--requests 200]

Builds a data directory in a temporary folder: two real images (a chest CR from
pydicom-data and a fundus photo from tests/data) imported and screened by the real
pipeline, so the study page shows a real preview and heatmap; then the rest of the 10,000
results (plus 50 images still waiting) written straight into images/studies/results/jobs/
reviews with SQL, in one transaction, every row pointing at those two real previews and
heatmaps. The images arrive evenly over the last 120 days (about 80 a day), so "today" holds
what arrived since midnight UTC.

Server time: the WSGI call of the real app (``create_app``) through Flask's test client
with a logged-in clinician's session, ``--requests`` calls per page after a short warm-up
(p50/p95/max). Page weight: the HTML plus every stylesheet, script and image the page
loads, each counted once, as served (the box does not compress). Goals: p95 <= 100 ms,
worklist <= 200 KB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydicom.data import get_testdata_file

from appliance.config import load_config
from appliance.store import users
from appliance.store import worklist as queries
from appliance.store.db import Store
from appliance.store.worklist_items import rebuild

ROOT = Path(__file__).resolve().parent.parent

P95_GOAL_MS = 100.0
WORKLIST_GOAL_KB = 200.0
WAITING = 50
TABLES = ("studies", "images", "results", "jobs", "reviews")
PIN = "2468"
FAMILY = ["MOYO", "BANDA", "PHIRI", "SILVA", "SANTOS", "DIALLO", "MENSAH", "OKAFOR", "NKOSI"]
GIVEN = ["AMINA", "JOAO", "GRACE", "FATIMA", "PEDRO", "ESTHER", "IBRAHIM", "MARIA", "JOSEPH"]
REASONS = ["finding_missed", "false_alarm", "poor_image_quality", "artefact", "other"]
REFUSALS = [
    "This is a CT scan, not a chest X-ray or an eye photograph.",
    "The photo is too dark or blurred to grade.",
    "This looks like a lateral view; screening needs a frontal chest X-ray.",
]


def screen_real_images(store: Store, config) -> dict[str, dict]:
    """Import and screen one chest CR and one fundus photo with the real pipeline."""
    from appliance.ingest.importer import Importer
    from appliance.screening.models import ModelSet
    from appliance.screening.pipeline import Screener
    from appliance.worker import Worker

    importer = Importer(store, config)
    importer.import_path(Path(get_testdata_file("RG1_J2KI.dcm", download=False)), source="bench")
    importer.import_path(ROOT / "tests" / "data" / "fundus" / "IDRiD_003.jpg", source="bench")
    models = ModelSet(config, log_progress=lambda line: None).load()
    try:
        Worker(store, config, Screener(models, config), name="bench").drain()
    finally:
        models.close()
    real = {}
    for row in store.conn().execute(
        "SELECT r.*, i.preview_path FROM results r JOIN images i ON i.id = r.image_id"
    ):
        real[row["route"]] = dict(row)
    if set(real) != {"chest_xray", "fundus"}:
        raise RuntimeError(f"the real images were not screened as expected: {sorted(real)}")
    return real


def fill(store: Store, real: dict[str, dict], count: int, user_id: int, seed: int = 7) -> None:
    """``count`` screened images (+ WAITING waiting ones), one transaction, plain SQL."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    span = timedelta(days=120)  # about 80 images a day: a busy clinic's four months
    total = count + WAITING
    study_id = store.conn().execute("SELECT COALESCE(MAX(id), 0) FROM studies").fetchone()[0]
    with store.write() as conn:
        n = 0
        while n < total:
            study_id += 1
            when = now - span * (1 - n / total)
            stamp = when.isoformat(timespec="milliseconds")
            conn.execute(
                "INSERT INTO studies (id, study_instance_uid, patient_id, patient_name,"
                " study_date, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    study_id,
                    f"1.2.826.0.1.3680043.10.999.{study_id}",
                    f"P{rng.randrange(10**6):06d}",
                    f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
                    when.strftime("%Y%m%d"),
                    stamp,
                ),
            )
            for _ in range(min(rng.choice((1, 1, 1, 2)), total - n)):
                n += 1
                waiting = n > count
                add_image(conn, rng, real, study_id, n, stamp, waiting, user_id, now)


def add_image(conn, rng, real, study_id, n, stamp, waiting, user_id, now) -> None:
    kind = rng.choices(("chest_xray", "fundus", "refused"), (60, 30, 10))[0]
    modality = rng.choice(("CT", "MR", "CR")) if kind == "refused" else "CR"
    source = real["fundus" if kind == "fundus" else "chest_xray"]
    sha = hashlib.sha256(f"bench-{n}".encode()).hexdigest()
    dicom = kind != "fundus"
    cur = conn.execute(
        "INSERT INTO images (study_id, sop_instance_uid, modality, body_part, file_format,"
        " source, source_detail, original_name, sha256, size_bytes, stored_path, received_at,"
        " decoded_at, preview_path, state, rows, columns)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            study_id,
            f"1.2.826.0.1.3680043.10.999.{study_id}.{n}" if dicom else None,
            modality if dicom else None,
            "CHEST" if dicom else None,
            "dicom" if dicom else "jpeg",
            rng.choice(("dicom", "usb", "upload")),
            "bench",
            f"IMG_{n:05d}.{'dcm' if dicom else 'jpg'}",
            sha,
            rng.randrange(200_000, 8_000_000),
            f"images/{sha[:2]}/{sha}.{'dcm' if dicom else 'jpg'}",
            stamp,
            None if waiting else stamp,
            None if waiting else source["preview_path"],
            "received" if waiting else "decoded",
            2000,
            1600,
        ),
    )
    image_id = cur.lastrowid
    job = conn.execute(
        "INSERT INTO jobs (kind, image_id, state, attempts, created_at, updated_at)"
        " VALUES ('screen', ?, ?, ?, ?, ?)",
        (image_id, "queued" if waiting else "done", 0 if waiting else 1, stamp, stamp),
    ).lastrowid
    if waiting:
        return
    result = add_result(conn, rng, source, kind, image_id, job, stamp)
    triage = result["triage"]
    old = datetime.fromisoformat(stamp) < now - timedelta(days=2)
    if triage in ("urgent", "review") and old and rng.random() < 0.7:
        conn.execute(
            "INSERT INTO reviews (result_id, image_id, user_id, verdict, reasons, note,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                result["id"],
                image_id,
                user_id,
                rng.choice(("agree", "agree", "agree", "disagree")),
                json.dumps(rng.sample(REASONS, rng.randrange(0, 3))),
                rng.choice((None, None, "Seen in clinic, referred.")),
                stamp,
            ),
        )


def add_result(conn, rng, source, kind, image_id, job_id, stamp) -> dict:
    if kind == "refused":
        values = dict(route="refused", reason=rng.choice(REFUSALS), triage=None, score=None)
        values.update(probability=None, threshold=None, heatmap_path=None, model_name=None)
    else:
        threshold = source["threshold"]
        triage = rng.choices(("routine", "review", "urgent"), (75, 12, 13))[0]
        low, high = {
            "routine": (0.0, threshold),
            "review": (threshold, (1 + threshold) / 2),
            "urgent": ((1 + threshold) / 2, 1.0),
        }[triage]
        probability = rng.uniform(low, high)
        values = dict(route=kind, reason=None, triage=triage, probability=probability)
        values.update(score=round(probability * 100), threshold=threshold)
        values.update(heatmap_path=source["heatmap_path"], model_name=source["model_name"])
    cur = conn.execute(
        "INSERT INTO results (image_id, job_id, route, reason, hints, probability, score,"
        " threshold, triage, model_name, model_version, model_sha256, backend, router,"
        " quality, heatmap_path, timings, created_at)"
        " VALUES (?, ?, ?, ?, '[]', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            image_id,
            job_id,
            values["route"],
            values["reason"],
            values["probability"],
            values["score"],
            values["threshold"],
            values["triage"],
            values["model_name"],
            source["model_version"] if values["model_name"] else None,
            source["model_sha256"] if values["model_name"] else None,
            source["backend"],
            source["router"],
            source["quality"] if kind == "fundus" else None,
            values["heatmap_path"],
            source["timings"],
            stamp,
        ),
    )
    return {"id": cur.lastrowid, "triage": values["triage"]}


def log_in(client, username: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"csrf_token": token, "username": username, "pin": PIN})
    if response.status_code != 302:
        raise RuntimeError(f"login failed: {response.status_code}")


def server_times(client, urls: list[str], requests: int) -> list[float]:
    """Milliseconds per WSGI call, cycling through ``urls``."""
    for url in urls[:5]:  # warm-up: templates compiled, connections open
        client.get(url)
    times = []
    for n in range(requests):
        url = urls[n % len(urls)]
        started = time.perf_counter()
        response = client.get(url)
        body = response.get_data()
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or not body:
            raise RuntimeError(f"{url}: {response.status_code}")
    return times


ASSET = re.compile(r'<(?:link[^>]+href|script[^>]+src|img[^>]+src)="([^"]+)"')


def page_weight(client, url: str) -> dict[str, float]:
    html = client.get(url).get_data()
    assets = sorted(set(ASSET.findall(html.decode())))
    sizes = {a: len(client.get(a.replace("&amp;", "&")).get_data()) for a in assets}
    assets_kb = sum(sizes.values()) / 1024
    return {"html_kb": len(html) / 1024, "assets_kb": assets_kb, "kb": len(html) / 1024 + assets_kb}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(work: Path, count: int, requests: int) -> dict:
    from appliance.web import create_app

    config = load_config(work / "data", environ={}, usb_roots=[], min_free_mb=1)
    store = Store.open(config.data_dir)
    user_id = users.create_user(store, "bench", PIN, "clinician")
    real = screen_real_images(store, config)
    started = time.perf_counter()
    fill(store, real, count - len(real), user_id)
    with store.write() as conn:  # rows written with plain SQL: place them in the worklist
        rebuild(conn)
    fill_s = time.perf_counter() - started
    conn = store.conn()
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    store.close()

    app = create_app(config)
    client = app.test_client()
    log_in(client, "bench")
    app_store = app.extensions["appliance_store"]
    pages = []
    for name in queries.FILTERS:
        last = queries.worklist(app_store, name, 1)["pages"]
        for page in sorted({1, max(1, (last + 1) // 2)}):
            pages.append((f"worklist {name} p{page}", f"/?filter={name}&page={page}"))
    # Issue 24: searching by patient and day, the daily register and its CSV.
    some_day = app_store.conn().execute(
        "SELECT substr(MAX(received_at), 1, 10) FROM images"
    ).fetchone()[0]
    pages += [
        ("worklist search ID", "/?q=00042"),
        ("worklist search day", f"/?day={some_day}"),
        ("register (a day)", f"/register?day={some_day}"),
        ("register.csv (a day)", f"/register.csv?day={some_day}"),
    ]
    image_ids = [
        r[0]
        for r in app_store.conn().execute(
            "SELECT image_id FROM results ORDER BY image_id DESC LIMIT ?", (requests,)
        )
    ]
    rows = []
    for label, url in pages:
        rows.append((label, server_times(client, [url], requests), page_weight(client, url)))
    study_urls = [f"/study/{i}" for i in random.Random(1).sample(image_ids, len(image_ids))]
    with_heatmap = (
        app_store.conn()
        .execute(
            "SELECT image_id FROM results WHERE heatmap_path IS NOT NULL ORDER BY id DESC LIMIT 1"
        )
        .fetchone()[0]
    )
    weight = page_weight(client, f"/study/{with_heatmap}")
    rows.append(("study", server_times(client, study_urls, requests), weight))
    marker = server_times(client, ["/worklist/marker"], requests)
    rows.append(("worklist marker (poll)", marker, None))
    app_store.close()
    return {
        "results": counts["results"],
        "rows": counts,
        "fill_seconds": round(fill_s, 2),
        "requests_per_page": requests,
        "goals": {"p95_ms": P95_GOAL_MS, "worklist_kb": WORKLIST_GOAL_KB},
        "pages": [
            {
                "page": label,
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(percentile(times, 0.95), 2),
                "max_ms": round(max(times), 2),
                **({k: round(v, 1) for k, v in weight.items()} if weight else {}),
            }
            for label, times, weight in rows
        ],
    }


def verdicts(result: dict) -> list[str]:
    missed = []
    for row in result["pages"]:
        if row["p95_ms"] > P95_GOAL_MS:
            missed.append(f"{row['page']}: p95 {row['p95_ms']} ms > {P95_GOAL_MS:g} ms")
        if row["page"].startswith("worklist ") and row.get("kb", 0) > WORKLIST_GOAL_KB:
            missed.append(f"{row['page']}: {row['kb']} KB > {WORKLIST_GOAL_KB:g} KB")
    return missed


def print_table(result: dict) -> None:
    print(
        f"{result['results']:,} results ({result['rows']['images']:,} images,"
        f" {result['rows']['reviews']:,} reviews), {result['requests_per_page']} requests per"
        f" page; filled in {result['fill_seconds']} s"
    )
    print(f"{'page':<28}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'HTML KB':>9}{'total KB':>10}")
    for row in result["pages"]:
        weight = f"{row['html_kb']:>9.1f}{row['kb']:>10.1f}" if "kb" in row else f"{'':>9}{'':>10}"
        print(
            f"{row['page']:<28}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}{row['max_ms']:>9.1f}"
            + weight
        )
    missed = verdicts(result)
    print("goals met" if not missed else "goals missed:\n  " + "\n  ".join(missed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    try:
        result = measure(work, args.results, args.requests)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["goals_missed"] = verdicts(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
