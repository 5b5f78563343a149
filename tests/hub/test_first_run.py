"""The hub's web first run (the first admin, once) and its admin pages: users and
enrolment codes, behind the login, CSRF on every form, each change audited."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.hub import create_app, records

PASSWORD = "correct horse battery"


@pytest.fixture
def app(tmp_path, database_url):
    return create_app(tmp_path / "hub", database_url)


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def setup_code(app) -> str:
    """What the technician reads on the hub's server (its log says the same)."""
    return (Path(app.config["HUB_DATA_DIR"]) / "secrets" / "first_run_code").read_text()


def first_admin(client, **form):
    page = client.get("/first-run").get_data(as_text=True)
    data = {
        "code": setup_code(client.application),
        "username": "amina",
        "password": PASSWORD,
        "password2": PASSWORD,
        "csrf_token": csrf(page),
    }
    return client.post("/first-run", data={**data, **form})


def actions(app) -> list[tuple[str, str, str]]:
    conn = app.extensions["hub_database"].connect()
    try:
        rows = conn.execute("SELECT actor, action, detail FROM admin_actions ORDER BY at")
    finally:
        conn.close()
    return [(r["actor"], r["action"], r["detail"]) for r in rows]


def test_the_first_visit_creates_the_first_admin_once(app):
    client = app.test_client()
    for path in ("/", "/login"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].endswith("/first-run")
    page = client.get("/first-run").get_data(as_text=True)
    assert "Welcome to the screening hub" in page and 'href="/static/hub-admin.css"' in page
    # refused: no CSRF token, a short password, two passwords that differ, a bad name
    assert client.post("/first-run", data={"username": "amina"}).status_code == 400
    assert "at least 10 characters" in first_admin(client, password="short", password2="short").text
    assert "not the same" in first_admin(client, password2="another password").text
    assert "1 to 64 letters" in first_admin(client, username="amina banda").text
    made = first_admin(client)
    assert made.status_code == 302 and "/admin" in made.headers["Location"]
    assert "You are signed in" in client.get(made.headers["Location"]).text  # signed in
    assert client.get("/").status_code == 200
    assert actions(app) == [("first run", "admin.added", "amina")]
    assert not (Path(app.config["HUB_DATA_DIR"]) / "secrets" / "first_run_code").exists()
    # once an admin exists the first run is gone, for anyone, and creates nothing
    stranger = app.test_client()
    assert stranger.get("/first-run").headers["Location"].endswith("/login")
    login = stranger.get("/login")
    assert login.status_code == 200 and "Sign in to the screening hub" in login.text
    again = stranger.post(
        "/first-run",
        data={
            "username": "mallory",
            "password": PASSWORD,
            "password2": PASSWORD,
            "csrf_token": csrf(login.text),
        },
    )
    assert again.status_code == 302 and again.headers["Location"].endswith("/login")
    conn = app.extensions["hub_database"].connect()
    try:
        assert [r["username"] for r in conn.execute("SELECT username FROM admins")] == ["amina"]
        assert records.check_admin(conn, "amina", PASSWORD)
    finally:
        conn.close()


def test_only_someone_at_the_hubs_server_can_make_the_first_admin(app, caplog):
    """A hub is on a network: whoever finds a new one first must not become its admin.
    The set-up code is in the hub's log and its data folder, typed as read out."""
    client = app.test_client()
    with caplog.at_level("WARNING"):
        client.get("/first-run")
    code = setup_code(app)
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    assert code in caplog.text and "first_run_code" in caplog.text
    for wrong in ("", "AAAA-BBBB-CCCC", code[:-1]):
        refused = first_admin(client, code=wrong)
        assert refused.status_code == 400 and "not the set-up code" in refused.text
    assert actions(app) == []
    made = first_admin(client, code=code.lower().replace("-", " "))
    assert made.status_code == 302 and actions(app) == [("first run", "admin.added", "amina")]
    assert not (Path(app.config["HUB_DATA_DIR"]) / "secrets" / "first_run_code").exists()


def test_a_hub_with_an_admin_from_the_command_line_has_no_first_run(app):
    conn = app.extensions["hub_database"].connect()
    records.set_admin(conn, "cli-admin", PASSWORD)
    conn.close()
    client = app.test_client()
    assert client.get("/").headers["Location"].endswith("/login")
    assert client.get("/first-run").headers["Location"].endswith("/login")


def test_admins_add_users_and_issue_enrolment_codes(app):
    client = app.test_client()
    first_admin(client)
    page = client.get("/admin").get_data(as_text=True)
    assert "appliance hub publish" in page and "signing key" in page  # said for a manager
    token = csrf(page)
    user = {"username": "joao", "password": PASSWORD, "password2": PASSWORD}
    assert client.post("/admin/users", data={**user, "csrf_token": "forged"}).status_code == 400
    added = client.post("/admin/users", data={**user, "csrf_token": token})
    assert added.status_code == 200 and "joao can now sign in." in added.text
    twice = client.post(
        "/admin/users",
        data={**user, "password": "x" * 12, "password2": "x" * 12, "csrf_token": token},
    )
    assert twice.status_code == 400 and "joao already exists" in twice.text
    conn = app.extensions["hub_database"].connect()
    try:
        assert records.check_admin(conn, "joao", PASSWORD)  # the first password stands
    finally:
        conn.close()
    # an enrolment code: shown once, works once, for its site
    form = {"site": "  Clinic   North ", "days": "7", "csrf_token": token}
    assert client.post("/admin/enrol-codes", data={**form, "csrf_token": ""}).status_code == 400
    assert client.post("/admin/enrol-codes", data={**form, "days": "365"}).status_code == 400
    assert client.post("/admin/enrol-codes", data={**form, "site": " "}).status_code == 400
    issued = client.post("/admin/enrol-codes", data=form).get_data(as_text=True)
    code = re.search(r'<code class="enrol-code">([A-Z0-9-]+)</code>', issued).group(1)
    assert "Code for Clinic North, valid 7 days:" in issued
    conn = app.extensions["hub_database"].connect()
    try:
        device = records.enrol_device(conn, code, "box-1", "key")
        assert device["site"] == "Clinic North"
    finally:
        conn.close()
    listed = client.get("/admin").get_data(as_text=True)
    assert "used by box-1" in listed and code not in listed  # never shown again
    assert actions(app) == [
        ("first run", "admin.added", "amina"),
        ("amina", "admin.added", "joao"),
        ("amina", "enrol_code.issued", "site=Clinic North days=7"),
    ]
    # the new user signs in; the pages need a login
    other = app.test_client()
    login = other.get("/login").get_data(as_text=True)
    other.post("/login", data={"username": "joao", "password": PASSWORD, "csrf_token": csrf(login)})
    assert other.get("/admin").status_code == 200
    anonymous = app.test_client()
    for path in ("/admin",):
        assert anonymous.get(path).headers["Location"].endswith("/login")
    assert anonymous.post("/admin/users", data=user).status_code == 302
    assert anonymous.post("/admin/enrol-codes", data=form).status_code == 302
