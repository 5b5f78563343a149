"""The hub's database: SQLite by default, PostgreSQL (psycopg 3) given a URL — one code path.

The SQL is written once, in the dialect both understand (``ON CONFLICT ... DO UPDATE``,
``||``, no auto-increment: ids are text), with ``?`` placeholders translated to ``%s`` for
psycopg. A write is one explicit transaction; the hub acknowledges only after COMMIT.

With ``pool_size`` (``appliance hub serve`` sets it) PostgreSQL connections come from a
``psycopg_pool.ConnectionPool`` per process, opened on first use — after gunicorn forks
its workers, never before, so no two processes share a socket — and ``close()`` gives
the connection back. Every PostgreSQL session has a statement timeout: a runaway query
ends with an error instead of holding a worker.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appliance.errors import HubDatabaseError

CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 30_000  # below gunicorn's worker timeout: the query ends first
POOL_WAIT_S = 10.0


class Connection:
    """A thin wrapper giving SQLite and psycopg the same small interface (rows as dicts)."""

    def __init__(self, raw: Any, backend: str, pool: Any = None) -> None:
        self.raw = raw
        self.backend = backend
        self.pool = pool

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.backend == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.raw.execute(self._sql(sql), tuple(params))
        if cur.description is None:
            return []
        return [dict(row) for row in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.backend == "postgresql":
            with self.raw.cursor() as cur:
                cur.executemany(self._sql(sql), [tuple(r) for r in rows])
        else:
            self.raw.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Everything inside commits together; the commit is durable when this returns."""
        if self.backend == "postgresql":
            with self.raw.transaction():
                yield self
            return
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        else:
            self.raw.execute("COMMIT")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.putconn(self.raw)  # the pool resets or discards a broken one
        else:
            self.raw.close()


class HubDatabase:
    """Where the hub keeps what it received: ``url`` empty means ``data_dir/hub.db``."""

    def __init__(self, data_dir: Path, url: str = "", pool_size: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.url = url
        self.pool_size = pool_size
        self._pool_obj: Any = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        if url.startswith(("postgresql://", "postgres://")):
            self.backend = "postgresql"
        elif url in ("", "sqlite") or url.startswith("sqlite:///"):
            self.backend = "sqlite"
            self.path = (
                Path(url[len("sqlite:///") :])
                if url.startswith("sqlite:")
                else (self.data_dir / "hub.db")
            )
        else:
            raise HubDatabaseError(
                f"unsupported hub database URL {url!r}: use postgresql://... or leave it empty"
            )

    def describe(self) -> str:
        if self.backend == "sqlite":
            return f"SQLite {self.path}"
        return "PostgreSQL " + self.url.split("@")[-1]  # never print the password

    def connect(self) -> Connection:
        if self.backend == "postgresql":
            return self._connect_postgresql()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            raw.row_factory = sqlite3.Row
            raw.execute("PRAGMA busy_timeout=30000")
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=FULL")
            raw.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise HubDatabaseError(f"cannot open {self.path}: {exc}") from exc
        return Connection(raw, "sqlite")

    def _connect_postgresql(self) -> Connection:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as exc:
            raise HubDatabaseError(
                "PostgreSQL needs psycopg: pip install 'clinic-screening-appliance[hub-postgres]'"
            ) from exc
        options = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        }
        try:
            if self.pool_size > 0:
                pool = self._pool(options)
                return Connection(pool.getconn(timeout=POOL_WAIT_S), "postgresql", pool)
            raw = psycopg.connect(self.url, **options)
        except (psycopg.Error, OSError) as exc:
            raise HubDatabaseError(f"cannot connect to {self.describe()}: {exc}") from exc
        except Exception as exc:  # psycopg_pool.PoolTimeout: every connection busy
            if type(exc).__name__ != "PoolTimeout":
                raise
            raise HubDatabaseError(f"no free connection to {self.describe()}: {exc}") from exc
        return Connection(raw, "postgresql")

    def _pool(self, options: dict[str, Any]) -> Any:
        """This process's pool (a forked worker opens its own, never its parent's)."""
        with self._pool_lock:
            if self._pool_pid != os.getpid() or self._pool_obj is None:
                try:
                    from psycopg_pool import ConnectionPool
                except ImportError as exc:
                    raise HubDatabaseError(
                        "a pooled hub needs psycopg_pool: "
                        "pip install 'clinic-screening-appliance[hub-postgres]'"
                    ) from exc
                self._pool_obj = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs=options,
                    timeout=POOL_WAIT_S,
                    max_idle=300,
                    name=f"hub-{os.getpid()}",
                    open=True,
                )
                self._pool_pid = os.getpid()
            return self._pool_obj

    def close(self) -> None:
        """Close this process's pool (connections given back are closed with it)."""
        with self._pool_lock:
            if self._pool_obj is not None and self._pool_pid == os.getpid():
                self._pool_obj.close()
            self._pool_obj = None

    def migrate(self) -> list[int]:
        """Apply pending migrations (``migrations.py``); returns the versions applied."""
        from appliance.hub.migrations import migrate

        conn = self.connect()
        try:
            return migrate(conn)
        finally:
            conn.close()
