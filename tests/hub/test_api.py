"""The hub's device API on a real server, against SQLite and PostgreSQL alike."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json

import pytest
from sync.synckit import HubThread, box_public_key

from appliance.errors import HubAuthError, HubRejectedError
from appliance.hub import records
from appliance.sync.client import HubClient


@pytest.fixture
def hub(tmp_path, database_url):
    server = HubThread(tmp_path / "hub", database_url)
    yield server
    server.close()


def enrolled(hub, site: str = "Clinic A") -> tuple[HubClient, str]:
    answer = HubClient(hub.url).enrol(hub.enrol_code(site), "box-1", box_public_key())
    return HubClient(hub.url, answer["token"]), answer["device_id"]


def entry(entry_id: str, rev: int = 1, kind: str = "result", **data) -> dict:
    body = {
        "image": {"sha256": "ab" * 32},
        "route": "chest_xray",
        "triage": "urgent",
        "model": {"name": "cxr", "version": "1.0"},
        "created_at": "2024-05-02T10:00:00",
    }
    body.update(data)
    return {"id": entry_id, "rev": rev, "kind": kind, "data": body}


def raw_post(hub, path: str, body: bytes, token: str = "", encoding: str = ""):
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if encoding:
        headers["Content-Encoding"] = encoding
    conn.request("POST", f"/api/v1{path}", body=body, headers=headers)
    response = conn.getresponse()
    status, data = response.status, json.loads(response.read())
    conn.close()
    return status, data


def test_enrolment_code_works_once_and_the_token_is_stored_hashed(hub):
    code = hub.enrol_code("Clinic B")
    typed = code.lower()  # typed in lower case
    answer = HubClient(hub.url).enrol(typed, "box-1", box_public_key())
    assert answer["site"] == "Clinic B" and len(answer["token"]) > 30
    with pytest.raises(HubAuthError, match="already used"):
        HubClient(hub.url).enrol(code, "box-2", box_public_key())
    with pytest.raises(HubAuthError, match="unknown enrolment code"):
        HubClient(hub.url).enrol("NOPE-NOPE-NOPE", "box-2", box_public_key())
    conn = hub.conn()
    try:
        row = conn.one("SELECT token_hash FROM devices WHERE id = ?", (answer["device_id"],))
    finally:
        conn.close()
    assert answer["token"] not in row["token_hash"]


def test_unknown_token_is_401_and_revoked_device_403(hub):
    with pytest.raises(HubAuthError) as unknown:
        HubClient(hub.url, "not-a-token").ping()
    assert unknown.value.status == 401
    client, device_id = enrolled(hub)
    assert client.ping()["device_id"] == device_id
    conn = hub.conn()
    try:
        assert records.revoke_device(conn, device_id)
    finally:
        conn.close()
    with pytest.raises(HubAuthError, match="revoked") as revoked:
        client.send_entries([entry("result:1")])
    assert revoked.value.status == 403


@pytest.mark.parametrize(
    "body, encoding",
    [
        (b"not json", ""),
        (b'{"entries": "x"}', ""),
        (b'{"entries": [{"id": "a", "rev": 0, "kind": "result", "data": {}}]}', ""),
        (b'{"entries": [{"id": "a", "rev": 1, "kind": "poem", "data": {}}]}', ""),
        (b'{"entries": [{"id": "a", "rev": "1", "kind": "result", "data": {}}]}', ""),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
    ],
)
def test_malformed_payloads_get_400_in_the_one_error_shape(hub, body, encoding):
    client, _ = enrolled(hub)
    status, answer = raw_post(hub, "/entries", body, client.token, encoding)
    assert status == 400
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
    conn = hub.conn()
    try:
        assert conn.one("SELECT COUNT(*) AS n FROM entries")["n"] == 0
    finally:
        conn.close()


def test_every_api_error_has_the_same_shape(hub):
    for path, token in (("/entries", ""), ("/nowhere", "x")):
        status, answer = raw_post(hub, path, b"{}", token)
        assert status in (401, 404)
        assert set(answer["error"]) == {"code", "message"}


def test_upserts_are_idempotent_and_a_higher_revision_supersedes(hub):
    client, device_id = enrolled(hub)
    batch = [entry(f"result:{n}") for n in range(50)]
    batch.append(entry("review:x", 1, "review", verdict="agree"))
    assert len(client.send_entries(batch)) == 51
    assert len(client.send_entries(batch)) == 51  # a resend is acknowledged, stored once
    client.send_entries([entry("review:x", 3, "review", verdict="disagree")])
    client.send_entries([entry("review:x", 2, "review", verdict="agree")])  # late, older
    conn = hub.conn()
    try:
        assert conn.one("SELECT COUNT(*) AS n FROM entries")["n"] == 51
        review = conn.one("SELECT revision, payload FROM entries WHERE entry_id = 'review:x'")
    finally:
        conn.close()
    assert review["revision"] == 3 and json.loads(review["payload"])["verdict"] == "disagree"
    assert client.known([("result:1", 1), ("review:x", 2), ("result:999", 1)]) == [
        ("result:1", 1),
        ("review:x", 2),
    ]
    # A gzip body is accepted the same way.
    body = gzip.compress(json.dumps({"entries": [entry("result:gz")]}).encode())
    status, answer = raw_post(hub, "/entries", body, client.token, "gzip")
    assert status == 200 and answer["acked"] == [["result:gz", 1]]


def test_two_devices_may_use_the_same_entry_id(hub):
    one, _ = enrolled(hub, "A")
    two, _ = enrolled(hub, "B")
    one.send_entries([entry("result:1")])
    two.send_entries([entry("result:1")])
    conn = hub.conn()
    try:
        assert conn.one("SELECT COUNT(*) AS n FROM entries")["n"] == 2
    finally:
        conn.close()


def test_images_arrive_in_verified_chunks_and_resume(hub):
    client, device_id = enrolled(hub)
    image = bytes(range(256)) * 40  # 10 kB: 3 chunks of 4 kB
    sha = hashlib.sha256(image).hexdigest()
    chunks = [image[i : i + 4096] for i in range(0, len(image), 4096)]
    with pytest.raises(HubRejectedError, match="does not match its sha256"):
        client.put_chunk(sha, 0, chunks[0], "0" * 64)
    client.put_chunk(sha, 0, chunks[0], hashlib.sha256(chunks[0]).hexdigest())
    assert client.image_status(sha) == {"complete": False, "chunks": [0]}  # resume from here
    with pytest.raises(HubRejectedError, match="not received"):
        client.complete_image(sha, len(image), 3)
    for index in (1, 2):
        client.put_chunk(sha, index, chunks[index], hashlib.sha256(chunks[index]).hexdigest())
    assert client.complete_image(sha, len(image), 3) == {"complete": True}
    assert client.image_status(sha) == {"complete": True, "chunks": []}
    stored = hub.data_dir / "images" / device_id / sha[:2] / sha
    assert stored.read_bytes() == image
