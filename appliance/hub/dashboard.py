"""The hub's dashboard (login required): sites, last seen, results per week, positivity
and refusal rates, reviews pending, model versions in the field (each box's active and
shadow versions as it reports them, the published bundles and their rollouts); and the
programme view (``programme.py``): rates week by week per site, thresholds in force,
calibration status and drift alarms. Records a reader could not render are counted
per box, and each box's page of them (``/boxes/<id>/records``) lists them for the admin
to check again, quarantine or release (``bad_records.py``).

Logins work as on the box: a server-side session (``logins.sessions``; sign-out ends it,
a copied cookie is then refused) and failed sign-ins counted per client before the
password is checked (``logins.throttle``). The client is the real one behind a trusted
proxy (``proxy.py``). Every form, sign-out included, carries a CSRF token.
"""

from __future__ import annotations

import functools
import hmac
import math
import secrets
import time
from typing import Any

from flask import (
    Blueprint,
    abort,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext

from appliance.errors import LoginThrottledError
from appliance.hub import (
    bad_records,
    distribution,
    get_db,
    programme,
    readable,
    records,
    reference,
    tallies,
)
from appliance.hub.migrations import TALLY_COUNTERS
from appliance.logins import sessions, throttle
from appliance.wire.codes import finding_meaning

bp = Blueprint("dashboard", __name__)


IDLE_SECONDS = 30 * 60


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        token = session.get("sid")
        conn = get_db()
        now = time.time()
        found = sessions.find(conn, token, IDLE_SECONDS, now) if token else None
        if found is None:
            session.clear()
            return redirect(url_for("dashboard.login"))
        if sessions.needs_touch(found, now):
            with conn.transaction():
                sessions.touch(conn, token, now)
        g.admin = found["subject"]
        return view(*args, **kwargs)

    return wrapped


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check_csrf() -> None:
    given = request.form.get("csrf_token", "")
    if not hmac.compare_digest(given.encode(), csrf_token().encode()):
        abort(400)


def _sign_in(username: str, password: str) -> tuple[str | None, float]:
    """(session id, 0) on success, (None, 0) for a wrong name or password, or
    (None, seconds to wait) when this client may not try now (nothing checked)."""
    conn = get_db()
    counters = throttle.keys(username, request.remote_addr or "")
    try:
        with conn.transaction():
            throttle.reserve(conn, counters, time.time())
    except LoginThrottledError as exc:
        return None, exc.retry_after
    if not records.check_admin(conn, username, password):
        return None, 0.0
    now = time.time()
    with conn.transaction():
        throttle.succeeded(conn, counters)
        sessions.purge(conn, IDLE_SECONDS, now)
        token = sessions.create(conn, username, now)
    return token, 0.0


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("hub/login.html", error=None, csrf=csrf_token())
    check_csrf()
    token, wait = _sign_in(request.form.get("username", ""), request.form.get("password", ""))
    if token is not None:
        _fresh_session()
        session["sid"] = token
        return redirect(url_for("dashboard.index"))
    if wait:
        minutes = max(1, math.ceil(wait / 60))
        error = ngettext(
            "Too many wrong passwords: try again in %(num)s minute.",
            "Too many wrong passwords: try again in %(num)s minutes.",
            minutes,
        )
        page = render_template("hub/login.html", error=error, csrf=csrf_token())
        return page, 429, {"Retry-After": str(math.ceil(wait))}
    error = _("Wrong user name or password.")
    return render_template("hub/login.html", error=error, csrf=csrf_token()), 401


@bp.post("/logout")
def logout():
    """Ends the session on the hub, not only in this browser."""
    check_csrf()
    token = session.get("sid")
    if token:
        conn = get_db()
        with conn.transaction():
            sessions.end(conn, token)
    _fresh_session()
    return redirect(url_for("dashboard.login"))


def _fresh_session() -> None:
    """A new session at sign-in and sign-out; only the chosen language carries over."""
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language


@bp.post("/language")
def language():
    """The dashboard's language, for this browser (signed in or not)."""
    check_csrf()
    chosen = request.form.get("language", "")
    if chosen in ("en", "fr", "pt"):  # hub.LOCALES
        session["lang"] = chosen
    return redirect(url_for("dashboard.index"))


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None  # the template writes it (formats.percent)


SITES_PER_PAGE = 50  # a national programme has hundreds: the page shows them in pages


def _site_rows(conn, sites: list[dict[str, Any]], by_site: dict[str, dict]) -> None:
    """Each site of the page: its counts from the tallies (reviews pending), and over
    the charts' weeks its results and positivity per programme, never mixed."""
    per_site = tallies.per_site(conn, [s["site"] for s in sites])  # kept on write
    for site in sites:
        counts = per_site.get(site["site"]) or dict.fromkeys(TALLY_COUNTERS, 0)
        window = by_site.get(site["site"], {})
        results = sum(sum(c["results"]) for c in window.values())
        refused = sum(sum(c["refused"]) for c in window.values())
        site.update(
            results=counts["results"],
            recent=results,
            refusal_rate=_rate(refused, results),
            programmes={p: programme.totals(c) for p, c in window.items()},
            reviews=counts["reviews"],
            reviews_pending=counts["pending"],
        )


def summary(page: int = 1) -> dict[str, Any]:
    """Everything the programme page shows, for one page of sites (programme-wide
    figures, charts and alarms are for every site)."""
    conn = get_db()
    every_site = conn.execute(
        "SELECT d.site, COUNT(*) AS devices, MAX(d.last_seen_at) AS last_seen,"
        " SUM(CASE WHEN d.revoked_at IS NULL THEN 0 ELSE 1 END) AS revoked"
        " FROM devices d GROUP BY d.site ORDER BY d.site"
    )
    pages = max(1, math.ceil(len(every_site) / SITES_PER_PAGE))
    page = min(max(1, page), pages)
    first = (page - 1) * SITES_PER_PAGE
    sites = every_site[first : first + SITES_PER_PAGE]
    names = [s["site"] for s in sites]
    weeks = programme.chart_weeks(conn)
    # every site's weeks together (the headline, the charts), and the page's per site
    rows = tallies.programme_weeks(conn, weeks[0]) if weeks else []
    page_rows = (
        tallies.programme_weeks(conn, weeks[0], sites=names, by_site=True)
        if weeks and names else []
    )
    by_site: dict[str, list] = {}
    for row in page_rows:
        by_site.setdefault(row["site"], []).append(row)
    _site_rows(conn, sites, {s: programme.per_programme(r, weeks) for s, r in by_site.items()})
    counts = programme.per_programme(rows, weeks)
    models = tallies.models(conn)
    in_use = {(m["model_name"], m["model_version"]) for m in models}
    refs = reference.references(conn)
    bands = {p: programme.reference_band(p, refs, in_use) for p in programme.PROGRAMMES}
    programme_view = programme.programme(conn, names)  # notes what it skipped
    devices = {d["id"]: d for d in records.list_devices(conn)}
    bad = [
        {**devices[device_id], **n}
        for device_id, n in sorted(bad_records.counts(conn).items())
        if device_id in devices
    ]
    return {
        "sites": sites,
        "bad_records": sorted(bad, key=lambda b: (b["site"], b["name"], b["id"])),
        "pager": {
            "page": page,
            "pages": pages,
            "first": first + 1,
            "last": first + len(sites),
            "total": len(every_site),
        },
        "weeks": weeks,
        "headline": {p: programme.totals(c) for p, c in counts.items()},
        "bands": bands,
        "charts": programme.weekly_charts(counts, weeks, bands, _("all sites")),
        "names": programme.programme_names(),
        "silent": programme.silent_boxes(conn),
        "silent_days": programme.SILENT_DAYS,
        "models": [
            {**m, "finding": finding_meaning(m["model_name"], m["model_version"], "")}
            for m in models
        ],
        "devices": [d for d in devices.values() if d["site"] in set(names)],
        "programme": programme_view,
        "device_models": distribution.device_models(conn),
        "bundles": distribution.published(conn),
    }


@bp.get("/")
@login_required
def index():
    page = request.args.get("page", "1")
    page_number = int(page) if page.isdigit() else 1
    return render_template("hub/dashboard.html", csrf=csrf_token(), **summary(page_number))


@bp.app_template_filter("week_range")
def _week_range(week: str) -> str:
    return readable.week_range(week)


@bp.app_template_filter("fixed")  # "decimal" is cascade.py's (one decimal at most)
def _decimal(value: float | None, digits: int = 3) -> str:
    return readable.decimal(value, digits)


@bp.app_template_filter("count")
def _count(value: int | None) -> str:
    return readable.count(value)


# -- records a reader could not render (bad_records.py) ----------------------------------
def device_or_404(device_id: str) -> dict[str, Any]:
    found = get_db().one(
        "SELECT id, site, name, enrolled_at, revoked_at, last_seen_at, software FROM devices"
        " WHERE id = ?",
        (device_id,),
    )
    if found is None:
        abort(404)
    return found


@bp.get("/boxes/<device_id>/records")
@login_required
def box_records(device_id: str):
    device = device_or_404(device_id)
    conn = get_db()
    checked, found = request.args.get("checked", ""), request.args.get("bad", "")
    return render_template(
        "hub/records.html",
        csrf=csrf_token(),
        device=device,
        bad=bad_records.listed(conn, device_id),
        quarantined=bad_records.quarantined(conn, device_id),
        actions=bad_records.actions(conn, device_id),
        checked=int(checked) if checked.isdigit() else None,
        found=int(found) if found.isdigit() else 0,
    )


@bp.post("/boxes/<device_id>/records/check")
@login_required
def check_box_records(device_id: str):
    check_csrf()
    device_or_404(device_id)
    done = bad_records.scan(get_db(), device_id)
    return redirect(
        url_for("dashboard.box_records", device_id=device_id, checked=done["checked"],
                bad=done["bad"])
    )


@bp.post("/boxes/<device_id>/records/quarantine")
@login_required
def quarantine_records(device_id: str):
    reason = request.form.get("reason", "").strip()[:300]
    return _on_chosen_records(
        device_id, lambda db, ids, actor: bad_records.quarantine(db, device_id, ids, actor, reason)
    )


@bp.post("/boxes/<device_id>/records/release")
@login_required
def release_records(device_id: str):
    return _on_chosen_records(
        device_id, lambda db, ids, actor: bad_records.release(db, device_id, ids, actor)
    )


def _on_chosen_records(device_id: str, act):
    """Quarantine or release the records ticked on a box's page, in the admin's name."""
    check_csrf()
    device_or_404(device_id)
    chosen = request.form.getlist("entry")
    if chosen:
        try:
            act(get_db(), chosen, f"dashboard:{g.admin}")
        except ValueError:
            abort(400)
    return redirect(url_for("dashboard.box_records", device_id=device_id))


from appliance.hub import drilldown  # noqa: E402, F401 - its pages join bp
