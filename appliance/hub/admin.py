"""The hub's first run and admin pages (issue 29), as the box's ``/setup`` and Users.

- **First run**: while the hub has no admin, the dashboard and its sign-in page lead to
  ``/first-run``, which creates the first admin (password rules as ``hub create-admin``:
  ``records.set_admin``) and signs them in. Once an admin exists it is gone: the page
  sends to sign-in and a form posted to it creates nothing. Creating and checking
  happen in one transaction (on PostgreSQL under an advisory lock), so two browsers
  racing on a new hub make one admin, not two. A hub is reached over a network: the
  page also asks for a **set-up code** that only someone at the hub's server can read
  (its log, and ``DATA_DIR/secrets/first_run_code``), so whoever finds a new hub first
  cannot make themselves its admin; the code is deleted once the admin exists.
- **Admin pages** (``/admin``, login required): add a dashboard login, issue a box's
  enrolment code (shown once, stored hashed, as ``hub enrol-code``), see the codes
  issued lately. Every form carries the CSRF token; every change is written to
  ``admin_actions`` with who made it (never a password or a code).

Publishing a model and rolling it out stay on the command line (they need the
programme's signing key and a person at the hub's server); the page says so.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.security import generate_password_hash

from appliance.hub import get_db, records, schemas
from appliance.hub.dashboard import _fresh_session, check_csrf, csrf_token, login_required
from appliance.hub.db import Connection
from appliance.logins import sessions
from appliance.wire.secret_files import write_secret

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__)
USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 10  # records.set_admin's rule
MAX_PASSWORD = 200
MAX_SITE = 100
FIRST_RUN_LOCK = 74_180_319  # pg_advisory_xact_lock: one first run at a time
LEADS_TO_FIRST_RUN = ("dashboard.index", "dashboard.login")
CODES_SHOWN = 20


class AdminFormError(ValueError):
    """A form on the admin pages that cannot be taken as filled in (said to the admin)."""


def first_run_code_file() -> Path:
    return Path(current_app.config["HUB_DATA_DIR"]) / "secrets" / "first_run_code"


def first_run_code() -> str:
    """The set-up code for the first run, made the first time it is asked for: 12
    letters and digits, as 3 groups, readable over the phone."""
    path = first_run_code_file()
    if not path.exists():
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
        raw = "".join(secrets.choice(alphabet) for _ in range(12))
        write_secret(path, "-".join(raw[i : i + 4] for i in range(0, 12, 4)).encode())
    return path.read_text().strip()


def announce_first_run_code() -> None:
    """Say the code where the technician at the hub's server will look (its log)."""
    log.warning("No administrator yet: open /first-run on this hub and type the set-up"
                " code %s (also in %s)", first_run_code(), first_run_code_file())


def _code_matches(typed: str) -> bool:
    wanted = first_run_code().replace("-", "")
    given = re.sub(r"[\s-]", "", typed or "").upper()
    return hmac.compare_digest(given.encode(), wanted.encode())


def has_admin(conn: Connection) -> bool:
    """Whether the hub has an admin (remembered once true: admins are never removed
    from the dashboard)."""
    if current_app.extensions.get("hub_has_admin"):
        return True
    found = conn.one("SELECT 1 AS x FROM admins LIMIT 1") is not None
    if found:
        current_app.extensions["hub_has_admin"] = True
    return found


@bp.before_app_request
def first_run_while_no_admin():
    """A new hub's dashboard or sign-in page leads to the first run."""
    if request.endpoint in LEADS_TO_FIRST_RUN and not has_admin(get_db()):
        return redirect(url_for("admin.first_run"))
    return None


def _checked_login(form: Any) -> tuple[str, str]:
    username = form.get("username", "").strip()
    password = form.get("password", "")
    if not USERNAME.match(username):
        raise AdminFormError(_("A user name is 1 to 64 letters, digits or . _ @ - (no spaces)."))
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AdminFormError(_("The password needs at least 10 characters."))
    if password != form.get("password2", ""):
        raise AdminFormError(_("The two passwords are not the same."))
    return username, password


def _insert_admin(conn: Connection, username: str, password: str, by: str) -> None:
    """A new login, audited (call inside a transaction); AdminFormError if it exists."""
    if conn.one("SELECT 1 AS x FROM admins WHERE username = ?", (username,)) is not None:
        raise AdminFormError(
            _(
                "%(name)s already exists. To set a new password, use the command line.",
                name=username,
            )
        )
    conn.execute(
        "INSERT INTO admins (username, password_hash, created_at, created_by) VALUES (?, ?, ?, ?)",
        (username, generate_password_hash(password), records.now(), by),
    )
    audit(conn, by, "admin.added", username)


def audit(conn: Connection, actor: str, action: str, detail: str) -> None:
    conn.execute(
        "INSERT INTO admin_actions (at, actor, action, device_id, entry_id, detail)"
        " VALUES (?, ?, ?, NULL, NULL, ?)",
        (records.now(), actor, action, detail[:500]),
    )


@bp.route("/first-run", methods=["GET", "POST"])
def first_run():
    conn = get_db()
    if has_admin(conn):
        return redirect(url_for("dashboard.login"))
    error = None
    if request.method == "POST":
        check_csrf()
        try:
            if not _code_matches(request.form.get("code", "")):
                raise AdminFormError(_("That is not the set-up code. It is in the hub's log"
                                       " and in the file secrets/first_run_code of its data"
                                       " folder, on the hub's server."))
            username, password = _checked_login(request.form)
            with conn.transaction():
                if conn.backend == "postgresql":
                    conn.execute("SELECT pg_advisory_xact_lock(?)", (FIRST_RUN_LOCK,))
                if conn.one("SELECT 1 AS x FROM admins LIMIT 1") is not None:
                    return redirect(url_for("dashboard.login"))  # someone was quicker
                _insert_admin(conn, username, password, "first run")
                token = sessions.create(conn, username, time.time())
        except AdminFormError as exc:
            error = str(exc)
        else:
            first_run_code_file().unlink(missing_ok=True)  # done with: never valid again
            current_app.extensions["hub_has_admin"] = True
            _fresh_session()
            session["sid"] = token
            return redirect(url_for("admin.index", welcome=1))
    announce_first_run_code()
    page = render_template("hub/first_run.html", csrf=csrf_token(), error=error)
    return page, (400 if error else 200)


# -- the admin pages ------------------------------------------------------------------
def _page(**extra: Any):
    conn = get_db()
    admins = conn.execute(
        "SELECT username, created_at, created_by FROM admins ORDER BY created_at, username"
    )
    codes = conn.execute(
        "SELECT c.site, c.created_at, c.expires_at, c.used_at, c.created_by, d.name AS box"
        " FROM enrol_codes c LEFT JOIN devices d ON d.id = c.device_id"
        " ORDER BY c.created_at DESC LIMIT ?",
        (CODES_SHOWN,),
    )
    now = records.now()
    for code in codes:
        code["expired"] = not code["used_at"] and code["expires_at"] < now[:19]
    sites = [r["site"] for r in conn.execute("SELECT DISTINCT site FROM devices ORDER BY site")]
    return render_template(
        "hub/admin.html",
        csrf=csrf_token(),
        admins=admins,
        codes=codes,
        sites=sites,
        welcome=request.args.get("welcome") == "1",
        **extra,
    )


@bp.get("/admin")
@login_required
def index():
    return _page()


@bp.post("/admin/users")
@login_required
def add_user():
    check_csrf()
    conn = get_db()
    try:
        username, password = _checked_login(request.form)
        with conn.transaction():
            _insert_admin(conn, username, password, g.admin)
    except AdminFormError as exc:
        return _page(user_error=str(exc)), 400
    return _page(saved=_("%(name)s can now sign in.", name=username))


CODE_DAYS = (1, 3, 7, 14, 30)


@bp.post("/admin/enrol-codes")
@login_required
def issue_code():
    check_csrf()
    site = " ".join(request.form.get("site", "").split())
    days = request.form.get("days", "7")
    if not site or len(site) > MAX_SITE or schemas.FORBIDDEN.search(site):
        return _page(code_error=_("Name the site (up to 100 characters).")), 400
    if not days.isdigit() or int(days) not in CODE_DAYS:
        return _page(code_error=_("Choose how long the code works.")), 400
    conn = get_db()
    code = records.create_enrolment_code(conn, site, int(days))
    with conn.transaction():
        conn.execute(
            "UPDATE enrol_codes SET created_by = ? WHERE code_hash = ?",
            (g.admin, records.sha256_text(records.normalise_code(code))),
        )
        audit(conn, g.admin, "enrol_code.issued", f"site={site} days={days}")
    return _page(new_code=code, new_code_site=site, new_code_days=int(days))
