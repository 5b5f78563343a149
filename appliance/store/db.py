"""The SQLite database: one connection per thread, WAL, explicit write transactions.

Durability matters more than speed here (a power cut must not lose an acknowledged
image), so ``synchronous=FULL``: a committed transaction survives a power cut (except
what ``Store.write(durable=False)`` says it need not).
Everything here is patient data: the data directory is the owner's alone (0700) and so
are the database and its WAL and shared-memory files (0600).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlite_utils import Database

from appliance.errors import StoreError
from appliance.store.migrations import migrations

BUSY_TIMEOUT_MS = 30_000
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# SQLite gives the -wal and -shm files the database file's mode when it creates them.
DB_SUFFIXES = ("", "-wal", "-shm")

log = logging.getLogger(__name__)


# Write transactions committed in this process, counted, so that a page waiting for news
# (the worklist's marker) wakes as soon as there may be some instead of asking every few
# seconds. Process-wide, not per Store: the service's workers, its listener and its web
# app each open the same database through a Store of their own.
_commits = threading.Condition()
_commit_count = 0


def commits_so_far() -> int:
    """How many write transactions this process has committed: pass it to
    :func:`wait_for_commit` to wait for the next one without missing any in between."""
    with _commits:
        return _commit_count


def wait_for_commit(seen: int, timeout: float) -> int:
    """Return the commit count once it has passed ``seen``, or after ``timeout`` seconds."""
    with _commits:
        _commits.wait_for(lambda: _commit_count != seen, timeout)
        return _commit_count


def _committed() -> None:
    global _commit_count
    with _commits:
        _commit_count += 1
        _commits.notify_all()


def wake_commit_waiters() -> None:
    """Wake every :func:`wait_for_commit` now, as a commit would (a stopping box: the
    pages waiting for news are answered before the web server closes)."""
    _committed()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect(db_path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; writers say BEGIN IMMEDIATE so
    # they never deadlock upgrading a read lock.
    conn = sqlite3.connect(
        db_path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreError(f"{db_path}: could not switch the database to WAL mode ({mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Store:
    """Owns the data directory's layout and hands out per-thread connections."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "appliance.db"
        self.images_dir = self.data_dir / "images"
        self.quarantine_dir = self.data_dir / "quarantine"
        self.previews_dir = self.data_dir / "previews"
        self.tmp_dir = self.data_dir / "tmp"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Set when a job is enqueued, so idle workers in this process start at once.
        self.jobs_waiting = threading.Event()

    @classmethod
    def open(cls, data_dir: Path, *, migrate: bool = True) -> Store:
        store = cls(data_dir)
        store.data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        store.make_private()
        for folder in (
            store.images_dir,
            store.quarantine_dir,
            store.previews_dir,
            store.tmp_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        if migrate:
            store.migrate()
        return store

    def make_private(self) -> None:
        """Create the database file 0600 before SQLite does (whatever the umask), and
        tighten a data directory and database made before this rule, at every start."""
        try:
            os.chmod(self.data_dir, PRIVATE_DIR)
            # Only a file that does not exist yet: closing any descriptor of an open
            # database drops this process's POSIX locks on it (SQLite's locks), and another
            # process's last close would then delete the WAL under the live connections.
            try:
                os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
            except FileExistsError:
                pass
            for suffix in DB_SUFFIXES:
                path = self.db_path.with_name(self.db_path.name + suffix)
                if path.exists():
                    os.chmod(path, PRIVATE_FILE)
        except PermissionError as exc:  # e.g. run by another user: serve what we can
            log.warning("cannot make %s private: %s", self.data_dir, exc)

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        db = Database(self.conn())
        pending = [m.name for m in migrations.pending(db)]
        if pending:
            migrations.apply(db)
        return pending

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(Database(self.conn()))]

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = connect(self.db_path)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.db_path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL``
        for this one commit), for what matters only while this process lives: a job's
        lease, the note that its decode began. A process that dies has still written it
        (it sits in the system's cache); a power cut may lose it but never corrupts the
        database, and any later durable commit makes it durable too (the WAL is written
        in order). Two fewer disk flushes before each result (issue 28)."""
        conn = self.conn()
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
                _committed()
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()


def audit(
    conn: sqlite3.Connection, actor: str, action: str, subject: str = "", detail: str = ""
) -> None:
    """Append one line to the audit log (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (utc_now(), actor, action, subject, detail),
    )
