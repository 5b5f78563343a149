"""Hub load test: N enrolled boxes, each holding M results and their reviews, all coming
back at once after an outage, through a proxy that drops a share of the requests.

What is real: the hub is ``appliance hub serve --workers W`` (gunicorn, pooled
PostgreSQL) as a separate process; each box enrols with a one-time code and its own
Ed25519 public key and gets its own device token; requests go through the box's own
``HubClient`` (gzip'd JSON, bearer token) with the box worker's retry rule
(``REQUEST_ATTEMPTS`` tries with ``backoff_delay`` full jitter, then the pass fails and
starts again after a longer backoff, from the probe); the entries are what a real box's
outbox holds (a template box filled by ``insert_result`` and ``add_review``, then
copied per box with fresh ids and image hashes, dates spread over 12 weeks) in the
sync worker's batches. The fault proxy (tests/sync/synckit.py, in a process of its own:
bench/hub_loadproxy.py) drops ``--drop`` of the connections after reading the request's
start; without faults the boxes connect to the hub directly.

The hub sheds load (``--shed-after-ms``, appliance/hub/admission.py): a box's request
that waited longer for a worker thread is answered 503 with Retry-After, and the box
waits as told (``busy_delay``). ``p95_ms`` is over every answer the boxes got, those
included (``deferred``); ``done_p95_ms`` over the requests that did their work;
``page_p95_ms`` over a person's sign-in page fetched every 0.25 s during the burst.
Each latency runs from the request going on the wire to its answer read (the box's
JSON and gzip are left out: here 500 boxes share one process's CPU).

Then the hub's rows are checked against what was sent: every entry stored exactly
once, at its revision, and the tallies the dashboard reads equal to a recount from
the entries. ``--kill-worker-after S`` kill -9s one gunicorn worker S seconds in.

    python bench/hub_load.py --boxes 500 --results 200 [--drop 0.3] [--json]
        [--database-url URL] [--workers W] [--threads T] [--shed-after-ms MS]
        [--kill-worker-after S] [--spread S]

PostgreSQL is started (a throw-away cluster, as the tests do) when no URL is given.
Goals: p95 <= 500 ms, all in <= 300 s, 0 errors, every entry stored exactly once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), str(ROOT / "tests")] + [
    p for p in sys.path[1:] if Path(p or ".").resolve() != Path(__file__).resolve().parent
]

from sync.synckit import clean_env, hub_database_url, wait_for_port  # noqa: E402

from appliance.hub import records, tallies  # noqa: E402
from appliance.hub.db import HubDatabase  # noqa: E402


def _sibling(name: str):
    """bench/NAME.py (bench/ is off the path: its sync.py would hide the tests' sync/)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


Box = _sibling("hub_loadbox").Box
template_entries = sys.modules["hub_loadbox"].template_entries
GOAL_P95_MS = 500.0
GOAL_SECONDS = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_hub(
    base: Path, url: str, workers: int, threads: int, shed_after_ms: float
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [sys.executable, "-m", "appliance", "hub", "serve", "--data-dir", str(base / "hub")]
    args += ["--port", str(port), "--database-url", url]
    args += ["--workers", str(workers), "--threads", str(threads)]
    args += ["--shed-after-ms", str(shed_after_ms)]
    args += ["--access-log", str(base / "access.log")]
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    with open(base / "hub.log", "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=ROOT)
    wait_for_port(port, 60)
    time.sleep(1.0)  # the workers are forked once the port is bound
    return proc, port


def watch(proc: subprocess.Popen, abort: threading.Event) -> None:
    """The hub's master exiting ends the run (its log says why)."""
    proc.wait()
    abort.set()


class ProxyProcess:
    """``bench/hub_loadproxy.py``: the fault proxy in a process of its own."""

    def __init__(
        self, target_port: int, drop: float, cut: float, tls: bool, seed: int = 18
    ) -> None:
        script = Path(__file__).with_name("hub_loadproxy.py")
        argv = [sys.executable, str(script), str(target_port), str(drop), str(cut), str(seed)]
        if tls:  # bytes it cannot read: faults per connection
            argv.append("per-connection")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=clean_env())
        self.port = json.loads(self.proc.stdout.readline())["port"]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.stats = {"dropped": 0, "cut": 0}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            out, _ = self.proc.communicate(timeout=30)
            if out.strip():
                self.stats = json.loads(out.strip().splitlines()[-1])


def watch_page(url: str, stop: threading.Event, times_ms: list[float], ca_bundle: str = "") -> None:
    """A person opening a hub page (the sign-in page: no database) every 0.25 s."""
    import http.client
    import ssl

    secure = url.startswith("https://")
    host, port = url.split("://")[1].split(":")
    context = ssl.create_default_context(cafile=ca_bundle) if secure else None
    while not stop.wait(0.25):
        started = time.perf_counter()
        conn = (
            http.client.HTTPSConnection(host, int(port), timeout=60, context=context)
            if secure
            else http.client.HTTPConnection(host, int(port), timeout=60)
        )
        try:
            conn.request("GET", "/login")
            conn.getresponse().read()
        except OSError:
            continue
        finally:
            conn.close()
        times_ms.append((time.perf_counter() - started) * 1000)


def workers_of(master: int) -> list[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def spread(prefix: str, values: list[float], quantiles: tuple[int, ...]) -> dict[str, float]:
    return {f"{prefix}p{q}_ms": round(percentile(values, q), 1) for q in quantiles}


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def server_times(log: Path) -> list[float]:
    """Milliseconds each request spent in a hub worker (gunicorn's access log): the
    request's own work, without the wait in the listen queue before a worker took it."""
    if not log.exists():
        return []
    found = (re.search(r" (\d+)ms$", line) for line in log.read_text().splitlines())
    return [float(m.group(1)) for m in found if m]


def check_hub(url: str, base: Path, boxes: list[Box]) -> dict:
    """The hub's rows against what the boxes sent."""
    database = HubDatabase(base / "hub", url)
    conn = database.connect()
    try:
        conn.execute("ANALYZE")  # the recount's plan must know the table is large now
        conn.execute("SET statement_timeout = 0")
        rows = conn.execute("SELECT device_id, entry_id, revision FROM entries")
        tally_ok = tallies.tallied(conn) == tallies.recount(conn)
        tallied = conn.one("SELECT SUM(results) AS r, SUM(reviews) AS v FROM tallies")
    finally:
        conn.close()
    held = {(r["device_id"], r["entry_id"]): r["revision"] for r in rows}
    sent = {(b.device_id, e["id"]): e["rev"] for b in boxes for e in b.entries}
    stored = sum(1 for key, rev in sent.items() if held.get(key) == rev)
    results_sent = sum(1 for b in boxes for e in b.entries if e["kind"] == "result")
    reviews_sent = sum(1 for b in boxes for e in b.entries if e["kind"] == "review")
    # Rows no box sent, plus anything counted twice in the tallies.
    duplicates = (len(rows) - stored) + abs(int(tallied["r"] or 0) - results_sent)
    duplicates += abs(int(tallied["v"] or 0) - reviews_sent)
    return {
        "sent": len(sent),
        "stored": stored,
        "rows": len(rows),
        "duplicates": duplicates,
        "tallies_match": tally_ok,
    }


def run(args: argparse.Namespace, base: Path, url: str) -> dict:
    proc, port = start_hub(base, url, args.workers, args.threads, args.shed_after_ms)
    front = None
    if args.nginx:  # the deploy example, TLS and all, between the boxes and the hub
        from hub.nginxkit import Nginx

        front = Nginx(base, port, free_port(), free_port())
        args.ca_bundle = str(front.ca)
    # The fault proxy only when it injects faults (a lossy link, not a hop a deployment has).
    proxy = None
    if args.drop or args.cut:
        proxy = ProxyProcess(front.https_port if front else port, args.drop, args.cut, bool(front))
    try:
        database = HubDatabase(base / "hub", url)
        conn = database.connect()
        try:
            codes = [
                records.create_enrolment_code(conn, f"Site {i:03d}") for i in range(args.boxes)
            ]
        finally:
            conn.close()
        template = template_entries(base / "template", args.results, args.reviews)
        boxes = [Box(i, template, args) for i in range(args.boxes)]
        direct = f"http://127.0.0.1:{port}"
        threads = [threading.Thread(target=b.enrol, args=(direct, codes[b.index])) for b in boxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        go, abort = threading.Event(), threading.Event()
        entry = front.url if front else direct  # nginx with --nginx
        target = proxy.url if proxy else entry
        threads = [threading.Thread(target=b.sync, args=(target, go, abort)) for b in boxes]
        threading.Thread(target=watch, args=(proc, abort), daemon=True).start()
        for t in threads:
            t.start()
        killed = None
        page_ms: list[float] = []
        stop_page = threading.Event()
        page = threading.Thread(target=watch_page, args=(entry, stop_page, page_ms, args.ca_bundle))
        page.start()
        started = time.perf_counter()
        go.set()  # the link is back: every box at once
        if args.kill_worker_after is not None:
            time.sleep(args.kill_worker_after)
            victims = workers_of(proc.pid)
            if victims:
                killed = victims[0]
                os.kill(killed, signal.SIGKILL)
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        stop_page.set()
        page.join()
        if abort.is_set():
            raise SystemExit("the hub stopped during the run:\n" + tail(base / "hub.log"))
        checked = check_hub(url, base, boxes)
    finally:
        if proxy is not None:
            proxy.close()
        if front is not None:
            front.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
    ok = [ms for b in boxes for ms in b.latencies_ms]
    busy = [ms for b in boxes for ms in b.busy_ms]
    answered = ok + busy
    first = [b.first_answer_ms for b in boxes if b.first_answer_ms is not None]
    served = server_times(base / "access.log")
    errors = sum(b.errors for b in boxes) + sum(1 for b in boxes if not b.done)
    return {
        "boxes": args.boxes,
        "results_per_box": args.results,
        "reviews_per_box": args.reviews,
        "workers": args.workers,
        "drop": args.drop,
        "spread_s": args.spread,
        **checked,
        "errors": errors,
        "transport_failures": sum(b.transport_failures for b in boxes),
        "dropped_by_proxy": proxy.stats["dropped"] if proxy else 0,
        "cut_by_proxy": proxy.stats["cut"] if proxy else 0,
        "killed_worker": killed,
        "shed_after_ms": args.shed_after_ms,
        "nginx": args.nginx,
        "requests": len(answered),
        "requests_per_s": round(len(answered) / seconds, 1),
        "deferred": len(busy),
        # every answered request: work done, and "come back in S s" (load shedding)
        **spread("", answered, (50, 95, 99)),
        "max_ms": round(max(answered, default=0.0), 1),
        # the requests that stored or answered something
        **spread("done_", ok, (50, 95, 99)),
        # each box's first answer: the burst itself (its ping, among 500 at once)
        **spread("first_answer_", first, (50, 95)),
        **spread("page_", page_ms, (95,)),
        "page_max_ms": round(max(page_ms, default=0.0), 1),
        "hub_p50_ms": round(percentile(served, 50), 1),
        "hub_p95_ms": round(percentile(served, 95), 1),
        "seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=500)
    parser.add_argument("--results", type=int, default=200, help="results per box")
    parser.add_argument("--reviews", type=int, default=None, help="[default: results / 4]")
    parser.add_argument("--drop", type=float, default=0.0, help="share of requests dropped")
    parser.add_argument("--cut", type=float, default=0.0, help="share of answers cut")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads per worker (1 measured best on 2 cores)"
    )
    parser.add_argument("--batch", type=int, default=200, help="sync_batch_size of the boxes")
    parser.add_argument("--retry-min", type=float, default=0.5)
    parser.add_argument("--retry-max", type=float, default=8.0)
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        metavar="S",
        help="each box starts at a random moment within S seconds [default 0: all at once]",
    )
    parser.add_argument("--kill-worker-after", type=float, default=None, metavar="S")
    parser.add_argument(
        "--nginx",
        action="store_true",
        help="boxes reach the hub through nginx with deploy/hub/nginx-hub.conf (TLS)",
    )
    parser.add_argument(
        "--shed-after-ms",
        type=float,
        default=50.0,
        help="the hub's hub_shed_after_ms (0: queue every request, never shed)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.reviews is None:
        args.reviews = args.results // 4
    args.ca_bundle = ""
    base = Path(tempfile.mkdtemp(prefix="bench-hubload-"))
    try:
        with hub_database_url(args.database_url) as url:
            report = run(args, base, url)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["exactly_once"] = (
        report["stored"] == report["sent"] and report["duplicates"] == 0
    ) and report["tallies_match"]
    report["meets_goal"] = (
        report["exactly_once"]
        and report["errors"] == 0
        and report["p95_ms"] <= GOAL_P95_MS
        and report["seconds"] <= GOAL_SECONDS
    )
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:20} {value}")
    return 0 if report["exactly_once"] and report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
