"""The web app's skeleton: ``/healthz``, the device token, and one JSON error shape."""

from __future__ import annotations

import io
import stat

import pytest
from helpers import FUNDUS_DIR

from appliance.web import create_app
from appliance.web.auth import ensure_api_token, token_path

JPEG = (FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()


def make_app(config, **overrides):
    app = create_app(config.with_overrides(**overrides) if overrides else config)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(config):
    app = make_app(config)
    yield app
    app.extensions["appliance_store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(config) -> dict[str, str]:
    return {"Authorization": f"Bearer {ensure_api_token(config.data_dir)}"}


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# -- /healthz --------------------------------------------------------------------------


def test_healthz_reports_status_queue_and_disk_to_the_device_token(client, auth):
    response = client.get("/healthz", headers=auth)

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["queue"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert body["disk"] == "ok"
    assert body["disk_free_mb"] > 0
    assert body["database"] == "ok"


def test_healthz_without_a_login_says_only_whether_the_box_is_up(config, client):
    """Public: up or not, in words that name no folder, file or part of the box."""
    config.data_dir.joinpath("engines").mkdir(parents=True, exist_ok=True)
    body = client.get("/healthz").get_json()
    assert body == {
        "status": "ok",
        "decision_support": "decision support, not a diagnosis",
        "database": "ok",
        "disk": "ok",
    }
    assert str(config.data_dir) not in client.get("/healthz").text


def test_healthz_counts_queued_jobs(client, auth):
    response = client.post("/api/upload", data={"file": (io.BytesIO(JPEG), "a.jpg")}, headers=auth)
    assert response.status_code == 201

    assert client.get("/healthz", headers=auth).get_json()["queue"]["queued"] == 1


def test_healthz_reports_a_full_disk_as_degraded(config, auth):
    app = make_app(config, min_free_mb=10**9)
    try:
        public = app.test_client().get("/healthz")
        response = app.test_client().get("/healthz", headers=auth)
    finally:
        app.extensions["appliance_store"].close()

    assert public.status_code == 503 and public.get_json()["disk"] == "full"
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["disk"].startswith("full")


# -- the device token ------------------------------------------------------------------


def test_the_token_file_is_private_and_kept_across_restarts(config, app):
    path = token_path(config.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text().strip()
    assert len(token) >= 32

    again = make_app(config)
    try:
        assert again.extensions["appliance_api_token"] == token
        assert path.read_text().strip() == token
    finally:
        again.extensions["appliance_store"].close()


def test_an_empty_token_file_is_replaced_not_accepted(config):
    """A power cut between creating the token file and writing it leaves it empty; an
    empty token must never let an empty ``Bearer`` header in."""
    path = token_path(config.data_dir)
    path.parent.mkdir(parents=True)
    path.write_text("")

    app = make_app(config)
    try:
        client = app.test_client()
        token = path.read_text().strip()
        assert token and app.extensions["appliance_api_token"] == token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert client.post("/api/upload", headers={"Authorization": "Bearer "}).status_code == 401
        assert (
            client.post("/api/upload", headers={"Authorization": f"bearer {token}"}).status_code
            == 400
        )  # let in (scheme is case-insensitive), no file
    finally:
        app.extensions["appliance_store"].close()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        "Basic dXNlcjpwYXNz",
        "Bearer caf\u00e9",  # not ASCII: must be a 401, not a crash
    ],
)
def test_every_route_but_healthz_and_login_needs_a_login_or_the_token(app, client, header):
    """API routes answer 401 in the JSON shape; pages send a person to the login page
    (or to first-run setup while the box has no users). A wrong token is a 401 anywhere."""
    headers = {} if header is None else {"Authorization": header}
    public = {"health.healthz", "static", "auth.login", "auth.setup"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in public:
            continue
        url = rule.rule.replace("<int:", "1").replace("<", "").replace(">", "")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(
                url,
                method=method,
                headers=headers,
                data=io.BytesIO(JPEG) if method == "POST" else None,
            )
            if header or url.startswith("/api/"):  # an empty header is no header
                error = assert_error_shape(response, 401)
                assert error["code"] == "unauthorized"
            else:
                assert response.status_code == 302, (method, url)
                assert response.location in ("/setup", "/login")
            checked += 1
    assert checked >= 20
    # Unknown addresses are not revealed either.
    assert_error_shape(client.get("/api/studies", headers=headers), 401)
    unknown = client.get("/no/such/page", headers=headers)
    assert unknown.status_code == (401 if header else 302)


def test_responses_carry_the_security_headers(client):
    headers = client.get("/healthz").headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy  # no third-party origin


# -- one error shape -------------------------------------------------------------------


def test_every_api_error_has_the_same_json_shape(config, auth):
    """400, 401, 404, 413 and 507 all answer {"error": {"code", "message"}} and nothing
    else, so the page and any client handle errors in one place."""
    small = make_app(config, upload_max_mb=1)
    full = make_app(config, min_free_mb=10**9)
    try:
        client = small.test_client()
        errors = {
            400: client.post("/api/upload", headers=auth),
            401: client.post("/api/upload", data=JPEG),
            404: client.get("/api/no/such/thing", headers=auth),
            405: client.get("/api/upload", headers=auth),
            413: client.post("/api/upload", data=b"\0" * (2 << 20), headers=auth),
            507: full.test_client().post(
                "/api/upload", data=JPEG, headers={**auth, "X-Filename": "a.jpg"}
            ),
        }
        codes = {status: assert_error_shape(r, status)["code"] for status, r in errors.items()}
    finally:
        small.extensions["appliance_store"].close()
        full.extensions["appliance_store"].close()
    assert codes == {
        400: "no_file",
        401: "unauthorized",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_entity_too_large",
        507: "storage_full",
    }
