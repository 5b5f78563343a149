"""Fuzz the image doors: mutated real files through a running service.

    python bench/fuzz.py [--files 5000] [--seed 1] [--json]

Starts ``appliance serve`` on loopback with a temporary data directory, uploads
``--files`` mutated real files (tests/fuzzkit.py: bit flips, truncations, overwrites,
splices, and size fields rewritten to lie, over JPEG, PNG, TIFF, BigTIFF, JPEG 2000 and
DICOM seeds), waits for the workers to screen or refuse every stored one, and prints one
row: files, stored, quarantined at the door, screened, quarantined at decode, jobs
failed, HTTP 5xx, crashes, the service's peak resident memory (VmHWM) and wall time.
The test suite runs the same with 1,000 files (tests/ingest/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fuzzkit import drive, mutants  # noqa: E402
from helpers import Served  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(
            APPLIANCE_USB_ROOTS="",
            APPLIANCE_MIN_FREE_MB="1",
            PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        )
        served = Served(Path(tmp) / "data", env)
        try:
            tally = drive(served, mutants(args.files, args.seed), settle_seconds=3600)
        finally:
            served.close()
    row = {"seed": args.seed, **tally.row()}
    if args.json:
        print(json.dumps(row))
        return
    print(" | ".join(f"{k:>{max(len(k), 5)}}" for k in row))
    print(" | ".join(f"{v!s:>{max(len(k), 5)}}" for k, v in row.items()))
    if tally.no_reason:
        print("quarantined without a reason:", ", ".join(tally.no_reason))


if __name__ == "__main__":
    main()
