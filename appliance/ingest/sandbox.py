"""Decode one file in a child process that may use only so much memory.

The doors check every header before anything is decoded, so a file that stops the box
while decoding should not exist. If one does (a decoder bug, a format we have not
thought of), the OOM killer takes the whole service, and a plain retry would do the same
after every restart. So a worker that finds a job's previous decode never finished does
not decode it again in the service: it asks a child process, under an address-space
limit of ``decode_retry_memory_mb``, to decode it first. If the child succeeds the image
is safe to decode in the service; if it runs out of memory, is killed or hangs, the image
is quarantined with a reason and the service never touches it again.

    python -m appliance.ingest.sandbox FILE LIMITS_JSON    (exit 0 decoded, 2 refused
                                                            with a reason on stdout)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from appliance.errors import DecodeError, IngestError
from appliance.ingest.headers import ImageLimits

UNSAFE = "Reading this image needs more memory than the box can spare; it was not screened."

EXIT_DECODED = 0
EXIT_REFUSED = 2
EXIT_NO_MEMORY = 3


def decode_in_child(
    path: Path,
    limits: ImageLimits,
    max_side: int | None,
    memory_mb: int,
    timeout: float = 300.0,
) -> IngestError | None:
    """None when the file decodes within ``memory_mb``; else the error to quarantine it
    with (``limits`` and ``max_side`` as for ``decode_file``)."""
    env = dict(os.environ)
    # One thread, two malloc arenas: the address-space limit measures the decode, not
    # thread stacks and per-thread heaps reserved but never used.
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    task = {"limits": asdict(limits), "max_side": max_side, "memory_mb": memory_mb}
    command = [sys.executable, "-m", "appliance.ingest.sandbox", str(path), json.dumps(task)]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return DecodeError(UNSAFE, detail=f"decoding took over {timeout:.0f} s in the sandbox")
    if child.returncode == EXIT_DECODED:
        return None
    if child.returncode == EXIT_REFUSED:
        refused = json.loads(child.stdout)
        return DecodeError(refused["reason"], detail=refused.get("detail"))
    if child.returncode == EXIT_NO_MEMORY:
        return DecodeError(UNSAFE, detail=f"out of memory within {memory_mb} MB")
    tail = (child.stderr or "").strip().splitlines()[-1:] or [""]
    return DecodeError(UNSAFE, detail=f"sandbox exit {child.returncode}: {tail[0][:300]}")


def main(argv: list[str]) -> int:
    path, task = Path(argv[0]), json.loads(argv[1])
    import resource

    ceiling = task["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    try:
        from appliance.ingest.decode import decode_file

        decode_file(path, ImageLimits(**task["limits"]), task["max_side"])
    except IngestError as exc:
        print(json.dumps({"reason": exc.reason, "detail": exc.detail}))
        return EXIT_REFUSED
    except MemoryError:
        return EXIT_NO_MEMORY
    except Exception as exc:  # OpenCV and the decoder plugins raise their own types
        if "memory" in str(exc).lower():
            return EXIT_NO_MEMORY
        raise
    return EXIT_DECODED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
