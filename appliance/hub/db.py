"""The hub's database: SQLite by default, PostgreSQL (psycopg 3) given a URL — one code path.

The SQL is written once, in the dialect both understand (``ON CONFLICT ... DO UPDATE``,
``||``, no auto-increment: ids are text), with ``?`` placeholders translated to ``%s`` for
psycopg. A write is one explicit transaction; the hub acknowledges only after COMMIT.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appliance.errors import HubDatabaseError

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS hub_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        enrolled_at TEXT NOT NULL,
        revoked_at TEXT,
        last_seen_at TEXT,
        software TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS enrol_codes (
        code_hash TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        device_id TEXT
    )""",
    # One row per (device, entry id): the highest revision received wins.
    """CREATE TABLE IF NOT EXISTS entries (
        device_id TEXT NOT NULL REFERENCES devices(id),
        entry_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        kind TEXT NOT NULL,
        image_sha256 TEXT,
        route TEXT,
        triage TEXT,
        model_name TEXT,
        model_version TEXT,
        week TEXT,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL,
        PRIMARY KEY (device_id, entry_id)
    )""",
    "CREATE INDEX IF NOT EXISTS entries_kind_week ON entries(kind, week)",
    "CREATE INDEX IF NOT EXISTS entries_image ON entries(device_id, image_sha256)",
    """CREATE TABLE IF NOT EXISTS images (
        device_id TEXT NOT NULL REFERENCES devices(id),
        sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        stored_path TEXT NOT NULL,
        completed_at TEXT NOT NULL,
        PRIMARY KEY (device_id, sha256)
    )""",
    # Superseded by bundle_imports (a bundle id is one box's, not the hub's: another box
    # must not be able to take it); kept so an older hub's rows carry over.
    """CREATE TABLE IF NOT EXISTS imports (
        bundle_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        entries INTEGER NOT NULL,
        imported_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS bundle_imports (
        device_id TEXT NOT NULL REFERENCES devices(id),
        bundle_id TEXT NOT NULL,
        entries INTEGER NOT NULL,
        imported_at TEXT NOT NULL,
        PRIMARY KEY (device_id, bundle_id)
    )""",
    """INSERT INTO bundle_imports (device_id, bundle_id, entries, imported_at)
        SELECT device_id, bundle_id, entries, imported_at FROM imports WHERE true
        ON CONFLICT (device_id, bundle_id) DO NOTHING""",
    """CREATE TABLE IF NOT EXISTS admins (
        username TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    # Dashboard logins (appliance.logins.sessions) and failed-login counters
    # (appliance.logins.throttle): the same tables as on the box.
    """CREATE TABLE IF NOT EXISTS sessions (
        id_hash TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_subject ON sessions(subject)",
    """CREATE TABLE IF NOT EXISTS login_throttle (
        key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        blocked_until DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS login_throttle_updated ON login_throttle(updated_at)",
    # Model distribution (hub/distribution.py): the programme keys the hub checks a
    # bundle file with before publishing it, the published files, which boxes get which
    # (a device, a site or everyone; activate 0/1), and what each box reports it runs.
    """CREATE TABLE IF NOT EXISTS model_keys (
        key_id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        trusted_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS model_bundles (
        sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        stored_path TEXT NOT NULL,
        published_at TEXT NOT NULL,
        UNIQUE (name, version)
    )""",
    """CREATE TABLE IF NOT EXISTS rollouts (
        sha256 TEXT NOT NULL REFERENCES model_bundles(sha256),
        target TEXT NOT NULL,
        activate INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (sha256, target)
    )""",
    """CREATE TABLE IF NOT EXISTS device_models (
        device_id TEXT NOT NULL REFERENCES devices(id),
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        reported_at TEXT NOT NULL,
        PRIMARY KEY (device_id, name, version)
    )""",
    # What the FHIR server holds of each report (appliance/hub/fhir/push.py).
    """CREATE TABLE IF NOT EXISTS fhir_pushed (
        device_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        pushed_at TEXT NOT NULL,
        PRIMARY KEY (device_id, entry_id)
    )""",
)


class Connection:
    """A thin wrapper giving SQLite and psycopg the same small interface (rows as dicts)."""

    def __init__(self, raw: Any, backend: str) -> None:
        self.raw = raw
        self.backend = backend

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
        self.raw.close()


class HubDatabase:
    """Where the hub keeps what it received: ``url`` empty means ``data_dir/hub.db``."""

    def __init__(self, data_dir: Path, url: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.url = url
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
            try:
                import psycopg
                from psycopg.rows import dict_row
            except ImportError as exc:
                raise HubDatabaseError(
                    "PostgreSQL needs psycopg: "
                    "pip install 'clinic-screening-appliance[hub-postgres]'"
                ) from exc
            try:
                raw = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
            except psycopg.Error as exc:
                raise HubDatabaseError(f"cannot connect to {self.describe()}: {exc}") from exc
            return Connection(raw, "postgresql")
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

    def migrate(self) -> None:
        conn = self.connect()
        try:
            with conn.transaction():
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO hub_meta (key, value) VALUES ('schema', '1')"
                    " ON CONFLICT (key) DO NOTHING"
                )
        finally:
            conn.close()
