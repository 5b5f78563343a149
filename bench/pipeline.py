"""Screening pipeline benchmark: from send to result row, with the service running.

    python bench/pipeline.py [--json] [--repeats 20] [--mixed 200]

Starts `appliance serve` on loopback with a temporary data directory and measures:
1. RG1 (pydicom-data's adult PA chest CR, uncompressed, 1955x1841) sent with storescu,
   one at a time, each with a new SOP Instance UID: time from the start of storescu to
   the result row being committed; p50/p95 over --repeats.
2. A fundus JPEG dropped into the hot folder (written under a hidden name, then renamed
   in, as a copy tool does): time from the rename to the result row. The hot folder is
   polled every 0.1 s and a file must be unchanged for 0.3 s (settings given below),
   so about 0.3-0.4 s of each figure is that wait, not computation.
3. Sustained throughput: --mixed images at once (RG1 + RG1 J2K lossy + RG3 through
   DICOM; fundus JPEGs and paediatric chest PNGs through the hot folder): images/second
   until every one has a result.
4. Resident memory of the service: after start-up with all bundles loaded, and its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
FUNDUS = sorted((REPO / "tests" / "data" / "fundus").glob("*.jpg"))
CXR_PNG = sorted((REPO / "tests" / "data" / "cxr64").rglob("*.png"))


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


class Service:
    def __init__(self, work: Path) -> None:
        self.data = work / "data"
        self.hot = work / "hot"
        self.hot.mkdir()
        self.port, self.dicom_port = free_port(), free_port()
        env = {
            **os.environ,
            "APPLIANCE_USB_ROOTS": "",
            "APPLIANCE_HOT_FOLDER": str(self.hot),
            "APPLIANCE_HOT_FOLDER_POLL_SECONDS": "0.1",
            "APPLIANCE_HOT_FOLDER_SETTLE_SECONDS": "0.3",
            "APPLIANCE_LOG_LEVEL": "WARNING",
        }
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
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("service did not start") from None
                time.sleep(0.1)
        self.db = sqlite3.connect(self.data / "appliance.db")

    def results(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def wait_results(self, count: int, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while self.results() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.results()} of {count} results")
            time.sleep(0.002)
        return time.perf_counter()

    def send(self, *files: Path) -> None:
        subprocess.run(
            ["storescu", "-aec", "APPLIANCE", "127.0.0.1", str(self.dicom_port), *map(str, files)],
            check=True,
            capture_output=True,
        )

    def drop(self, name: str, data: bytes) -> None:
        hidden = self.hot / f".{name}.part"
        hidden.write_bytes(data)
        os.replace(hidden, self.hot / name)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.db.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--mixed", type=int, default=200)
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        sys.exit("storescu not found: apt-get install dcmtk")

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        (work / "send").mkdir()
        service = Service(work)
        try:
            rss_start, _ = rss_mb(service.proc.pid)
            done = service.results()
            rg1 = []
            for n in range(args.repeats + 1):  # the first warms caches; not counted
                path = with_new_uid("RG1_UNCR.dcm", work / "send", n)
                started = time.perf_counter()
                service.send(path)
                done += 1
                finished = service.wait_results(done)
                if n:
                    rg1.append((finished - started) * 1000)

            fundus = []
            for n in range(args.repeats):
                data = with_comment(FUNDUS[n % len(FUNDUS)].read_bytes(), f"bench {n}")
                started = time.perf_counter()
                service.drop(f"fundus-{n:03d}.jpg", data)
                done += 1
                fundus.append((service.wait_results(done) - started) * 1000)

            # Sustained: everything at once, half over DICOM, half through the hot folder.
            dicom_sources = ["RG1_UNCR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm"]
            dicom_files = [
                with_new_uid(dicom_sources[n % 3], work / "send", 1000 + n)
                for n in range(args.mixed // 2)
            ]
            photos = []
            for n in range(args.mixed - len(dicom_files)):
                if n % 2:
                    photos.append(
                        (
                            f"mix-{n:03d}.jpg",
                            with_comment(FUNDUS[n % len(FUNDUS)].read_bytes(), f"mix {n}"),
                        )
                    )
                else:
                    photos.append(
                        (
                            f"mix-{n:03d}.png",
                            CXR_PNG[n % len(CXR_PNG)].read_bytes() + f"{n}".encode(),
                        )
                    )  # trailing bytes: a new sha256
            started = time.perf_counter()
            sender = subprocess.Popen(
                [
                    "storescu",
                    "-aec",
                    "APPLIANCE",
                    "-xw",
                    "127.0.0.1",
                    str(service.dicom_port),
                    *map(str, dicom_files),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, data in photos:
                service.drop(name, data)
            sender.wait()
            finished = service.wait_results(done + args.mixed)
            sustained_s = finished - started
            routes = dict(service.db.execute("SELECT route, COUNT(*) FROM results GROUP BY route"))
            rss_end, rss_peak = rss_mb(service.proc.pid)
        finally:
            service.stop()

    result = {
        "rg1_storescu_to_result_ms": {
            "n": len(rg1),
            "p50": round(statistics.median(rg1), 1),
            "p95": round(percentile(rg1, 95), 1),
            "max": round(max(rg1), 1),
        },
        "fundus_hot_folder_to_result_ms": {
            "n": len(fundus),
            "p50": round(statistics.median(fundus), 1),
            "p95": round(percentile(fundus, 95), 1),
            "settle_s": 0.3,
            "poll_s": 0.1,
        },
        "sustained": {
            "images": args.mixed,
            "seconds": round(sustained_s, 2),
            "images_per_s": round(args.mixed / sustained_s, 2),
        },
        "routes": routes,
        "rss_mb": {
            "after_start": round(rss_start, 1),
            "after_run": round(rss_end, 1),
            "peak": round(rss_peak, 1),
        },
        "goals": {"rg1_p95_ms": 250, "rss_mb": 400},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r, f, s, m = (
        result["rg1_storescu_to_result_ms"],
        result["fundus_hot_folder_to_result_ms"],
        result["sustained"],
        result["rss_mb"],
    )
    print(f"{'measure':<46}{'p50':>10}{'p95':>10}")
    rg1_label = f"RG1 storescu -> result row (ms, n={r['n']})"
    fundus_label = f"fundus JPEG hot folder -> result (ms, n={f['n']})"
    print(f"{rg1_label:<46}{r['p50']:>10}{r['p95']:>10}")
    print(f"{fundus_label:<46}{f['p50']:>10}{f['p95']:>10}")
    print(f"  (hot folder: poll {f['poll_s']} s, settle {f['settle_s']} s included)")
    print(
        f"sustained: {s['images']} mixed images in {s['seconds']} s = {s['images_per_s']} images/s"
        f"  routes {routes}"
    )
    print(
        f"service RSS: {m['after_start']} MB after start (all bundles loaded), "
        f"{m['after_run']} MB after the run, peak {m['peak']} MB"
    )
    print("goals: RG1 p95 <= 250 ms, memory <= 400 MB")


if __name__ == "__main__":
    main()
