"""``appliance serve``: everything the box runs, started together, stopped together.

web page + DICOM listener + USB watcher + hot folder + workers + monitoring, in one process with
threads (a Jetson has 6-8 cores and 8 GB shared with the GPU: one process keeps one copy
of each model in memory). SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
from pathlib import Path

from appliance.config import Config
from appliance.http_server import create_server
from appliance.inference.engines.refresh import EngineRefresher
from appliance.ingest.hotfolder import HotFolder
from appliance.ingest.importer import Importer, recover
from appliance.ingest.scp import StoreSCP
from appliance.ingest.usb import UsbWatcher
from appliance.monitoring.monitor import Monitor
from appliance.screening.models import ModelSet
from appliance.screening.pipeline import Screener
from appliance.store import jobs
from appliance.store.db import Store, wake_commit_waiters
from appliance.watchdog import start_watchdog
from appliance.web import create_app
from appliance.worker import Worker

log = logging.getLogger(__name__)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each busy thread its own heap; with DICOM, web and worker threads
    passing 10-20 MB images around, the freed memory then sits in many half-empty heaps.
    Two arenas keep the box's memory flat (Jetsons share 8 GB with the GPU)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc (musl, macOS): nothing to tune


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.store = Store.open(config.data_dir)
        self.importer = Importer(self.store, config)
        self.threads: list[threading.Thread] = []
        self.scp: StoreSCP | None = None
        self.web_server = None
        self.models: ModelSet | None = None
        self.status: dict[str, str] = {}

    def start(self) -> None:
        limit_malloc_arenas()
        recovered = recover(self.store, self.config)
        if any(recovered.values()):
            log.warning("recovered after an unclean stop: %s", recovered)
        # Before any worker of ours claims: what a dead process of this host was
        # screening (a power cut, kill -9) is screened again now, not after its lease.
        released = jobs.release_dead_leases(self.store, self.config.job_max_attempts)
        if released:
            log.warning("%s job(s) of a stopped process queued again", released)

        # Loaded once, shared by every worker; a bundle that fails leaves the box running.
        self.models = ModelSet(self.config).load()
        screener = Screener(self.models, self.config)
        self.status["models"] = (
            "ok"
            if not self.models.errors
            else "; ".join(f"{k}: {v}" for k, v in self.models.errors.items())
        )

        # Not a watched thread: it ends when the engines are done (or not needed).
        EngineRefresher(self.models, self.config, self.stop_event).start()

        app = create_app(self.config)
        app.extensions["appliance_status"] = self.status
        app.extensions["appliance_models"] = self.models
        app.extensions["appliance_stop"] = self.stop_event  # ends a page's wait for news

        def swapped(models: ModelSet) -> None:
            """An activated version was loaded whole: the page and /healthz show the new
            set, and its engines are built in the background like at start-up."""
            self.models = models
            app.extensions["appliance_models"] = models
            EngineRefresher(models, self.config, self.stop_event).start()

        screener.on_swap.append(swapped)
        # Drift and health: recomputed in the background, shown by /healthz and the
        # System page, and summarised for the hub.
        monitor = Monitor(self.store, self.config)
        app.extensions["appliance_monitor"] = monitor
        self.web_server = create_server(
            app,
            host=self.config.host,
            port=self.config.port,
            # Two may be held by pages waiting for news (worklist.MARKER_WAITERS).
            threads=6,
            ident="appliance",
            # Waitress would otherwise read up to 1 GB before the app (and its auth) runs.
            max_request_body_size=app.config["MAX_CONTENT_LENGTH"],
        )
        self._thread("web", self._serve_web)
        self.status["web"] = f"http://{self.config.host}:{self.config.port}"

        if self.config.dicom_enabled:
            self.scp = StoreSCP(
                self.importer,
                ae_title=self.config.dicom_aet,
                port=self.config.dicom_port,
                host=self.config.dicom_host,
                allowed_aets=self.config.dicom_allowed_aets,
            )
            self.scp.start()
            self.status["dicom"] = f"{self.config.dicom_aet} on port {self.config.dicom_port}"

        UsbWatcher(self.importer, self.stop_event).start()
        self.status["usb"] = "watching " + ", ".join(self.config.usb_roots)
        if self.config.hot_folder:
            HotFolder(self.importer, Path(self.config.hot_folder), self.stop_event).start()
            self.status["hot_folder"] = self.config.hot_folder

        # Before the workers: each result they store is queued for each configured PACS.
        from appliance.pacs.targets import register

        if register(self.store, self.config):
            from appliance.pacs.sender import PacsSender

            self._thread("pacs", PacsSender(self.store, self.config).run_forever, self.stop_event)
            self.status["pacs"] = ", ".join(self.config.pacs_destinations)
        if self.config.mwl_address:
            from appliance.pacs import worklist

            args = (self.store, self.config, self.stop_event)
            self._thread("worklist", worklist.run_forever, *args)
            self.status["worklist"] = self.config.mwl_address
        for index in range(self.config.workers):
            worker = Worker(self.store, self.config, screener, name=f"worker-{index}")
            self._thread(f"worker-{index}", worker.run_forever, self.stop_event)
        self.status["workers"] = str(self.config.workers)
        self._thread("monitor", monitor.run_forever, self.stop_event)

        # Always started: a box enrolled later (`appliance sync enrol` from another
        # process, or the System page) starts sending within seconds, without a restart.
        from appliance.sync.worker import SyncWorker

        syncer = SyncWorker(self.store, self.config)
        syncer.on_hub = lambda url: self.status.__setitem__("sync", url)
        self._thread("sync", syncer.run_forever, self.stop_event)
        log.info("appliance serving data dir %s", self.config.data_dir)

    def _serve_web(self) -> None:
        try:
            self.web_server.run()
        except OSError:
            # close() from stop() pulls the socket out from under waitress's select():
            # expected while stopping, a real fault otherwise.
            if not self.stop_event.is_set():
                raise

    def _thread(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        if self.scp is not None:
            self.scp.stop()
        if self.web_server is not None:
            wake_commit_waiters()  # a page waiting for news sees the stop and is answered
            # Requests in flight finish before the sockets close: waitress's own close
            # does not wait, and an answer written after it fails in waitress's thread.
            self.web_server.task_dispatcher.shutdown(timeout=2)
            self.web_server.close()
        self.store.jobs_waiting.set()  # wake idle workers so they see the stop
        for thread in self.threads:
            thread.join(timeout=10)
        if self.models is not None:
            self.models.close()
        self.store.close()
        log.info("appliance stopped")

    def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT; used by ``appliance serve``."""

        def on_signal(signum, frame):
            log.info("received signal %s, stopping", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        start_watchdog(self)  # READY=1 and WATCHDOG=1 under systemd (Type=notify)
        print(
            f"appliance ready: web {self.status.get('web')}, "
            f"DICOM {self.status.get('dicom', 'off')}",
            flush=True,
        )
        try:
            self.stop_event.wait()
        finally:
            self.stop()
