"""``/fhir``: the hub's results as FHIR R4 DiagnosticReports, for an authenticated client.

    GET /fhir/metadata                              CapabilityStatement (no login)
    GET /fhir/DiagnosticReport?patient=&date=&site=&_count=
    GET /fhir/DiagnosticReport/<id>

Authentication: HTTP Basic with a dashboard admin's name and password (HTTPS in front,
as for the dashboard), through the same failed-login throttle as the dashboard's login.
Search answers a ``searchset`` Bundle: each report (``search.mode`` match) and the
ImagingStudy it references (``include``). Errors are OperationOutcomes.

Search parameters: ``patient`` (the patient ID as the box has it, or
``system|value``), ``date`` (the result's date: ``2026-11-30``, or with a prefix
``ge``, ``gt``, ``le``, ``lt``, ``eq``; repeatable), ``site`` (the box's site name;
not a FHIR standard parameter), ``_count`` (at most 200, default 50). They are applied
to the newest results first.
"""

from __future__ import annotations

import time
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from flask import Blueprint, Response, request

from appliance.errors import LoginThrottledError
from appliance.hub import get_db, records
from appliance.hub.fhir import search
from appliance.hub.fhir.resources import diagnostic_report, imaging_study
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


@bp.before_request
def authenticate():
    if request.endpoint == "fhir.metadata":
        return None
    auth = request.authorization
    challenge = {"WWW-Authenticate": 'Basic realm="hub FHIR"'}
    if auth is None or auth.type != "basic" or not auth.username:
        return outcome(401, "login", "HTTP Basic authentication required", challenge)
    conn = get_db()
    counters = throttle.keys(auth.username, request.remote_addr or "")
    try:
        with conn.transaction():
            throttle.reserve(conn, counters, time.time())
    except LoginThrottledError as exc:
        return outcome(429, "throttled", str(exc), {"Retry-After": f"{exc.retry_after:.0f}"})
    if not records.check_admin(conn, auth.username, auth.password or ""):
        return outcome(401, "login", "wrong name or password", challenge)
    with conn.transaction():
        throttle.succeeded(conn, counters)
    return None


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


@bp.get("/DiagnosticReport")
def search_reports():
    try:
        query = search.parse(request.args)
    except ValueError as exc:
        return outcome(400, "invalid", str(exc))
    found = search.find(get_db(), query)
    entries: list[dict[str, Any]] = []
    studies: dict[str, Any] = {}
    for item in found:
        report = diagnostic_report(item["entry"], item["site"], item["review"], item["outcome"])
        entries.append(
            {
                "fullUrl": f"{request.url_root}fhir/DiagnosticReport/{report.id}",
                "resource": report.model_dump(mode="json", exclude_none=True),
                "search": {"mode": "match"},
            }
        )
        study = imaging_study(item["entry"]["device_id"], item["entry"]["payload"], item["site"])
        if study is not None and study.id not in studies:
            studies[study.id] = {
                "fullUrl": f"{request.url_root}fhir/ImagingStudy/{study.id}",
                "resource": study.model_dump(mode="json", exclude_none=True),
                "search": {"mode": "include"},
            }
    bundle = Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "link": [{"relation": "self", "url": request.url}],
            "entry": entries + list(studies.values()),
        }
    )
    return fhir_response(bundle)


@bp.get("/DiagnosticReport/<report_id>")
def read_report(report_id: str):
    item = search.by_id(get_db(), report_id)
    if item is None:
        return outcome(404, "not-found", f"no DiagnosticReport {report_id}")
    report = diagnostic_report(item["entry"], item["site"], item["review"], item["outcome"])
    return fhir_response(report)
