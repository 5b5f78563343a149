"""Screening pipeline benchmark: from send to result row, with the service running.

    python bench/pipeline.py [--json] [--repeats 20] [--mixed 200] [--receive 30]
                             [--kill-cycles 20]

Starts `appliance serve` on loopback with a temporary data directory and measures:
1. RG1 (pydicom-data's adult PA chest CR, uncompressed, 1955x1841) sent with storescu,
   one at a time, each with a new SOP Instance UID: time from the start of storescu to
   the result row being committed (``rg1_storescu_to_result_ms``), and to storescu's
   exit, i.e. association, transfer, the C-STORE response and the release
   (``cstore_ack_ms``); p50/p95 over --repeats. Two floors beside them: the same sends
   to a bare pynetdicom SCP that only writes and fsyncs (``cstore_ack_bare_pynetdicom_ms``)
   and dcmtk's echoscu to the box, which moves no data (``echoscu_to_box_ms``).
2. A fundus JPEG dropped into the hot folder (written under a hidden name, then renamed
   in, as a copy tool does): time from the rename to the result row; the same for a
   camera's full 4288x2848 frame (IDRiD's ``fullres/``, where ../shared/data is beside
   the checkout). The hot folder is
   polled every 0.1 s and a file must be unchanged for 0.3 s (settings given below),
   so about 0.3-0.4 s of each figure is that wait, not computation.
3. Sustained throughput: --mixed images at once (RG1 + RG1 J2K lossy + RG3 through
   DICOM; fundus JPEGs and paediatric chest PNGs through the hot folder): images/second
   until every one has a result. Every C-STORE must be answered with success and every
   image must get its result row, or the run stops and says which and why.
4. Resident memory of the service: after start-up with all bundles loaded, and its peak.
5. Receive only: --receive DICOM files (the three kinds above) in one association each
   to a second box without models (nothing screened, so only receiving is timed) and to
   Orthanc (Debian's `orthanc`, temporary configuration, fsync of its storage on),
   twice, alternating who goes first: ``orthanc_ratio`` is the box's images/s over
   Orthanc's. Skipped (null) where Orthanc is not installed.
6. --kill-cycles times: a box receiving a stream of DICOM files is killed with SIGKILL
   at a random moment and started again; afterwards every image storescu saw
   acknowledged must be in the database, its file intact (sha-256).

Why the mixed stage lost results before (issue 28: "only 161 of 261 results", none of
its DICOM files stored): the benchmark threw away storescu's exit status and output
and then waited 600 s for results that a refused or failed C-STORE can never give, and
it passed the caller's own APPLIANCE_* settings on to the box. Neither is done now: a
sender's failure or a stall (nothing new for --stall-s) ends the run at once with
storescu's output, the quarantine reasons, failed jobs and the tail of the box's log.
On this checkout the mixed stage stores and screens every image.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
FUNDUS = sorted((REPO / "tests" / "data" / "fundus").glob("*.jpg"))
# A fundus camera's own full frame (IDRiD's Kowa, 4288 x 2848), where the shared data is
# beside the checkout: what a camera's card gives, 9x the pixels of the photos above.
FULL_FRAMES = sorted((REPO.parent / "shared" / "data" / "fundus" / "idrid" / "fullres")
                     .glob("*.jpg"))
CXR_PNG = sorted((REPO / "tests" / "data" / "cxr64").rglob("*.png"))
DICOM_SOURCES = ["RG1_UNCR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm"]
GOALS = {
    "rg1_p95_ms": 100,
    "cstore_ack_p95_ms": 60,
    "images_per_s": 20,
    "rss_mb": 400,
    "orthanc_ratio": 1.5,
}


class BenchError(RuntimeError):
    """The run cannot go on; the message says what was seen."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process in MB."""
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def with_comment(jpeg: bytes, text: str) -> bytes:
    """Same pixels, different bytes (a JPEG comment), so each copy is a new image."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def with_new_uid(source: str, folder: Path, n: int) -> Path:
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / f"{Path(source).stem}-{n:04d}.dcm"
    ds.save_as(path)
    return path


def acknowledged(storescu_debug: str) -> list[str]:
    """SOP Instance UIDs answered with success, from storescu -d's response dumps."""
    found = []
    for block in storescu_debug.split("INCOMING DIMSE MESSAGE")[1:]:
        uid = re.search(r"Affected SOP Instance UID\s*:\s*([0-9.]+)", block)
        status = re.search(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", block)
        if uid and status and status.group(1) == "0x0000":
            found.append(uid.group(1))
    return found


def storescu(port: int, files: list[Path], *flags: str, called: str = "APPLIANCE") -> float:
    """Send ``files`` in one association; seconds taken. Raises unless every one of
    them was answered with success."""
    started = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-v", "-aec", called, *flags, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    successes = done.stdout.count("Received Store Response (Success)") + done.stderr.count(
        "Received Store Response (Success)"
    )
    if done.returncode != 0 or successes != len(files):
        tail = (done.stdout + done.stderr)[-3000:]
        raise BenchError(
            f"storescu to {called} on port {port}: {successes} of {len(files)} stored, "
            f"exit status {done.returncode}:\n{tail}"
        )
    return seconds


class Service:
    """`appliance serve` in a process of its own, its log in the work folder."""

    def __init__(self, work: Path, name: str = "box", **settings: str) -> None:
        self.work = work
        self.data = work / name
        self.hot = work / f"{name}-hot"
        self.hot.mkdir(exist_ok=True)
        self.log_path = work / f"{name}.log"
        self.port, self.dicom_port = free_port(), free_port()
        # Only what the benchmark sets: the caller's own APPLIANCE_* stay out.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        self.env.update(
            {
                "APPLIANCE_USB_ROOTS": "",
                "APPLIANCE_HOT_FOLDER": str(self.hot),
                "APPLIANCE_HOT_FOLDER_POLL_SECONDS": "0.1",
                "APPLIANCE_HOT_FOLDER_SETTLE_SECONDS": "0.3",
                "APPLIANCE_LOG_LEVEL": "WARNING",
                **{f"APPLIANCE_{k.upper()}": v for k, v in settings.items()},
            }
        )
        self.proc: subprocess.Popen | None = None
        self.db: sqlite3.Connection | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "appliance",
                    "serve",
                    "--data-dir",
                    str(self.data),
                    "--port",
                    str(self.port),
                    "--dicom-port",
                    str(self.dicom_port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).close()
                break
            except urllib.error.HTTPError:  # it answers (a 503 says what is missing)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError(f"service did not start:\n{self.log_tail()}") from None
                time.sleep(0.05)
        self.db = sqlite3.connect(self.data / "appliance.db")

    def count(self, table: str) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def diagnosis(self) -> str:
        db = self.db
        jobs = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        reasons = dict(db.execute("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason"))
        failed = db.execute(
            "SELECT image_id, last_error FROM jobs WHERE state='failed' LIMIT 5"
        ).fetchall()
        return (
            f"images {self.count('images')}, results {self.count('results')}; jobs by state"
            f" {jobs}; quarantine reasons {reasons}; failed jobs {failed}\n"
            f"service log:\n{self.log_tail()}"
        )

    def wait_results(self, count: int, stall_s: float = 60) -> float:
        """perf_counter() when ``count`` results are in; BenchError when nothing new
        arrives for ``stall_s`` (an image or job that will never give one)."""
        seen, last_change = -1, time.monotonic()
        while (now := self.count("results")) < count:
            if now != seen:
                seen, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > stall_s or self.proc.poll() is not None:
                raise BenchError(f"only {now} of {count} results\n{self.diagnosis()}")
            time.sleep(0.002)
        return time.perf_counter()

    def drop(self, name: str, data: bytes) -> None:
        hidden = self.hot / f".{name}.part"
        hidden.write_bytes(data)
        os.replace(hidden, self.hot / name)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.db.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.db.close()


class Orthanc:
    """Debian's Orthanc with a temporary configuration: its own storage, free ports."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.dicom_port, self.http_port = free_port(), free_port()
        config = {
            "Name": "bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "SyncStorageArea": True,  # fsync, as the box does before it acknowledges
            "Plugins": [],
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - open while it runs
        self.proc = subprocess.Popen(
            [shutil.which("Orthanc"), str(folder / "orthanc.json")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/system").close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise BenchError("Orthanc did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


# The floor for cstore_ack_ms: pynetdicom with nothing but a write and two fsyncs (file,
# folder) before the response, in a process of its own, as the box's listener is.
BARE_SCP = """
import os, sys
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComputedRadiographyImageStorage
folder = sys.argv[2]
def on_store(event):
    path = os.path.join(folder, str(event.request.AffectedSOPInstanceUID) + ".dcm")
    with open(path, "wb") as fh:
        fh.write(event.encoded_dataset())
        fh.flush()
        os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return 0x0000
ae = AE(ae_title="BARE")
ae.add_supported_context(ComputedRadiographyImageStorage)
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, on_store)])
"""


def bare_floor(work: Path, repeats: int) -> dict:
    """storescu -> response from a bare pynetdicom SCP, RG1 with new UIDs each time."""
    folder = work / "bare"
    folder.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SCP, str(port), str(folder)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise BenchError("the bare pynetdicom SCP did not start") from None
                time.sleep(0.05)
        acks = []
        for n in range(repeats + 1):
            path = with_new_uid("RG1_UNCR.dcm", work / "send", 500 + n)
            seconds = storescu(port, [path], called="BARE")
            if n:
                acks.append(seconds * 1000)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return spread(acks)


def echo_floor(port: int, repeats: int) -> dict:
    """dcmtk's echoscu to the box: starting the process, one association and its release
    with no data -- what every storescu run costs before a byte of the image moves."""
    times = []
    for n in range(repeats + 1):
        started = time.perf_counter()
        done = subprocess.run(
            ["echoscu", "-aec", "APPLIANCE", "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode:
            raise BenchError(f"echoscu failed: {done.stdout}{done.stderr}")
        if n:
            times.append((time.perf_counter() - started) * 1000)
    return spread(times)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def spread(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1),
    }


def hot_folder_latencies(service: Service, photos: list[Path], n: int, name: str) -> list[float]:
    """ms from dropping each of ``n`` photos (cycling through ``photos``) into the hot
    folder to its result row, one at a time."""
    out = []
    for i in range(n):
        data = with_comment(photos[i % len(photos)].read_bytes(), f"bench {i}")
        done = service.count("results") + 1
        started = time.perf_counter()
        service.drop(f"{name}-{i:03d}.jpg", data)
        out.append((service.wait_results(done) - started) * 1000)
    return out


def latency_stages(service: Service, work: Path, repeats: int) -> dict:
    done = service.count("results")
    to_result, ack = [], []
    for n in range(repeats + 1):  # the first warms caches; not counted
        path = with_new_uid("RG1_UNCR.dcm", work / "send", n)
        started = time.perf_counter()
        sent = storescu(service.dicom_port, [path])
        done += 1
        finished = service.wait_results(done)
        if n:
            ack.append(sent * 1000)
            to_result.append((finished - started) * 1000)
    fundus = hot_folder_latencies(service, FUNDUS, repeats, "fundus")
    full = hot_folder_latencies(service, FULL_FRAMES, repeats if FULL_FRAMES else 0, "camera")
    return {
        "rg1_storescu_to_result_ms": spread(to_result),
        "cstore_ack_ms": spread(ack),
        "fundus_hot_folder_to_result_ms": {**spread(fundus), "settle_s": 0.3, "poll_s": 0.1},
        # null where ../shared/data is not beside the checkout
        "fundus_full_frame_hot_folder_to_result_ms": spread(full) if full else None,
    }


def mixed_stage(service: Service, dicom_files: list[Path], photos: int) -> dict:
    """Everything at once, half over DICOM, half through the hot folder."""
    before = service.count("results")
    items = []
    for n in range(photos):
        if n % 2:
            data = with_comment(FUNDUS[n % len(FUNDUS)].read_bytes(), f"mix {n}")
            items.append((f"mix-{n:03d}.jpg", data))
        else:  # trailing bytes: a new sha256
            items.append((f"mix-{n:03d}.png", CXR_PNG[n % len(CXR_PNG)].read_bytes() + b"%d" % n))
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        sender = subprocess.Popen(
            ["storescu", "-v", "-aec", "APPLIANCE", "-xw", "127.0.0.1"]
            + [str(service.dicom_port), *map(str, dicom_files)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, data in items:
            service.drop(name, data)
        sender.wait()
        out.seek(0)
        said = out.read()
    stored = said.count("Received Store Response (Success)")
    if sender.returncode != 0 or stored != len(dicom_files):
        raise BenchError(
            f"mixed stage: storescu stored {stored} of {len(dicom_files)} (exit status "
            f"{sender.returncode}):\n{said[-3000:]}\n{service.diagnosis()}"
        )
    total = len(dicom_files) + photos
    finished = service.wait_results(before + total)
    seconds = finished - started
    return {
        "images": total,
        "dicom": len(dicom_files),
        "hot_folder": photos,
        "seconds": round(seconds, 2),
        "images_per_s": round(total / seconds, 2),
        "results": service.count("results") - before,
    }


def receive_stage(work: Path, files: list[Path]) -> dict:
    """Receive-only images/s: a box without models (nothing is screened) and Orthanc,
    the same files, alternating which goes first."""
    if shutil.which("Orthanc") is None:
        return {"skipped": "Orthanc is not installed (apt-get install orthanc)"}
    empty = work / "no-models"
    empty.mkdir()
    box = Service(work, "receive", models_dir=str(empty))
    orthanc = Orthanc(work / "orthanc")
    half = len(files) // 2
    times = {"box": 0.0, "orthanc": 0.0}
    try:
        for batch, order in (
            (files[:half], ("box", "orthanc")),
            (files[half:], ("orthanc", "box")),
        ):
            for who in order:
                if who == "box":
                    times[who] += storescu(box.dicom_port, batch, "-xw")
                else:
                    times[who] += storescu(orthanc.dicom_port, batch, "-xw", called="ORTHANC")
    finally:
        box.stop()
        orthanc.stop()
    rates = {who: len(files) / seconds for who, seconds in times.items()}
    return {
        "files": len(files),
        "box_images_per_s": round(rates["box"], 2),
        "orthanc_images_per_s": round(rates["orthanc"], 2),
        "ratio": round(rates["box"] / rates["orthanc"], 2),
    }


def kill_stage(work: Path, files: list[Path], cycles: int) -> dict:
    """SIGKILL a receiving box ``cycles`` times; then check everything acknowledged."""
    empty = work / "kill-models"
    empty.mkdir()
    box = Service(work, "kill", models_dir=str(empty), min_free_mb="1")
    acked: list[str] = []
    rng = random.Random(28)
    try:
        for cycle in range(cycles):
            batch = [files[(cycle * 6 + i) % len(files)] for i in range(6)]
            with tempfile.TemporaryFile("w+") as out:
                sender = subprocess.Popen(
                    ["storescu", "-d", "-aec", "APPLIANCE", "127.0.0.1"]
                    + [str(box.dicom_port), *map(str, batch)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                time.sleep(rng.uniform(0.2, 1.5))  # mid-stream, mostly
                box.kill()
                sender.wait(timeout=60)
                out.seek(0)
                acked += acknowledged(out.read())
            box.start()
        rows = dict(box.db.execute("SELECT sop_instance_uid, stored_path FROM images"))
        shas = dict(box.db.execute("SELECT sop_instance_uid, sha256 FROM images"))
        integrity = box.db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        box.stop()
    lost = [uid for uid in set(acked) if uid not in rows]
    damaged = [
        uid for uid in set(acked) if uid in rows and _sha256(box.data / rows[uid]) != shas[uid]
    ]
    return {
        "cycles": cycles,
        "acknowledged": len(set(acked)),
        "lost": len(lost),
        "damaged": len(damaged),
        "database": integrity,
    }


def _sha256(path: Path) -> str:
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--mixed", type=int, default=200)
    parser.add_argument("--receive", type=int, default=30, help="files per receive round")
    parser.add_argument("--kill-cycles", type=int, default=20)
    parser.add_argument("--stall-s", type=float, default=60)
    parser.add_argument(
        "--models-dir", default="", help="bundles to screen with (default: the committed ones)"
    )
    parser.add_argument("--workers", type=int, default=0,
                        help="screening workers of the box (default: its own setting)")
    parser.add_argument("--inference-threads", type=int, default=-1,
                        help="ONNX Runtime threads per model (default: the box's setting)")
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        sys.exit("storescu not found: apt-get install dcmtk")

    try:
        result = run(args)
    except BenchError as exc:
        sys.exit(f"bench/pipeline.py stopped: {exc}")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    report(result)


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        (work / "send").mkdir()
        dicom_files = [
            with_new_uid(DICOM_SOURCES[n % 3], work / "send", 1000 + n)
            for n in range(max(args.mixed // 2, 2 * args.receive))
        ]
        bundles = {"models_dir": args.models_dir} if args.models_dir else {}
        if args.workers:
            bundles["workers"] = str(args.workers)
        if args.inference_threads >= 0:
            bundles["inference_threads"] = str(args.inference_threads)
        service = Service(work, **bundles)
        try:
            rss_start, _ = rss_mb(service.proc.pid)
            result = latency_stages(service, work, args.repeats)
            result["workers"] = args.workers or "the box's setting"
            result["cstore_ack_bare_pynetdicom_ms"] = bare_floor(work, args.repeats)
            result["echoscu_to_box_ms"] = echo_floor(service.dicom_port, args.repeats)
            result["sustained"] = mixed_stage(
                service, dicom_files[: args.mixed // 2], args.mixed - args.mixed // 2
            )
            result["routes"] = dict(
                service.db.execute("SELECT route, COUNT(*) FROM results GROUP BY route")
            )
            rss_end, rss_peak = rss_mb(service.proc.pid)
        finally:
            service.stop()
        result["rss_mb"] = {
            "after_start": round(rss_start, 1),
            "after_run": round(rss_end, 1),
            "peak": round(rss_peak, 1),
        }
        received = receive_stage(work, dicom_files[: 2 * args.receive]) if args.receive else {}
        result["receive_only"] = received
        result["orthanc_ratio"] = received.get("ratio")
        if args.kill_cycles:
            result["kill_9"] = kill_stage(work, dicom_files, args.kill_cycles)
    result["goals"] = GOALS
    return result


def report(result: dict) -> None:
    r, a, f, s, m = (
        result["rg1_storescu_to_result_ms"],
        result["cstore_ack_ms"],
        result["fundus_hot_folder_to_result_ms"],
        result["sustained"],
        result["rss_mb"],
    )
    print(f"{'measure':<50}{'p50':>10}{'p95':>10}")
    for label, row in (
        (f"RG1 storescu -> result row (ms, n={r['n']})", r),
        (f"RG1 storescu -> C-STORE acknowledged (ms, n={a['n']})", a),
        (
            "  the same, bare pynetdicom SCP + fsync (floor)",
            result["cstore_ack_bare_pynetdicom_ms"],
        ),
        ("  echoscu alone to the box (no data: the floor)", result["echoscu_to_box_ms"]),
        (f"fundus JPEG hot folder -> result (ms, n={f['n']})", f),
    ):
        print(f"{label:<50}{row['p50']:>10}{row['p95']:>10}")
    full = result.get("fundus_full_frame_hot_folder_to_result_ms")
    if full:
        label = f"camera's full frame 4288x2848, same (ms, n={full['n']})"
        print(f"{label:<50}{full['p50']:>10}{full['p95']:>10}")
    print(f"  (hot folder: poll {f['poll_s']} s, settle {f['settle_s']} s included)")
    print(
        f"sustained: {s['images']} mixed images in {s['seconds']} s = {s['images_per_s']} "
        f"images/s, {s['results']} results; routes {result['routes']}"
    )
    print(
        f"service RSS: {m['after_start']} MB after start (all bundles loaded), "
        f"{m['after_run']} MB after the run, peak {m['peak']} MB"
    )
    received = result["receive_only"]
    if "ratio" in received:
        print(
            f"receive only, {received['files']} files: box {received['box_images_per_s']}"
            f" images/s, Orthanc {received['orthanc_images_per_s']}: ratio {received['ratio']}"
        )
    if "kill_9" in result:
        k = result["kill_9"]
        print(
            f"kill -9 x{k['cycles']}: {k['acknowledged']} acknowledged, {k['lost']} lost, "
            f"{k['damaged']} damaged, database {k['database']}"
        )
    print("goals:", ", ".join(f"{k} {v}" for k, v in GOALS.items()))


if __name__ == "__main__":
    main()
