"""The hub as a production service: gunicorn, several worker processes (``hub serve --workers N``).

Why gunicorn rather than waitress under a process manager: one master that pre-forks
the workers and watches them — a worker that dies (kill -9, out of memory) is replaced
within a second, one that hangs past ``timeout`` is killed and replaced; ``kill -HUP``
replaces every worker gracefully (each finishes its requests first) for a new release
or settings, ``kill -TERM`` drains and stops; all on one listening socket, no port per
worker, no second tool to configure. Waitress remains the single-process server
(``--workers 1``, the default, and on systems without ``fork``).

Workers are ``gthread``: a few threads each, so a worker waiting on PostgreSQL or on a
slow upload still answers others; processes give the parallelism the GIL does not. Each
notes how long a request waited for a thread, and a box's request that waited too long
is told to come back (``admission.py``: load shedding when every box returns at once).
Each worker builds its own app (nothing is loaded before the fork) and with it its own
``psycopg_pool`` of ``threads`` connections; the schema is migrated once, by the master,
before any worker starts. Request bodies are bounded by the app (``limits.py``); the
request line and headers by gunicorn; slow clients and TLS by nginx in front
(``deploy/hub/``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from appliance.hub import admission
from appliance.hub.db import HubDatabase

log = logging.getLogger(__name__)

# A worker silent this long is killed and replaced (above the database's statement
# timeout, so a slow query ends with an error first); a graceful restart waits this
# long for requests in flight.
WORKER_TIMEOUT_S = 60
GRACEFUL_TIMEOUT_S = 30


def available() -> bool:
    """gunicorn is importable (it is Unix only: ``fork``)."""
    try:
        import gunicorn.app.base  # noqa: F401
    except ImportError:
        return False
    return True


ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'  # M: milliseconds in the worker


def options(
    host: str, port: int, workers: int, threads: int, access_log: str = ""
) -> dict[str, Any]:
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        # gthread, noting each request's wait for a thread (admission.py sheds on it)
        "worker_class": admission.worker_class,
        "threads": threads,
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": 5,
        "backlog": 2048,  # a programme's boxes all coming back at once queue here
        # Recycle a worker now and then (jittered: never all at once) against slow leaks.
        "max_requests": 20_000,
        "max_requests_jitter": 2_000,
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        # X-Forwarded-* are judged by the app alone (proxy.py, hub_trusted_proxies).
        "forwarded_allow_ips": "",
        "secure_scheme_headers": {},
        "proc_name": "appliance-hub",
        "control_socket_disable": True,
        "errorlog": "-",
        "accesslog": access_log or None,
        "access_log_format": ACCESS_FORMAT,
        "loglevel": "info",
    }


def serve_workers(
    make_app: Callable[[], Any],
    database: HubDatabase,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    access_log: str = "",
    shed_after_ms: float = 0.0,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run gunicorn in this process (the master) until it is stopped. Device requests that
    waited longer than ``shed_after_ms`` for a thread are told to come back (0: never)."""
    from gunicorn.app.base import BaseApplication

    class HubApplication(BaseApplication):
        def load_config(self) -> None:
            for key, value in options(host, port, workers, threads, access_log).items():
                self.cfg.set(key, value)
            self.cfg.set("when_ready", lambda server: on_ready and on_ready())
            self.cfg.set("worker_exit", _close_pool)

        def load(self):
            app = make_app()
            app.wsgi_app = admission.ShedWhenQueued(app.wsgi_app, shed_after_ms / 1000)
            return app

    database.migrate()  # once, in the master: workers then find nothing to do
    HubApplication().run()


def _close_pool(server, worker) -> None:
    app = getattr(worker, "wsgi", None)
    database = getattr(app, "extensions", {}).get("hub_database") if app else None
    if database is not None:
        database.close()
