"""Ingest benchmark: receive+store of 200 real radiographs, appliance vs Orthanc.

    python bench/ingest.py [--json] [--count 200]

Both servers run on loopback on this machine, one after the other, each receiving the
same 200 instances (RG1 and RG3 chest/extremity CRs from pydicom-data, uncompressed,
~6-7 MB each, new SOP Instance UIDs) in one storescu association. Orthanc (Debian
package) is started with a temporary configuration. Also prints the decode time of RG1
for each transfer syntax (median of 3), made with dcmtk's transcoders.
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

from appliance.ingest.decode import decode_bytes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def make_instances(folder: Path, count: int) -> list[Path]:
    sources = [pydicom.dcmread(get_testdata_file(n)) for n in ("RG1_UNCR.dcm", "RG3_UNCR.dcm")]
    files = []
    for n in range(count):
        ds = sources[n % 2]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"i{n:04d}.dcm"
        ds.save_as(path)
        files.append(path)
    return files


def send(files: list[Path], port: int, aet: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or "Failed" in result.stderr:
        raise RuntimeError(f"storescu to {aet} failed: {result.stderr[-2000:]}")
    return elapsed


def bench_appliance(files: list[Path], work: Path) -> tuple[float, int]:
    port, dicom_port = free_port(), free_port()
    env = {**os.environ, "APPLIANCE_USB_ROOTS": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--data-dir",
            str(work / "appliance"),
            "--port",
            str(port),
            "--dicom-port",
            str(dicom_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        elapsed = send(files, dicom_port, "APPLIANCE")
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    stored = (
        sqlite3.connect(work / "appliance" / "appliance.db")
        .execute("SELECT COUNT(*) FROM images")
        .fetchone()[0]
    )
    return elapsed, stored


def bench_orthanc(files: list[Path], work: Path) -> tuple[float, int]:
    orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(orthanc).exists():
        raise RuntimeError("Orthanc is not installed (apt-get install orthanc)")
    http_port, dicom_port = free_port(), free_port()
    root = work / "orthanc"
    root.mkdir()
    config = {
        "Name": "bench",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "StorageCompression": False,
    }
    (root / "config.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [orthanc, str(root / "config.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{http_port}/system")
        elapsed = send(files, dicom_port, "ORTHANC")
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics") as response:
            stored = json.load(response)["CountInstances"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return elapsed, stored


def decode_times(work: Path) -> list[dict]:
    source = Path(get_testdata_file("RG1_UNCR.dcm"))
    variants = {
        "explicit VR LE (uncompressed)": source,
        "JPEG 2000 lossless": Path(get_testdata_file("RG1_J2KR.dcm")),
        "JPEG 2000 lossy": Path(get_testdata_file("RG1_J2KI.dcm")),
    }
    for label, command in {
        "implicit VR LE": ["dcmconv", "+ti"],
        "deflate": ["dcmconv", "+td"],
        "JPEG lossless SV1": ["dcmcjpeg", "+e1"],
        "JPEG-LS lossless": ["dcmcjpls", "+el"],
        "RLE": ["dcmcrle"],
    }.items():
        target = work / f"{command[0]}{len(variants)}.dcm"
        subprocess.run([*command, str(source), str(target)], check=True, capture_output=True)
        variants[label] = target
    # What the worker does: it needs no more than the 1024 px preview, so JPEG 2000 can
    # stop one wavelet level early (glymur/libopenjp2; full decode where they are missing).
    runs = [(label, path, None) for label, path in variants.items()]
    runs += [
        (f"{label} (worker, <=1024 px)", variants[label], 1024)
        for label in ("JPEG 2000 lossless", "JPEG 2000 lossy")
    ]
    rows = []
    for label, path, max_side in runs:
        raw = path.read_bytes()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            decode_bytes(raw, max_side=max_side)
            times.append((time.perf_counter() - start) * 1000)
        rows.append({"syntax": label, "bytes": len(raw), "decode_ms": statistics.median(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        (work / "files").mkdir()
        files = make_instances(work / "files", args.count)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        appliance_s, appliance_n = bench_appliance(files, work)
        orthanc_s, orthanc_n = bench_orthanc(files, work)
        decodes = decode_times(work)
    result = {
        "instances": args.count,
        "megabytes": round(total_mb, 1),
        "appliance": {
            "seconds": round(appliance_s, 2),
            "stored": appliance_n,
            "instances_per_s": round(args.count / appliance_s, 1),
        },
        "orthanc": {
            "seconds": round(orthanc_s, 2),
            "stored": orthanc_n,
            "instances_per_s": round(args.count / orthanc_s, 1),
        },
        "ratio_orthanc_over_appliance": round(orthanc_s / appliance_s, 2),
        "decode_rg1": decodes,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"receive+store of {args.count} instances ({total_mb:.0f} MB), storescu over loopback")
    print(f"{'server':<12}{'wall s':>10}{'inst/s':>10}{'stored':>10}")
    for name in ("appliance", "orthanc"):
        r = result[name]
        print(f"{name:<12}{r['seconds']:>10.2f}{r['instances_per_s']:>10.1f}{r['stored']:>10}")
    print(
        f"Orthanc time / appliance time: {result['ratio_orthanc_over_appliance']:.2f} "
        "(> 1 means the appliance is faster)"
    )
    print()
    print(f"{'RG1 transfer syntax':<44}{'file MB':>10}{'decode ms':>12}")
    for row in decodes:
        print(f"{row['syntax']:<44}{row['bytes'] / 1e6:>10.2f}{row['decode_ms']:>12.1f}")


if __name__ == "__main__":
    main()
