"""The fault proxy of ``bench/hub_load.py`` in a process of its own, as a lossy network
would be: in the load generator's process its threads would queue behind 500 boxes' for
Python's lock, and the boxes would measure the proxy, not the hub.

    python bench/hub_loadproxy.py PORT DROP CUT SEED [per-connection]

Prints ``{"port": P}`` once listening; on SIGTERM prints its counts (``FaultProxy.stats``)
as one JSON line and exits."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

# tests/ first, bench/ off the path (its sync.py would hide the tests' sync/)
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent / "tests")] + [
    p for p in sys.path if Path(p or ".").resolve() != HERE
]

from sync.synckit import FaultProxy  # noqa: E402


def main() -> None:
    target, seed = int(sys.argv[1]), int(sys.argv[4])
    drop, cut = float(sys.argv[2]), float(sys.argv[3])
    per_connection = sys.argv[5:] == ["per-connection"]  # TLS: it cannot read requests
    proxy = FaultProxy(
        target, drop=drop, cut=cut, delay=0.0, seed=seed, per_connection=per_connection
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"port": proxy.port}), flush=True)
    stop.wait()
    proxy.close()
    print(json.dumps(proxy.stats), flush=True)


if __name__ == "__main__":
    main()
