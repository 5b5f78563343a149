"""The hub under hostile bodies: a real `appliance hub serve` process, real gzip bombs sent
over real sockets, several at once, and its memory read from /proc (VmHWM: the peak)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import threading
import time
import zlib
from pathlib import Path

import pytest
from helpers import free_port
from sync.synckit import HubProcess, HubThread, box_public_key

from appliance.hub import limits, records
from appliance.hub.db import HubDatabase
from appliance.sync.client import HubClient

MB = 1024 * 1024


def gzip_bomb(prefix: bytes, unit: bytes, inflated: int, suffix: bytes) -> bytes:
    """``prefix + unit * n + suffix`` of about ``inflated`` bytes, gzip-compressed in
    pieces (never held inflated): 63 MB of JSON in about 64 KB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(prefix)]
    block = unit * (MB // len(unit))
    for _ in range(inflated // len(block)):
        out.append(packer.compress(block))
    out.append(packer.compress(suffix))
    out.append(packer.flush())
    return b"".join(out)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", f"/api/v1{path}", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def assert_error_shape(answer: dict) -> dict:
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
    return answer["error"]


@pytest.fixture
def hub_process(tmp_path):
    data_dir = tmp_path / "hub"
    database = HubDatabase(data_dir)
    database.migrate()
    port = free_port()
    hub = HubProcess(data_dir, port)
    conn = database.connect()
    try:
        hub.enrol_code = records.create_enrolment_code(conn, "Clinic A")
    finally:
        conn.close()
    yield hub
    hub.kill()


def test_gzip_bombs_several_at_once_leave_the_hub_under_300_mb(hub_process):
    """A 64 KB gzip body inflating to 63 MB of JSON took the hub from 64 MB to 1.7 GB;
    three at once killed it. Now each endpoint inflates only up to its own limit."""
    port = hub_process.port
    url = f"http://127.0.0.1:{port}"
    token = HubClient(url).enrol(hub_process.enrol_code, "box", box_public_key())["token"]
    baseline = peak_rss_mb(hub_process.proc.pid)

    empty_objects = gzip_bomb(b'{"entries": [', b"{},", 63 * MB, b"{}]}")
    assert len(empty_objects) < 100 * 1024
    # The largest body /entries accepts, built for memory: a string of 4-byte characters.
    widest = gzip.compress(b'{"entries": "' + "\U0001d11e".encode() * (limits.MB - 8) + b'"}')
    gz = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    authed = {**gz, "Authorization": f"Bearer {token}"}
    requests = (
        [("/enrol", empty_objects, gz)] * 6
        + [("/entries", empty_objects, authed)] * 6
        + [("/known", empty_objects, authed)] * 3
        + [("/entries", widest, authed)] * 6
    )
    answers: list[tuple[int, dict]] = []
    barrier = threading.Barrier(len(requests))

    def send(path: str, body: bytes, headers: dict) -> None:
        barrier.wait()
        answers.append(post(port, path, body, headers))

    threads = [threading.Thread(target=send, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    peak = peak_rss_mb(hub_process.proc.pid)
    print(f"hub peak RSS: {baseline:.0f} MB before, {peak:.0f} MB under {len(requests)} bombs")

    assert len(answers) == len(requests)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [400] * 6 + [413] * 15, statuses  # the widest one is valid JSON
    for _status, answer in answers:
        assert_error_shape(answer)
    assert peak < 300, f"the hub peaked at {peak:.0f} MB"
    assert HubClient(url, token).ping()["site"] == "Clinic A"  # and it carries on


def test_waitress_refuses_an_oversized_body_in_the_one_json_shape(hub_process):
    conn = http.client.HTTPConnection("127.0.0.1", hub_process.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/entries")
        conn.putheader("Content-Length", str(2 * 1024**3))
        conn.putheader("Content-Type", "application/json")
        conn.endheaders()
        response = conn.getresponse()
        status, body = response.status, response.read()
    finally:
        conn.close()
    assert status == 413 and response.getheader("Content-Type") == "application/json"
    assert assert_error_shape(json.loads(body))["code"] == "request_entity_too_large"


@pytest.fixture
def hub(tmp_path):
    server = HubThread(tmp_path / "hub")
    yield server
    server.close()


def enrolled(hub) -> tuple[HubClient, str]:
    answer = HubClient(hub.url).enrol(hub.enrol_code(), "box-1", box_public_key())
    return HubClient(hub.url, answer["token"]), answer["device_id"]


def raw(hub, method: str, path: str, body: bytes = b"", token: str = "", **headers):
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30)
    send = {"Content-Type": "application/json", **headers}
    if token:
        send["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, f"/api/v1{path}", body=body, headers=send)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        # RecursionError in json.loads once gave a 500.
        ("/entries", b"[" * 100_000 + b"]" * 100_000, 400, "bad_request"),
        ("/entries", b'{"entries": ' + b"[" * 20 + b"]" * 20 + b"}", 400, "bad_request"),
        # A revision past 64 bits once overflowed into a 500 on insert.
        (
            "/entries",
            b'{"entries": [{"id": "a", "rev": 100000000000000000000000, "kind": "result",'
            b' "data": {}}]}',
            400,
            "bad_payload",
        ),
        ("/known", b'{"entries": [["a", 1]' + b', ["a", 1]' * 6000 + b"]}", 400, "bad_payload"),
        ("/known", b'{"entries": [["a", "1"]]}', 400, "bad_payload"),
        ("/enrol", b'{"code": "' + b"A" * 5000 + b'"}', 413, "request_entity_too_large"),
        ("/entries", b"{}", 415, "unsupported_media_type"),  # with Content-Encoding: br
    ],
)
def test_malformed_or_oversized_json_is_a_4xx_in_the_one_shape(hub, path, body, status, code):
    client, _ = enrolled(hub)
    headers = {"Content-Encoding": "br"} if status == 415 else {}
    got, answer = raw(hub, "POST", path, body, client.token, **headers)
    assert (got, assert_error_shape(answer)["code"]) == (status, code)


@pytest.mark.parametrize(
    "public_key",
    ["AAAA", "", "not base64!", "A" * 44, "QUFB" * 11 + "QQ==", "x" * 4000],
)
def test_enrolment_checks_the_public_key(hub, public_key):
    code = hub.enrol_code()
    status, answer = raw(
        hub,
        "POST",
        "/enrol",
        json.dumps({"code": code, "name": "box", "public_key": public_key}).encode(),
    )
    assert status in (400, 413)
    assert_error_shape(answer)
    conn = hub.conn()
    try:
        assert conn.one("SELECT COUNT(*) AS n FROM devices")["n"] == 0
        assert conn.one("SELECT used_at FROM enrol_codes")["used_at"] is None  # still usable
    finally:
        conn.close()


def test_image_chunks_are_bounded_in_index_size_and_count(hub):
    client, device_id = enrolled(hub)
    sha = "ab" * 32
    chunk = b"x" * 1000
    digest = hashlib.sha256(chunk).hexdigest()
    headers = {"X-Chunk-Sha256": digest, "Content-Type": "application/octet-stream"}
    huge_index = "9" * 40
    status, answer = raw(
        hub, "PUT", f"/images/{sha}/chunks/{huge_index}", chunk, client.token, **headers
    )
    assert status == 400 and assert_error_shape(answer)["code"] == "bad_chunk"
    status, answer = raw(
        hub, "PUT", f"/images/{sha}/chunks/{limits.MAX_CHUNKS}", chunk, client.token, **headers
    )
    assert status == 400
    big = b"y" * (limits.MAX_CHUNK_BYTES + 1)
    status, answer = raw(
        hub,
        "PUT",
        f"/images/{sha}/chunks/0",
        big,
        client.token,
        **{**headers, "X-Chunk-Sha256": hashlib.sha256(big).hexdigest()},
    )
    assert status == 413 and assert_error_shape(answer)
    for body in (b'{"size": 1, "chunks": 10000000000}', b'{"size": -1, "chunks": 1}'):
        status, answer = raw(hub, "POST", f"/images/{sha}/complete", body, client.token)
        assert status == 400 and assert_error_shape(answer)["code"] == "bad_payload"
    # A box may have only a few images half-sent at once.
    for n in range(limits.MAX_PARTIAL_IMAGES):
        client.put_chunk(f"{n:064x}", 0, chunk, digest)
    status, answer = raw(hub, "PUT", f"/images/{'f' * 64}/chunks/0", chunk, client.token, **headers)
    assert status == 429 and assert_error_shape(answer)["code"] == "too_many_partial_images"
    parts = hub.data_dir / "images" / device_id
    assert len(list(parts.glob("*.parts"))) == limits.MAX_PARTIAL_IMAGES


def test_abandoned_partial_images_are_cleaned_up(tmp_path):
    hub = HubThread(tmp_path / "hub")
    try:
        client, device_id = enrolled(hub)
        chunk = b"z" * 100
        digest = hashlib.sha256(chunk).hexdigest()
        for n in range(3):
            client.put_chunk(f"{n:064x}", 0, chunk, digest)
        folder = hub.data_dir / "images" / device_id
        old = time.time() - limits.PARTS_TTL_SECONDS - 60
        os.utime(folder / f"{0:064x}.parts", (old, old))
        client.put_chunk(f"{1:064x}", 1, chunk, digest)  # any chunk from the box tidies up
        assert sorted(p.name[:4] for p in folder.glob("*.parts")) == ["0000", "0000"]
        assert not (folder / f"{0:064x}.parts").exists()
        os.utime(folder / f"{2:064x}.parts", (old, old))
    finally:
        hub.close()
    restarted = HubThread(tmp_path / "hub")  # and the hub tidies up when it starts
    try:
        assert [p.name for p in folder.glob("*.parts")] == [f"{1:064x}.parts"]
    finally:
        restarted.close()


def test_a_box_that_finds_every_parser_busy_is_told_when_to_come_back(hub, monkeypatch):
    from appliance.errors import HubBusyError

    client, _ = enrolled(hub)
    monkeypatch.setattr(limits, "PARSE_WAIT_SECONDS", 0.1)
    held = 0
    try:
        while limits._parsers.acquire(blocking=False):  # every slot taken by other bodies
            held += 1
        with pytest.raises(HubBusyError) as raised:
            client.send_entries([])
    finally:
        for _ in range(held):
            limits._parsers.release()
    assert held == limits.PARSERS
    assert raised.value.retry_after == limits.PARSE_RETRY_AFTER_S
    assert client.send_entries([]) == []  # and once a slot is free, it is served
