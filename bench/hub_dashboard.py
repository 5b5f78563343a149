"""Hub dashboard at programme scale: 1,000,000 results from 500 sites in PostgreSQL.

Builds the programme's year with COPY (results over 52 weeks, triage and refusals in
realistic shares, reviews for most positives, outcomes and treatment for some), counts
the tallies with the same SQL migrations 2 and 8 use, then times every dashboard page
(the programme's, a site's, a box's, a day's, the care cascade) and export through the
app (Flask's test client, signed in: the app and its queries, not the network), a live
200-entry batch written into the million rows, and prints the PostgreSQL plan of each
query the pages run, FHIR searches (HTTP Basic, as a records system asks) and a FHIR
push pass after a batch arrives. Goal: every dashboard page p95 <= 200 ms.

    python bench/hub_dashboard.py [--results 1000000] [--sites 500] [--json]
        [--database-url URL]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), str(ROOT / "tests")] + [
    p for p in sys.path[1:] if Path(p or ".").resolve() != Path(__file__).resolve().parent
]

from sync.synckit import hub_database_url  # noqa: E402

from appliance.hub import cascade_outcomes, cascade_rows, create_app, records  # noqa: E402
from appliance.hub.migrations import PROGRAMME_TALLY_REBUILD, TALLY_REBUILD  # noqa: E402

GOAL_P95_MS = 200.0
NULL = "\\N"  # COPY's NULL
PASSWORD = "correct horse battery"
MODELS = (("cxr-pneumonia", "1.2.0"), ("cxr-pneumonia", "1.3.0"), ("fundus-referable-dr", "2.0.1"))
PAYLOAD = (
    '{{"image":{{"sha256":"{sha}"{patient},"modality":"CR","body_part":"CHEST"}},"route":"{route}",'
    '"probability":{p:.4f},"score":{score},"threshold":0.5,"triage":{triage},'
    '"model":{{"name":"{model}","version":"{version}"}},"backend":"onnxruntime",'
    '"created_at":"{created}"}}'
)
OUTCOME = (
    '{{"image":{{"sha256":"{sha}"}},"test":"xpert","tested_on":"{tested}","result":"{result}",'
    '"positive":{positive},"created_at":"{tested}T15:00:00+00:00"{treatment}}}'
)


def build(conn, results: int, sites: int) -> dict:
    """Devices with COPY'd entries, then the tallies; returns what was written."""
    conn.execute("SET statement_timeout = 0")  # a COPY of a million rows takes a while
    start = date.today() - timedelta(weeks=52)
    devices = []
    with conn.transaction():
        for i in range(sites):
            device_id = f"dev-{i:05d}"
            devices.append(device_id)
            conn.execute(
                "INSERT INTO devices (id, site, name, token_hash, public_key, enrolled_at,"
                " last_seen_at) VALUES (?, ?, ?, ?, 'k', '2025-01-01', '2026-01-01')",
                (device_id, f"SITE-{i:03d}", f"box-{i:03d}", f"t{i}"),
            )
    written = {"results": 0, "reviews": 0, "outcomes": 0}
    started = time.perf_counter()
    with (
        conn.raw.cursor() as cur,
        cur.copy(
            "COPY entries (device_id, entry_id, revision, kind, image_sha256, route, triage,"
            " model_name, model_version, week, payload, received_at, patient_id, result_day)"
            " FROM STDIN"
        ) as copy,
    ):
        lines = []
        for n in range(results):
            device_id = devices[n % sites]
            day = start + timedelta(days=(n * 7919) % 364)
            year, week, _ = day.isocalendar()
            sha = hashlib.sha256(str(n).encode()).hexdigest()
            roll = (n * 37) % 100
            triage = "urgent" if roll < 5 else "review" if roll < 15 else "routine"
            model, version = MODELS[n % len(MODELS)]
            route = "fundus" if model.startswith("fundus-") else "chest_xray"
            if roll >= 85:
                route, triage = "refused", None
            patient = f"P{n % 250_000:06d}" if n % 5 else None  # ~4 films each, 1 in 5 none
            payload = PAYLOAD.format(
                sha=sha,
                patient=f',"patient_id":"{patient}"' if patient else "",
                route=route,
                p=roll / 100,
                score=roll,
                triage=f'"{triage}"' if triage else "null",
                model=model,
                version=version,
                created=f"{day.isoformat()}T10:00:00+00:00",
            )
            received = f"{day.isoformat()}T12:00:00.000+00:00"
            tr = triage or "\\N"
            lines.append(
                f"{device_id}\tresult:{n:08d}\t1\tresult\t{sha}\t{route}\t{tr}\t{model}\t"
                f"{version}\t{year}-W{week:02d}\t{payload}\t{received}\t"
                f"{patient or NULL}\t{day.isoformat()}\n"
            )
            written["results"] += 1
            if triage in ("urgent", "review") and n % 5:  # 4 in 5 positives reviewed
                review = f'{{"image":{{"sha256":"{sha}"}},"verdict":"agree"}}'
                lines.append(
                    f"{device_id}\treview:{sha}\t1\treview\t{sha}\t\\N\t\\N\t\\N\t\\N\t"
                    f"{year}-W{week:02d}\t{review}\t{received}\t{NULL}\t{NULL}\n"
                )
                written["reviews"] += 1
                if n % 2:  # half of them tested (the care cascade), a third of those treated
                    tested = (day + timedelta(days=n % 9)).isoformat()
                    found = roll < 8
                    treated = f',"treatment":{{"started_on":"{tested}","where":"clinic"}}'
                    outcome = OUTCOME.format(
                        sha=sha, tested=tested, result="positive" if found else "negative",
                        positive="true" if found else "false",
                        treatment=treated if n % 3 == 0 else "",
                    )
                    lines.append(
                        f"{device_id}\toutcome:{sha}\t1\toutcome\t{sha}\t\\N\t\\N\t\\N\t"
                        f"\\N\t{year}-W{week:02d}\t{outcome}\t{received}\t{NULL}\t{NULL}\n"
                    )
                    written["outcomes"] += 1
            if len(lines) >= 20_000:
                copy.write("".join(lines))
                lines = []
        for i, device_id in enumerate(devices):  # each box's monitoring summary
            warnings = [{"message": "positivity drifted"}] if i % 25 == 0 else []
            summary = json.dumps(
                {
                    "generated_at": "2026-01-01T00:00:00+00:00",
                    "calibration": {
                        m: {"version": v, "threshold": 0.5, "source": "bundle"} for m, v in MODELS
                    },
                    "warnings": warnings,
                }
            )
            lines.append(
                f"{device_id}\tmonitor:summary\t1\tmonitor\t\\N\t\\N\t\\N\t\\N\t\\N\t"
                f"\\N\t{summary}\t2026-01-01T00:00:00.000+00:00\t{NULL}\t{NULL}\n"
            )
        copy.write("".join(lines))
    written["copy_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    conn.execute("ANALYZE")  # the planner must know the entries are a million now
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = 0")
        for statement in (*TALLY_REBUILD, *PROGRAMME_TALLY_REBUILD):
            conn.execute(statement)
        cascade_outcomes.rebuild(conn)  # the outcomes read once (hub migration 9)
        cascade_rows.rebuild(conn)  # each patient's weeks (hub migration 10)
    conn.execute("ANALYZE")
    written["tallies_s"] = round(time.perf_counter() - started, 1)
    written["tally_rows"] = conn.one("SELECT COUNT(*) AS n FROM tallies")["n"]
    return written


def weeks_before(week: str, n: int) -> str:
    year, number = week.split("-W")
    monday = date.fromisocalendar(int(year), int(number), 1) - timedelta(weeks=n)
    y, w, _ = monday.isocalendar()
    return f"{y}-W{w:02d}"


def signed_in(app):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf})
    return client


def timed(client, path: str, runs: int, headers: dict | None = None) -> dict:
    times = []
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path, headers=headers)
        body = answer.get_data()  # a streamed CSV is read to its end
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
        size = len(body)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"p50_ms": round(times[len(times) // 2], 1), "p95_ms": round(p95, 1), "bytes": size}


def plans(conn) -> dict[str, str]:
    """The plan of each query the pages run (the first lines: what is scanned how)."""
    from appliance.hub import tallies

    week = conn.one("SELECT MAX(week) AS w FROM tallies")["w"]
    queries = {
        "per_site": f"SELECT d.site, {tallies.SUMS} FROM tallies t JOIN devices d"
        " ON d.id = t.device_id GROUP BY d.site",
        "monitor summaries": "SELECT payload FROM entries WHERE kind = 'monitor'",
        "csv page of one site": "SELECT entry_id FROM entries WHERE device_id = 'dev-00001'"
        f" AND kind = 'result' AND week >= '{week}' AND entry_id > '' ORDER BY entry_id"
        " LIMIT 5000",
        "known/upsert lookup": "SELECT entry_id, revision FROM entries"
        " WHERE device_id = 'dev-00001' AND entry_id IN ('result:00000001', 'result:00000501')",
        "pending images": "SELECT image_sha256, kind FROM entries WHERE device_id = 'dev-00001'"
        " AND image_sha256 IN ('ab', 'cd') AND kind IN ('result', 'review')",
        "fhir by patient": f"{FHIR_SQL} AND e.patient_id = 'P000123' {FHIR_ORDER}",
        "fhir by day": f"{FHIR_SQL} AND e.result_day >= '2026-01-05'"
        f" AND e.result_day < '2026-01-06' {FHIR_ORDER}",
        "fhir newest": f"{FHIR_SQL} {FHIR_ORDER}",
        "fhir push: arrived since": "SELECT entry_id FROM entries WHERE received_at <= '2027'"
        " AND (received_at, device_id, entry_id) > ('2026-06', '', '')"
        " ORDER BY received_at, device_id, entry_id LIMIT 1000",
    }
    out = {}
    for name, sql in queries.items():
        rows = conn.execute("EXPLAIN " + sql)
        out[name] = " | ".join(r["QUERY PLAN"].strip() for r in rows[:4])
    return out


FHIR_SQL = (
    "SELECT e.entry_id FROM entries e JOIN devices d ON d.id = e.device_id WHERE e.kind = 'result'"
)
FHIR_ORDER = "ORDER BY e.received_at DESC, e.device_id DESC, e.entry_id DESC LIMIT 500"


class FhirSink:
    """A FHIR server that takes every transaction Bundle (200) and counts them."""

    def __init__(self) -> None:
        import http.server
        import threading

        sink = self
        self.taken = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.taken += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def push_passes(app, base: Path) -> dict:
    """The FHIR pusher on a hub holding the million results (pushed before: its position
    at their end), after one box's 200-result batch arrives, then with nothing new."""
    from appliance.hub.fhir import push

    database = app.extensions["hub_database"]
    conn = database.connect()
    try:
        last = conn.one(
            "SELECT received_at, device_id, entry_id FROM entries"
            " ORDER BY received_at DESC, device_id DESC, entry_id DESC LIMIT 1"
        )
        push._keep_position(conn, (last["received_at"], last["device_id"], last["entry_id"]))
    finally:
        conn.close()
    live_batch_ms(app, "pushed")  # 200 results arrive
    sink = FhirSink()
    pusher = push.FhirPusher(database, sink.url, base, settle_seconds=0)
    out = {}
    for name in ("after a 200-result batch", "nothing new"):
        started = time.perf_counter()
        report = pusher.push_once()
        out[name] = {"s": round(time.perf_counter() - started, 2), **report}
    sink.server.shutdown()
    return out


def live_batch_ms(app, prefix: str = "live") -> float:
    """One box's 200-result batch written into the million rows (tallies included)."""
    conn = app.extensions["hub_database"].connect()
    try:
        batch = [
            {
                "id": f"result:{prefix}{n}",
                "rev": 1,
                "kind": "result",
                "data": {
                    "image": {"sha256": f"{n:064x}"},
                    "triage": "urgent",
                    "route": "cxr",
                    "created_at": date.today().isoformat(),
                },
            }
            for n in range(200)
        ]
        started = time.perf_counter()
        with conn.transaction():
            records.store_entries(conn, "dev-00001", batch)
        return round((time.perf_counter() - started) * 1000, 1)
    finally:
        conn.close()


def run(url: str, base: Path, args) -> dict:
    app = create_app(base / "hub", url)
    conn = app.extensions["hub_database"].connect()
    try:
        written = build(conn, args.results, args.sites)
        records.set_admin(conn, "admin", PASSWORD)
        week = conn.one("SELECT MAX(week) AS w FROM tallies WHERE week <> ''")["w"]
        first = conn.one("SELECT MIN(week) AS w FROM tallies WHERE week <> ''")["w"]
        newest_day = conn.one(
            "SELECT MAX(result_day) AS d FROM entries WHERE device_id = 'dev-00001'"
        )["d"]
        explained = plans(conn)
    finally:
        conn.close()
    client = signed_in(app)
    month = f"from={weeks_before(week, 3)}&to={week}"
    one_week = f"from={week}&to={week}"
    pages = {  # what a person waits for: goal p95 <= 200 ms
        "/ (dashboard, sites 1-50)": "/",
        "/?page=10 (sites 451-500)": "/?page=10",
        "/login": "/login",
        # issue 29: the programme page (its charts: results per week per programme,
        # positivity and refusal with the band), a site's and a box's (weekly charts,
        # score distribution against the validation), a day of a box
        "/sites/SITE-001 (site: charts, drift)": "/sites/SITE-001",
        "/sites/SITE-250 (site: charts, drift)": "/sites/SITE-250",
        "/boxes/dev-00001 (box: charts, drift, days)": "/boxes/dev-00001",
        "/boxes/dev-00001/days/DAY (a day's results)": f"/boxes/dev-00001/days/{newest_day}",
        # the care cascade (13 weeks): one site's (also on its page), and every site's
        "/cascade?site=SITE-001 (one site)": "/cascade?site=SITE-001",
        "/cascade (all sites, sites 1-50)": "/cascade",
        "/cascade?page=2 (all sites, sites 51-100)": "/cascade?page=2",
        "indicators.json (DHIS2, all sites, one week)": f"/export/indicators.json?{one_week}",
        "indicators.csv (all sites, one week)": f"/export/indicators.csv?{one_week}",
        "indicators.json (DHIS2, one site, the year)": "/export/indicators.json?site=SITE-001",
        "results.csv (one site, the year)": "/export/results.csv?site=SITE-001",
        "results.csv (one site, 4 weeks)": f"/export/results.csv?site=SITE-001&{month}",
    }
    bulk = {  # downloads of the whole programme: their size is the point; 3 runs each
        "indicators.json (DHIS2, all sites, 4 weeks)": f"/export/indicators.json?{month}",
        "indicators.json (DHIS2, all sites, the year)": "/export/indicators.json",
        "results.csv (all sites, one week)": f"/export/results.csv?{one_week}",
        "results.csv (all sites, the year)": f"/export/results.csv?from={first}",
    }
    timings = {name: timed(client, path, args.runs) for name, path in pages.items()}
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
    day = (date.today() - timedelta(weeks=26)).isoformat()  # mid-year: ~2,700 results
    fhir = {  # a records system asking for reports: HTTP Basic, so a password check each
        "newest 50": "/fhir/DiagnosticReport?_count=50",
        "one patient": "/fhir/DiagnosticReport?patient=P000123",
        "a patient with none": "/fhir/DiagnosticReport?patient=NOBODY",
        "one site, one day": f"/fhir/DiagnosticReport?site=SITE-001&date={day}",
        "all sites, one day, 50": f"/fhir/DiagnosticReport?date={day}&_count=50",
        "one patient, since a day": f"/fhir/DiagnosticReport?patient=P000123&date=ge{day}",
        "read one report": "/fhir/DiagnosticReport/dev-00001.00000001",
    }
    fhir_timings = {name: timed(client, path, args.runs, basic) for name, path in fhir.items()}
    bulky = {
        name: timed(client, path, 3 if "year" not in name else 1) for name, path in bulk.items()
    }
    return {
        "results": written["results"],
        "reviews": written["reviews"],
        "outcomes": written["outcomes"],
        "sites": args.sites,
        "copy_s": written["copy_s"],
        "tallies_s": written["tallies_s"],
        "tally_rows": written["tally_rows"],
        "pages": timings,
        "fhir": fhir_timings,
        "bulk exports": bulky,
        "live_200_entry_batch_ms": live_batch_ms(app),
        "fhir push": push_passes(app, base),
        "plans": explained,
        # FHIR answers cost ~100 ms of password check (HTTP Basic) and a few ms per report
        # built and validated, whatever the database holds: reported, not held to the goal
        "meets_goal": all(t["p95_ms"] <= GOAL_P95_MS for t in timings.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-hubdash-"))
    try:
        with hub_database_url(args.database_url) as url:
            report = run(url, base, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if isinstance(value, dict):
                print(key)
                for name, row in value.items():
                    print(f"  {name:48} {row}")
            else:
                print(f"{key:50} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
