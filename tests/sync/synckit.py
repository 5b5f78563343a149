"""Test kit for sync and hub tests (import as ``from sync.synckit import ...``).

Real servers on 127.0.0.1 only: the hub under waitress in a thread or a subprocess, a
fault-injecting TCP proxy, and a PostgreSQL server started from the Debian binaries.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from helpers import free_port
from werkzeug.serving import make_server

from appliance.store.db import Store, utc_now
from appliance.store.results import insert_result

# Settings that make a box retry quickly (tests only; the defaults are minutes).
FAST_RETRIES = {
    "sync_retry_min_seconds": 0.02,
    "sync_retry_max_seconds": 0.5,
    "sync_interval_seconds": 0.1,
    "sync_timeout_seconds": 3.0,
}

# -- the box's backlog ---------------------------------------------------------------
RESULT = {
    "route": "chest_xray",
    "reason": None,
    "hints": [],
    "probability": 0.8123,
    "score": 81,
    "threshold": 0.5,
    "triage": "urgent",
    "model": {"name": "cxr-pneumonia", "version": "1.2.0", "sha256": "ab" * 32},
    "backend": "onnxruntime",
    "router": {"label": "chest_xray", "confidence": 0.99},
    "timings_ms": {"total": 41.0},
}


def sha256_of(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def make_backlog(store: Store, count: int, *, per_transaction: int = 2500) -> list[int]:
    """``count`` images with one result each, through the real ``insert_result`` (which
    writes the outbox), in a few transactions. Returns the image ids."""
    image_ids: list[int] = []
    now = utc_now()
    offset = store.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0]
    for start in range(0, count, per_transaction):
        with store.write() as conn:
            for n in range(offset + start, offset + min(start + per_transaction, count)):
                study = conn.execute(
                    "INSERT INTO studies (study_instance_uid, patient_id, patient_name,"
                    " study_date, accession_number, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (f"1.2.826.0.1.{n}", f"P{n:06d}", f"Doe^Jane{n}", "20240501", f"A{n}", now),
                ).lastrowid
                image = conn.execute(
                    "INSERT INTO images (study_id, sop_instance_uid, modality, body_part,"
                    " file_format, source, original_name, sha256, size_bytes, stored_path,"
                    " received_at, state) VALUES (?, ?, 'CR', 'CHEST', 'dicom', 'dicom',"
                    " ?, ?, 1000, '', ?, 'decoded')",
                    (study, f"1.2.826.0.2.{n}", f"IM{n}", sha256_of(n), now),
                ).lastrowid
                score = (n * 37) % 101  # realistic variety: it decides the wire's compression
                probability = min(1.0, score / 100.0 + 0.0012345)  # a probability: <= 1
                result = {**RESULT, "score": score, "probability": probability}
                if n % 7 == 0:
                    result.update(route="refused", reason="Not a chest X-ray.", triage=None)
                insert_result(conn, image, None, result, None)
                image_ids.append(image)
    return image_ids


# -- the hub -------------------------------------------------------------------------
class HubThread:
    """The hub app served in a thread of the test process.

    Werkzeug's threaded server rather than waitress here: it stops cleanly from another
    thread (``shutdown``); waitress itself is exercised by ``HubProcess``.
    """

    def __init__(
        self,
        data_dir: Path,
        database_url: str = "",
        port: int | None = None,
        ssl_context=None,
    ) -> None:
        from appliance.hub import create_app

        self.data_dir = data_dir
        self.database_url = database_url
        self.app = create_app(data_dir, database_url)
        self.port = port or free_port()
        self.scheme = "https" if ssl_context else "http"
        self.server = make_server(
            "127.0.0.1", self.port, self.app, threaded=True, ssl_context=ssl_context
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def conn(self):
        return self.app.extensions["hub_database"].connect()

    def enrol_code(self, site: str = "Clinic A") -> str:
        from appliance.hub import records

        conn = self.conn()
        try:
            return records.create_enrolment_code(conn, site)
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class HubProcess:
    """``appliance hub serve`` as a real process (to be killed with -9)."""

    def __init__(
        self, data_dir: Path, port: int, database_url: str = "", write_delay: float = 0.0
    ) -> None:
        self.data_dir, self.port = data_dir, port
        args = [sys.executable, "-m", "appliance", "hub", "serve", "--data-dir", str(data_dir)]
        args += ["--port", str(port), "--test-write-delay", str(write_delay)]
        if database_url:
            args += ["--database-url", database_url]
        self.log = open(data_dir.parent / f"hub-{port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=clean_env())
        wait_for_port(port, 20)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def enrolment_code(hub_dir: Path, database_url: str = "", site: str = "Clinic A") -> str:
    """A one-time enrolment code straight from the hub's database (as `hub enrol-code`)."""
    from appliance.hub import records
    from appliance.hub.db import HubDatabase

    conn = HubDatabase(hub_dir, database_url).connect()
    try:
        return records.create_enrolment_code(conn, site)
    finally:
        conn.close()


def enrol(data_dir: Path, hub_url: str, code: str, ca_bundle: Path | None = None) -> None:
    from click.testing import CliRunner

    from appliance.cli import main

    env = {"APPLIANCE_DATA_DIR": None}
    if ca_bundle is not None:  # a hub behind HTTPS with a private CA
        env["APPLIANCE_SYNC_CA_BUNDLE"] = str(ca_bundle)
    result = CliRunner().invoke(
        main,
        ["sync", "enrol", "--data-dir", str(data_dir), "--hub", hub_url, "--code", code],
        env=env,
    )
    assert result.exit_code == 0, result.output


def hub_entries(hub_conn) -> list[dict]:
    return hub_conn.execute("SELECT device_id, entry_id, revision, payload FROM entries")


# -- the fault-injecting proxy -------------------------------------------------------
class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 that drops requests, cuts answers and adds delay.

    Per request (a box keeps its connection for a pass, so this reads each request and
    each answer by its length): with ``drop`` probability the request is read and the
    connection closed without forwarding it; with ``cut`` probability the request reaches
    the hub but the answer is cut after 200 bytes and the connection closed; every
    request waits up to ``delay`` seconds first. Counts what it did and the bytes.

    ``per_connection``: for TLS it cannot read, the same faults decided once for each
    connection, the bytes piped as they come (a kept connection then fails only at its
    start).
    """

    def __init__(
        self,
        target_port: int,
        *,
        drop: float = 0.3,
        cut: float = 0.15,
        delay: float = 0.02,
        seed: int = 6,
        per_connection: bool = False,
    ) -> None:
        self.target_port = target_port
        self.per_connection = per_connection
        self.drop, self.cut, self.delay = drop, cut, delay
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stats = {"connections": 0, "requests": 0, "dropped": 0, "cut": 0, "bytes": 0}
        # Room for hundreds of boxes connecting at once (bench/hub_load.py): with Python's
        # default backlog (128) their SYNs are dropped and retried a second or more later.
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._count("connections")
            serve = self._serve_connection if self.per_connection else self._serve
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    def _count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.stats[name] += n

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            with client:
                from_client = client.makefile("rb")
                while True:
                    request = _http_message(from_client, answer=False)
                    if request is None:
                        return
                    with self.lock:
                        self.stats["requests"] += 1
                        roll, delay = self.rng.random(), self.rng.random() * self.delay
                    time.sleep(delay)
                    if roll < self.drop:  # the request's start read, then a dead connection
                        self._count("dropped")
                        return
                    if upstream is None:
                        upstream = socket.create_connection(
                            ("127.0.0.1", self.target_port), timeout=60
                        )
                        from_hub = upstream.makefile("rb")
                    upstream.sendall(request)
                    answer = _http_message(from_hub, answer=True)
                    if answer is None:
                        return
                    if roll < self.drop + self.cut:  # the hub committed; the box never knows
                        client.sendall(answer[:200])
                        self._count("bytes", len(request) + 200)
                        self._count("cut")
                        return
                    client.sendall(answer)
                    self._count("bytes", len(request) + len(answer))
                    if _closes(request) or _closes(answer):
                        return
        except OSError:
            return
        finally:
            if upstream is not None:
                upstream.close()

    def _serve_connection(self, client: socket.socket) -> None:
        with self.lock:
            roll, delay = self.rng.random(), self.rng.random() * self.delay
        time.sleep(delay)
        with client:
            if roll < self.drop:
                client.settimeout(2)
                try:
                    client.recv(65536)  # the first request's start, then a dead connection
                except OSError:
                    pass
                self._count("dropped")
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=60)
            except OSError:
                return
            with upstream:
                cut = roll < self.drop + self.cut
                pump = threading.Thread(target=self._pipe, args=(client, upstream), daemon=True)
                pump.start()
                self._pipe(upstream, client, cut_after=200 if cut else None)
                if cut:
                    self._count("cut")

    def _pipe(self, source: socket.socket, sink: socket.socket, cut_after: int | None = None):
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if cut_after is not None and sent + len(data) > cut_after:
                    sink.sendall(data[: max(0, cut_after - sent)])
                    self._count("bytes", max(0, cut_after - sent))
                    break
                sink.sendall(data)
                sent += len(data)
                self._count("bytes", len(data))
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def _http_message(stream, *, answer: bool) -> bytes | None:
    """One HTTP/1.1 message as bytes (head and body, by Content-Length or chunks), or
    None when the connection ends first."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline(65537)
        if not line:
            return None
        head += line
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    if answer:
        status = head.split(b" ", 2)[1]
        if status[:1] == b"1" or status in (b"204", b"304"):  # no body, whatever it says
            return head
    if fields.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size_line = stream.readline(1024)
            body += size_line
            size = int(size_line.split(b";")[0], 16)
            body += stream.read(size + 2)
            if size == 0:
                return head + body
    if answer and b"content-length" not in fields:  # HTTP/1.0: the body runs to the end
        return head + stream.read()
    length = int(fields.get(b"content-length", b"0"))
    body = stream.read(length) if length else b""
    if len(body) < length:
        return None
    return head + body


def _closes(message: bytes) -> bool:
    return b"\r\nconnection: close" in message.split(b"\r\n\r\n", 1)[0].lower()


# -- PostgreSQL from the Debian package ----------------------------------------------
def postgres_binaries() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free loopback port (as ``postgres`` if root)."""

    def __init__(self, bindir: Path, base: Path) -> None:
        self.bindir = bindir
        self.dir = base / "pgdata"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:  # initdb refuses to run as root: the cluster belongs to postgres
            import pwd

            entry = pwd.getpwnam("postgres")
            os.chown(base, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            "pg_ctl", "-D", str(self.dir), "-o", options, "-l", str(base / "pg.log"), "-w", "start"
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"hub_{random.randrange(10**9)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "immediate", "-w", "stop")


def hub_database_from_the_future(data_dir: Path, database_url: str = "") -> int:
    """A migrated hub database marked one schema version newer than this code knows;
    returns that version."""
    from appliance.hub import records
    from appliance.hub.db import HubDatabase
    from appliance.hub.migrations import LATEST

    database = HubDatabase(data_dir, database_url)
    database.migrate()
    conn = database.connect()
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (LATEST + 1, "from the future", records.now()),
            )
    finally:
        conn.close()
    return LATEST + 1


@contextlib.contextmanager
def hub_database_url(url: str = "") -> Iterator[str]:
    """``url``, or a fresh database on a throw-away cluster stopped and removed after
    (the benches: ``--database-url`` or nothing)."""
    if url:
        yield url
        return
    bindir = postgres_binaries()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found: give --database-url")
    server = PostgresServer(bindir, Path(tempfile.mkdtemp(prefix="bench-pg-")))
    try:
        yield server.create_database()
    finally:
        server.stop()
        shutil.rmtree(server.dir.parent, ignore_errors=True)


def read_json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def box_public_key() -> str:
    """A real box's public key as enrolment sends it (the hub checks it is Ed25519)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.wire.bundle import public_key_text

    return public_key_text(Ed25519PrivateKey.generate())


# -- a private CA and a hub certificate for 127.0.0.1 (HTTPS tests, nginx) -----------------
def certificate(subject: str, issuer_key, issuer_name, public_key, *, ca: bool):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def private_ca(folder: Path) -> tuple[Path, Path, Path]:
    """``ca.pem`` (the programme's CA), ``hub.pem`` and ``hub.key`` (signed by it) in
    ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Programme CA")])
    ca_cert = certificate("Programme CA", ca_key, ca_name, ca_key.public_key(), ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("hub", ca_key, ca_name, key.public_key(), ca=False)
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "hub.pem", folder / "hub.key"
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths
