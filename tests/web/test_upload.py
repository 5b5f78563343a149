"""``POST /api/upload``: with Flask's test client, and against real servers on localhost
(Werkzeug's, and waitress, which ``appliance serve`` runs)."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time

import pytest
from helpers import FUNDUS_DIR, PDF, count_rows, free_port
from waitress import create_server
from werkzeug.datastructures import FileStorage
from werkzeug.serving import make_server
from werkzeug.test import encode_multipart

from appliance.ingest.sniff import NOT_AN_IMAGE
from appliance.store.images import list_quarantine
from appliance.web import create_app
from appliance.web.auth import ensure_api_token

JPEG = (FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()
OTHER_JPEG = (FUNDUS_DIR / "hrf_07_h.jpg").read_bytes()


@pytest.fixture
def make_app(config):
    apps = []

    def make(**overrides):
        app = create_app(config.with_overrides(**overrides))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["appliance_store"].close()


@pytest.fixture
def client(make_app):
    return make_app().test_client()


@pytest.fixture
def auth(config) -> dict[str, str]:
    return {"Authorization": f"Bearer {ensure_api_token(config.data_dir)}"}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]


def assert_nothing_stored(store) -> None:
    assert count_rows(store, "images") == 0
    assert count_rows(store, "jobs") == 0
    assert count_rows(store, "quarantine") == 0
    assert list(store.images_dir.rglob("*.*")) == []
    assert list(store.tmp_dir.iterdir()) == []  # no half-received upload left behind


# -- test client -----------------------------------------------------------------------


def test_a_multipart_upload_stores_the_image_and_queues_its_job(client, auth, store):
    response = client.post(
        "/api/upload", data={"file": (io.BytesIO(JPEG), "left eye.jpg")}, headers=auth
    )

    assert response.status_code == 201
    [result] = response.get_json()["results"]
    assert result["status"] == "stored" and result["name"] == "left eye.jpg"
    row = store.conn().execute("SELECT * FROM images WHERE id=?", (result["image_id"],)).fetchone()
    assert (row["source"], row["original_name"], row["file_format"], row["size_bytes"]) == (
        "upload",
        "left eye.jpg",
        "jpeg",
        len(JPEG),
    )
    assert (store.data_dir / row["stored_path"]).read_bytes() == JPEG
    job = (
        store.conn()
        .execute("SELECT kind, state FROM jobs WHERE image_id=?", (result["image_id"],))
        .fetchone()
    )
    assert tuple(job) == ("screen", "queued")
    assert list(store.tmp_dir.iterdir()) == []


def test_the_same_image_again_is_a_duplicate(client, auth, store):
    first = client.post("/api/upload", data={"file": (io.BytesIO(JPEG), "a.jpg")}, headers=auth)
    again = client.post("/api/upload", data={"file": (io.BytesIO(JPEG), "b.jpg")}, headers=auth)

    assert (first.status_code, again.status_code) == (201, 200)
    [result] = again.get_json()["results"]
    assert result["status"] == "duplicate"
    assert result["image_id"] == first.get_json()["results"][0]["image_id"]
    assert (count_rows(store, "images"), count_rows(store, "jobs")) == (1, 1)


def test_several_files_in_one_request(client, auth, store):
    response = client.post(
        "/api/upload",
        headers=auth,
        data={
            "file": [
                (io.BytesIO(JPEG), "a.jpg"),
                (io.BytesIO(OTHER_JPEG), "b.jpg"),
                (io.BytesIO(PDF), "c.pdf"),
            ]
        },
    )

    assert response.status_code == 201
    statuses = [(r["name"], r["status"]) for r in response.get_json()["results"]]
    assert statuses == [("a.jpg", "stored"), ("b.jpg", "stored"), ("c.pdf", "quarantined")]
    assert count_rows(store, "images") == 2


@pytest.mark.parametrize(
    "content_type",
    [
        "image/jpeg",
        "application/octet-stream",
        "application/x-www-form-urlencoded",  # what `curl --data-binary @photo.jpg` sends
    ],
)
def test_a_raw_body_takes_its_name_from_x_filename(client, auth, store, content_type):
    response = client.post(
        "/api/upload",
        data=JPEG,
        headers={**auth, "Content-Type": content_type, "X-Filename": "../../camera/IMG_0001.JPG"},
    )

    assert response.status_code == 201
    [result] = response.get_json()["results"]
    assert (result["status"], result["name"]) == ("stored", "IMG_0001.JPG")
    row = store.conn().execute("SELECT original_name, size_bytes FROM images").fetchone()
    assert tuple(row) == ("IMG_0001.JPG", len(JPEG))


def test_a_pdf_is_quarantined_with_its_reason(client, auth, store):
    response = client.post(
        "/api/upload", data={"file": (io.BytesIO(PDF), "referral.pdf")}, headers=auth
    )

    assert response.status_code == 200
    [result] = response.get_json()["results"]
    assert result["status"] == "quarantined"
    assert result["reason"] == NOT_AN_IMAGE["pdf"]
    [row] = list_quarantine(store)
    assert (row["id"], row["source"], row["original_name"]) == (
        result["quarantine_id"],
        "upload",
        "referral.pdf",
    )
    assert (store.data_dir / row["stored_path"]).read_bytes() == PDF
    assert count_rows(store, "images") == 0


def test_an_empty_file_is_quarantined_as_empty(client, auth, store):
    response = client.post(
        "/api/upload", data={"file": (io.BytesIO(b""), "scan.jpg")}, headers=auth
    )

    assert response.status_code == 200
    assert response.get_json()["results"][0]["reason"] == NOT_AN_IMAGE["empty"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # no body at all
        {"data": b""},
        {"data": {"note": "no file here"}, "content_type": "multipart/form-data"},
        {"data": {"image": (io.BytesIO(JPEG), "a.jpg")}},  # wrong field name
        {"data": {"file": (io.BytesIO(b""), "")}},  # a browser form with no file chosen
    ],
    ids=["nothing", "empty-body", "form-without-file", "wrong-field", "no-file-chosen"],
)
def test_a_request_without_a_file_is_400(client, auth, store, kwargs):
    error = error_of(client.post("/api/upload", headers=auth, **kwargs), 400)

    assert error["code"] == "no_file"
    assert_nothing_stored(store)


def test_a_body_over_the_limit_is_413(make_app, auth, store):
    client = make_app(upload_max_mb=1).test_client()

    raw = client.post("/api/upload", data=b"\xff\xd8\xff" + b"\0" * (2 << 20), headers=auth)
    error = error_of(raw, 413)
    assert "1 MB" in error["message"]

    # Just over the limit, within the allowance Flask leaves for multipart framing: the
    # same answer, not a 200 with a "refused" entry. (Encoded here: the test client
    # spools a body over 500 KB to a temporary file it never closes.)
    just_over = io.BytesIO(b"\xff\xd8\xff" + b"\0" * ((1 << 20) + 1000))
    boundary, body = encode_multipart({"file": FileStorage(just_over, "big.jpg")})
    response = client.post(
        "/api/upload",
        data=body,
        headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert error_of(response, 413) == error

    assert_nothing_stored(store)


def test_a_full_disk_is_507_and_stores_nothing(make_app, auth, store):
    client = make_app(min_free_mb=10**9).test_client()

    for kwargs in (
        {"data": {"file": (io.BytesIO(JPEG), "a.jpg")}},
        {"data": JPEG, "headers": {"X-Filename": "a.jpg"}},
    ):
        headers = {**auth, **kwargs.pop("headers", {})}
        error = error_of(client.post("/api/upload", headers=headers, **kwargs), 507)
        assert error["code"] == "storage_full"

    assert_nothing_stored(store)


# -- real servers ----------------------------------------------------------------------


@pytest.fixture(params=["werkzeug", "waitress"])
def server(request, make_app):
    """The app on 127.0.0.1 with a 1 MB limit, served by a real HTTP server."""
    app = make_app(upload_max_mb=1)
    port = free_port()
    if request.param == "werkzeug":
        httpd = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield request.param, port
        httpd.shutdown()
        httpd.server_close()
    else:
        httpd = create_server(app, host="127.0.0.1", port=port, threads=2)
        stopping = threading.Event()

        def run() -> None:
            try:
                httpd.run()
            except OSError:  # close() below pulls the socket out from under select()
                if not stopping.is_set():
                    raise

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield request.param, port
        stopping.set()
        httpd.close()
    thread.join(timeout=10)


def test_upload_through_a_real_server(server, auth, store):
    _, port = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/api/upload",
            body=JPEG,
            headers={**auth, "Content-Type": "image/jpeg", "X-Filename": "a.jpg"},
        )
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()

    assert response.status == 201
    assert body["results"][0]["status"] == "stored"
    assert count_rows(store, "images") == 1


def test_a_huge_claimed_body_is_refused_at_once(server, auth, store):
    """A client that claims 2 GB and sends a few bytes gets 413 at once: the server does
    not wait for (or read) the rest."""
    name, port = server
    head = (
        "POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {auth['Authorization']}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 2147483648\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\xff\xd8\xff" + b"\0" * 4096)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    elapsed = time.monotonic() - started

    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert elapsed < 5
    if name == "werkzeug":  # waitress refuses before the app runs, in its own words
        assert b"application/json" in reply.split(b"\r\n\r\n")[0]
    assert_nothing_stored(store)
