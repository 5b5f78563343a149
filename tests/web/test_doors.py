"""The box's web doors under odd input, on a real `appliance serve`: every error in the one
JSON shape (waitress's own 413 included), ids past 64 bits, upload file names with
folders in them, and what /healthz tells a stranger."""

from __future__ import annotations

import http.client
import json
import sqlite3
import uuid

import pytest
from helpers import FUNDUS_DIR
from web.boxkit import PIN, Browser, serve_box

JPEG = (FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()


@pytest.fixture
def box(tmp_path):
    served = serve_box(tmp_path / "data")
    served.token = (served.data_dir / "secrets" / "api_token").read_text().strip()
    yield served
    served.close()


def assert_error_shape(status: int, response, body: bytes) -> dict:
    content_type = response.getheader("Content-Type", "")
    assert content_type.startswith("application/json"), (status, body[:200])
    answer = json.loads(body)
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
    return answer["error"]


def test_a_body_over_the_limit_is_refused_by_waitress_in_the_json_shape(box):
    conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/upload")
        conn.putheader("Authorization", f"Bearer {box.token}")
        conn.putheader("Content-Length", str(2 * 1024**4))  # 2 TB: waitress answers first
        conn.endheaders()
        response = conn.getresponse()
        status, body = response.status, response.read()
    finally:
        conn.close()
    assert status == 413
    assert assert_error_shape(status, response, body)["code"] == "request_entity_too_large"


def test_an_id_past_64_bits_is_not_found_not_a_crash(box):
    """Such ids reached SQLite and came back as an OverflowError: a 500."""
    nurse = Browser(box)
    assert nurse.login("nurse", PIN)[0] == 302
    jar = "; ".join(f"{k}={v}" for k, v in nurse.cookies.items())
    for path in ("/study/{huge}", "/study/{huge}/preview", "/study/{huge}/slip"):
        url = path.format(huge="9" * 30)
        assert nurse.request("GET", url)[0] == 404, url
        conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=30)
        try:
            conn.request("GET", url, headers={"Accept": "application/json", "Cookie": jar})
            response = conn.getresponse()
            status, body = response.status, response.read()
        finally:
            conn.close()
        assert status == 404 and assert_error_shape(status, response, body)["code"] == "not_found"


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    quoted = name.replace("\\", "\\\\")  # a quoted-string: a backslash travels escaped
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_file_names_are_cut_to_a_base_name_like_the_other_doors(box):
    cases = [
        ("../../../../etc/cron.d/eye.jpg", "eye.jpg"),
        ("C:\\fakepath\\Clinic\\left.jpg", "left.jpg"),
        ("..", "upload"),
    ]
    photos = sorted(FUNDUS_DIR.glob("*.jpg"))[: len(cases)]  # a different photo each time
    for (sent, kept), photo in zip(cases, photos, strict=True):
        body, content_type = multipart(sent, photo.read_bytes())
        conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=60)
        try:
            conn.request(
                "POST",
                "/api/upload",
                body=body,
                headers={"Authorization": f"Bearer {box.token}", "Content-Type": content_type},
            )
            response = conn.getresponse()
            status, answer = response.status, json.loads(response.read())
        finally:
            conn.close()
        assert status == 201 and answer["results"][0]["name"] == kept, (sent, answer)
    db = sqlite3.connect(box.data_dir / "appliance.db")
    try:
        names = [r[0] for r in db.execute("SELECT original_name FROM images ORDER BY id")]
    finally:
        db.close()
    assert names == [kept for _, kept in cases]


def test_healthz_tells_a_stranger_only_whether_the_box_is_up(box):
    stranger = Browser(box, "127.0.0.2")
    status, _, text = stranger.request("GET", "/healthz")
    public = json.loads(text)
    nurse = Browser(box)
    assert nurse.login("nurse", PIN)[0] == 302
    full_status, _, full_text = nurse.request("GET", "/healthz")
    full = json.loads(full_text)
    # Up or degraded (a model bundle missing here, say), the stranger hears only that.
    assert status == full_status and public["status"] == full["status"]
    assert public == {
        "status": full["status"],
        "decision_support": "decision support, not a diagnosis",
        "database": "ok",
        "disk": "ok",
    }
    assert str(box.data_dir) not in text and "/" not in text
    assert {"queue", "components", "engines", "models", "disk_free_mb"} <= set(full)


def test_a_raw_upload_name_is_cut_the_same_way(box):
    conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=60)
    try:
        conn.request(
            "POST",
            "/api/upload",
            body=JPEG,
            headers={
                "Authorization": f"Bearer {box.token}",
                "Content-Type": "application/octet-stream",
                "X-Filename": "..\\..\\Windows\\eye.jpg",
            },
        )
        response = conn.getresponse()
        status, answer = response.status, json.loads(response.read())
    finally:
        conn.close()
    assert status == 201 and answer["results"][0]["name"] == "eye.jpg"
