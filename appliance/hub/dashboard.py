"""The hub's dashboard (login required): sites, last seen, results per week, positivity
and refusal rates, reviews pending, model versions in the field; and the programme view
(``programme.py``): rates week by week per site, thresholds in force, calibration status
and drift alarms."""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from appliance.hub import get_db, programme, records

bp = Blueprint("dashboard", __name__)


IDLE_SECONDS = 30 * 60
MAX_FAILURES = 5
LOCK_SECONDS = 300
_failures_lock = threading.Lock()


def _failures() -> dict[tuple[str, str], list[float]]:
    """Failed logins per (user name, address), kept by this app: a password guesser gets
    five tries, then waits."""
    return current_app.extensions.setdefault("hub_login_failures", {})


def _locked(key: tuple[str, str]) -> bool:
    now = time.monotonic()
    with _failures_lock:
        failures = _failures()
        recent = [t for t in failures.get(key, []) if now - t < LOCK_SECONDS]
        failures[key] = recent
        return len(recent) >= MAX_FAILURES


def _failed(key: tuple[str, str]) -> None:
    with _failures_lock:
        _failures().setdefault(key, []).append(time.monotonic())


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not session.get("admin") or time.time() - session.get("seen", 0) > IDLE_SECONDS:
            session.clear()
            return redirect(url_for("dashboard.login", next=request.path))
        session["seen"] = time.time()
        return view(*args, **kwargs)

    return wrapped


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        if not hmac.compare_digest(request.form.get("csrf_token", ""), csrf_token()):
            abort(400)
        username = request.form.get("username", "")
        key = (username.lower(), request.remote_addr or "")
        if _locked(key):
            error = "Too many wrong passwords: try again in 5 minutes."
            return render_template("hub/login.html", error=error, csrf=csrf_token()), 429
        if records.check_admin(get_db(), username, request.form.get("password", "")):
            session.clear()
            session["admin"] = username
            session["seen"] = time.time()
            return redirect(url_for("dashboard.index"))
        _failed(key)
        error = "Wrong user name or password."
    return render_template("hub/login.html", error=error, csrf=csrf_token())


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("dashboard.login"))


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def summary() -> dict[str, Any]:
    conn = get_db()
    sites = conn.execute(
        "SELECT d.site, COUNT(*) AS devices, MAX(d.last_seen_at) AS last_seen,"
        " SUM(CASE WHEN d.revoked_at IS NULL THEN 0 ELSE 1 END) AS revoked"
        " FROM devices d GROUP BY d.site ORDER BY d.site"
    )
    per_site = {
        row["site"]: row
        for row in conn.execute(
            "SELECT d.site,"
            " SUM(CASE WHEN e.kind = 'result' THEN 1 ELSE 0 END) AS results,"
            " SUM(CASE WHEN e.route = 'refused' THEN 1 ELSE 0 END) AS refused,"
            " SUM(CASE WHEN e.triage IN ('urgent', 'review') THEN 1 ELSE 0 END) AS positive,"
            " SUM(CASE WHEN e.kind = 'review' THEN 1 ELSE 0 END) AS reviews"
            " FROM entries e JOIN devices d ON d.id = e.device_id GROUP BY d.site"
        )
    }
    pending = {
        row["site"]: row["n"]
        for row in conn.execute(
            "SELECT d.site, COUNT(*) AS n FROM entries r JOIN devices d ON d.id = r.device_id"
            " WHERE r.kind = 'result' AND r.triage IN ('urgent', 'review') AND NOT EXISTS"
            " (SELECT 1 FROM entries v WHERE v.device_id = r.device_id AND v.kind = 'review'"
            " AND v.image_sha256 = r.image_sha256) GROUP BY d.site"
        )
    }
    for site in sites:
        counts = per_site.get(site["site"]) or {}
        results = int(counts.get("results") or 0)
        refused = int(counts.get("refused") or 0)
        screened = results - refused
        site.update(
            results=results,
            reviews=int(counts.get("reviews") or 0),
            refusal_rate=_rate(refused, results),
            positivity_rate=_rate(int(counts.get("positive") or 0), screened),
            reviews_pending=pending.get(site["site"], 0),
        )
    weeks = conn.execute(
        "SELECT week, COUNT(*) AS n FROM entries WHERE kind = 'result' AND week IS NOT NULL"
        " GROUP BY week ORDER BY week DESC LIMIT 12"
    )
    models = conn.execute(
        "SELECT e.model_name, e.model_version, COUNT(DISTINCT e.device_id) AS devices,"
        " COUNT(*) AS results, MAX(e.received_at) AS last_used FROM entries e"
        " WHERE e.kind = 'result' AND e.model_name IS NOT NULL"
        " GROUP BY e.model_name, e.model_version ORDER BY e.model_name, e.model_version"
    )
    return {
        "sites": sites,
        "weeks": weeks,
        "models": models,
        "devices": records.list_devices(conn),
        "programme": programme.programme(conn),
    }


@bp.get("/")
@login_required
def index():
    return render_template("hub/dashboard.html", csrf=csrf_token(), **summary())
