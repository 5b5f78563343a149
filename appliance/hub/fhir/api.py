"""``/fhir``: the hub's results as FHIR R4 DiagnosticReports, for an authenticated client.

    GET /fhir/metadata                              CapabilityStatement (no login)
    GET /fhir/DiagnosticReport?patient=&date=&site=&_count=
    GET /fhir/DiagnosticReport/<id>

Authentication: HTTP Basic with a dashboard admin's name and password (HTTPS in front,
as for the dashboard), through the same failed-login throttle as the dashboard's login.
Search answers a ``searchset`` Bundle: each report (``search.mode`` match) and the
ImagingStudy it references (``include``). Errors are OperationOutcomes.

A client that sends the right password is never throttled for sending many requests
at once: in each process the attempts of one name from one address are checked one at a
time, and a password once checked is remembered (as an HMAC under a key that lives only
in this process's memory, bound to the stored hash, for ``VERIFIED_SECONDS``), so the
requests after the first are let in without counting a failure or hashing again. A
wrong password is counted and throttled as on the dashboard's login.

Reports a stored record of which cannot be rendered (a field of the wrong type, stored
before the hub checked them at its door) are left out of a search, which then ends with
an OperationOutcome entry (``search.mode`` outcome) saying how many; the admin sees them
on the dashboard (``bad_records.py``). Reading one by id answers 422.

Search parameters: ``patient`` (the patient ID as the box has it, or
``system|value``), ``date`` (the result's date: ``2026-11-30``, or with a prefix
``ge``, ``gt``, ``le``, ``lt``, ``eq``; up to 10 times), ``site`` (the box's site
name; not a FHIR standard parameter), ``_count`` (at most 200, default 50); each other
parameter once. They are applied to the newest results first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from flask import Blueprint, Response, request

from appliance.errors import LoginThrottledError
from appliance.hub import bad_records, get_db, records
from appliance.hub.db import Connection
from appliance.hub.fhir import search
from appliance.hub.fhir.resources import UnrenderableRecord, rendered
from appliance.logins import throttle

bp = Blueprint("fhir", __name__, url_prefix="/fhir")
FHIR_JSON = "application/fhir+json"


def fhir_response(resource: Any, status: int = 200, headers: dict | None = None) -> Response:
    body = resource if isinstance(resource, str) else resource.model_dump_json(exclude_none=True)
    return Response(body, status=status, mimetype=FHIR_JSON, headers=headers or {})


def outcome(status: int, code: str, text: str, headers: dict | None = None) -> Response:
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    return fhir_response(
        OperationOutcome.model_validate(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": text}],
            }
        ),
        status,
        headers,
    )


VERIFIED_SECONDS = 300.0
CHECK_WAIT_SECONDS = 10.0
_PROCESS_KEY = secrets.token_bytes(32)  # never written anywhere: dies with the process
_verified: dict[str, tuple[str, bytes, float]] = {}  # name -> (stored hash, HMAC, until)
_verified_lock = threading.Lock()
_checking = tuple(threading.Lock() for _ in range(64))  # one check at a time per client


def _digest(password: str) -> bytes:
    return hmac.new(_PROCESS_KEY, password.encode(), hashlib.sha256).digest()


def _stored_hash(conn: Connection, username: str) -> str | None:
    row = conn.one("SELECT password_hash FROM admins WHERE username = ?", (username,))
    return row["password_hash"] if row else None


def _already_verified(username: str, stored: str | None, password: str) -> bool:
    """This password was checked here lately against the hash the hub still holds."""
    with _verified_lock:
        held = _verified.get(username)
    return (
        stored is not None
        and held is not None
        and held[2] > time.monotonic()
        and hmac.compare_digest(held[0].encode(), stored.encode())
        and hmac.compare_digest(held[1], _digest(password))
    )


def _remember(username: str, stored: str, password: str) -> None:
    with _verified_lock:
        now = time.monotonic()
        for name in [n for n, held in _verified.items() if held[2] <= now]:
            del _verified[name]
        _verified[username] = (stored, _digest(password), now + VERIFIED_SECONDS)


def _check(conn: Connection, username: str, password: str) -> Response | None:
    """None when the name and password are right, else the answer (401 or 429)."""
    if _already_verified(username, _stored_hash(conn, username), password):
        return None
    counters = throttle.keys(username, request.remote_addr or "")
    try:
        with conn.transaction():
            throttle.reserve(conn, counters, time.time())
    except LoginThrottledError as exc:
        return outcome(429, "throttled", str(exc), {"Retry-After": f"{exc.retry_after:.0f}"})
    stored = _stored_hash(conn, username)  # read before checking: a change then misses
    right = records.check_admin(conn, username, password)  # hashes even for no such name
    if stored is None or not right:
        challenge = {"WWW-Authenticate": 'Basic realm="hub FHIR"'}
        return outcome(401, "login", "wrong name or password", challenge)
    with conn.transaction():
        throttle.succeeded(conn, counters)
    _remember(username, stored, password)
    return None


@bp.before_request
def authenticate():
    if request.endpoint == "fhir.metadata":
        return None
    auth = request.authorization
    challenge = {"WWW-Authenticate": 'Basic realm="hub FHIR"'}
    if auth is None or auth.type != "basic" or not auth.username:
        return outcome(401, "login", "HTTP Basic authentication required", challenge)
    conn = get_db()
    password = auth.password or ""
    # The requests of one name from one client, in this process, one after the other:
    # the first right one is remembered, the rest then need no count and no hash.
    key = f"{auth.username.strip().casefold()}\n{request.remote_addr or ''}"
    lock = _checking[int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 64]
    locked = lock.acquire(timeout=CHECK_WAIT_SECONDS)
    try:
        return _check(conn, auth.username, password)
    finally:
        if locked:
            lock.release()


@bp.get("/metadata")
def metadata():
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    params = [
        {"name": name, "type": kind}
        for name, kind in (("patient", "token"), ("date", "date"), ("site", "string"))
    ]
    return fhir_response(
        CapabilityStatement.model_validate(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "date": "2026-11-30",
                "kind": "instance",
                "fhirVersion": "4.0.1",
                "format": ["json"],
                "rest": [
                    {
                        "mode": "server",
                        "resource": [
                            {
                                "type": "DiagnosticReport",
                                "interaction": [{"code": "read"}, {"code": "search-type"}],
                                "searchParam": params,
                            }
                        ],
                    }
                ],
            }
        )
    )


def _skipped_outcome(count: int) -> dict[str, Any]:
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    text = (
        f"{count} stored record(s) could not be written as FHIR and were left out;"
        " the hub admin sees them on the dashboard (bad records)"
    )
    resource = OperationOutcome.model_validate(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "warning", "code": "processing", "diagnostics": text}],
        }
    )
    return {
        "resource": resource.model_dump(mode="json", exclude_none=True),
        "search": {"mode": "outcome"},
    }


def _unreadable(item: dict[str, Any], exc: UnrenderableRecord) -> dict[str, Any]:
    entry = item["entry"]
    return {"device_id": entry["device_id"], "entry_id": entry["entry_id"], "kind": "result",
            "reason": str(exc)}


@bp.get("/DiagnosticReport")
def search_reports():
    try:
        query = search.parse(request.args)
    except ValueError as exc:
        return outcome(400, "invalid", str(exc))
    conn = get_db()
    found = search.find(conn, query)
    entries: list[dict[str, Any]] = []
    studies: dict[str, Any] = {}
    skipped: list[dict[str, Any]] = []
    for item in found:
        skipped.extend(item["unreadable"])  # a review or outcome passed over
        try:
            report, study = rendered(item)
        except UnrenderableRecord as exc:
            skipped.append(_unreadable(item, exc))
            continue
        entries.append(
            {
                "fullUrl": f"{request.url_root}fhir/DiagnosticReport/{report.id}",
                "resource": report.model_dump(mode="json", exclude_none=True),
                "search": {"mode": "match"},
            }
        )
        if study is not None and study.id not in studies:
            studies[study.id] = {
                "fullUrl": f"{request.url_root}fhir/ImagingStudy/{study.id}",
                "resource": study.model_dump(mode="json", exclude_none=True),
                "search": {"mode": "include"},
            }
    bad_records.note(conn, skipped, "fhir")
    unrendered = sum(1 for s in skipped if s["kind"] == "result")
    bundle = Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "link": [{"relation": "self", "url": request.url}],
            "entry": entries
            + list(studies.values())
            + ([_skipped_outcome(unrendered)] if unrendered else []),
        }
    )
    return fhir_response(bundle)


@bp.get("/DiagnosticReport/<report_id>")
def read_report(report_id: str):
    conn = get_db()
    item = search.by_id(conn, report_id)
    if item is None:
        return outcome(404, "not-found", f"no DiagnosticReport {report_id}")
    try:
        report, _ = rendered(item)
    except UnrenderableRecord as exc:
        bad_records.note(conn, [*item["unreadable"], _unreadable(item, exc)], "fhir")
        return outcome(
            422,
            "processing",
            f"DiagnosticReport {report_id}: the stored record cannot be written as FHIR"
            f" ({exc}); the hub admin sees it among the bad records",
        )
    bad_records.note(conn, item["unreadable"], "fhir")
    return fhir_response(report)
