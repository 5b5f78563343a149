"""The monitoring report: per model, its recent results against its references; the
router's refusals; fundus gradability; calibration status; the box's health.

Read from the store's results (each with the measures of its image) and the bundles'
manifests; computed on demand and cached briefly for ``/healthz`` and the System page;
``appliance serve`` recomputes it every ``monitor_interval_seconds`` and queues a
compact summary for the hub whenever what it says changes (``queue_summary``).

Baselines: a model version's site baseline is its first ``monitor_window`` results at
this site, until an admin accepts a later window (``accept``: after checking that a
change is expected, e.g. a new camera, or that this clinic's patients simply differ
from validation). Once a baseline is accepted, the model's comparison with validation
is no longer raised as a warning: the site has said its own distribution is the norm.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from typing import Any

import numpy as np

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.monitoring import calibration, drift
from appliance.monitoring.health import health
from appliance.monitoring.notices import Notice
from appliance.screening.models import ROUTER, THRESHOLD_SETTINGS
from appliance.store import outbox
from appliance.store.db import Store, audit, utc_now

log = logging.getLogger(__name__)

DECISION_SUPPORT = "Decision support, not a diagnosis: monitoring says where to look."
SCOPES = (*THRESHOLD_SETTINGS, ROUTER, "fundus-quality")
# A summary goes to the hub when its warnings or thresholds change, else at most every
# few hours: counts move with every image, and each queued summary is a row kept.
SUMMARY_EVERY_SECONDS = 6 * 3600


class MonitorError(ApplianceError):
    """A monitoring request that cannot be done as asked."""


# -- reading windows ------------------------------------------------------------------
_MODEL_SQL = (
    "SELECT r.id, r.probability, r.image_stats, i.columns, i.rows FROM results r"
    " JOIN images i ON i.id = r.image_id"
    " WHERE r.model_name = ? AND r.model_version = ? AND r.probability IS NOT NULL"
)
# The router sees every image that was decoded (router probabilities are stored);
# an unreadable file never reached it.
_ROUTER_SQL = (
    "SELECT r.id, r.router, r.route, r.quality, r.image_stats, i.columns, i.rows"
    " FROM results r JOIN images i ON i.id = r.image_id WHERE r.router IS NOT NULL"
    " AND r.router != '{}'"
)
_FUNDUS_SQL = _ROUTER_SQL + " AND (r.route = 'fundus' OR r.quality IS NOT NULL)"


def _window(rows: list, kind: str) -> drift.Window:
    rows = sorted(rows, key=lambda r: r["id"])
    stats_rows = [json.loads(r["image_stats"]) if r["image_stats"] else None for r in rows]
    sizes = np.array(
        [(r["columns"], r["rows"]) for r in rows if r["columns"] and r["rows"]], dtype=float
    ).reshape(-1, 2)
    window = drift.Window(
        scores=np.zeros(0),
        measures=drift.measures_from(stats_rows),
        sizes=sizes,
        first_id=rows[0]["id"] if rows else None,
        last_id=rows[-1]["id"] if rows else None,
    )
    if kind == "model":
        window.scores = np.array([r["probability"] for r in rows], dtype=float)
    else:
        routers = [json.loads(r["router"]) for r in rows]
        window.scores = np.array(
            [max((v for v in p.values() if isinstance(v, float)), default=0.0) for p in routers]
        )
        window.flags = {
            "refused": np.array([r["route"] == "refused" and not r["quality"] for r in rows]),
            "ungradable": np.array([r["route"] == "refused" and bool(r["quality"]) for r in rows]),
        }
    return window


def _baseline_row(conn, scope: str, version: str | None):
    return conn.execute(
        "SELECT * FROM monitor_baselines WHERE scope = ? AND model_version IS ?"
        " ORDER BY id DESC LIMIT 1",
        (scope, version),
    ).fetchone()


def windows(
    store: Store, config: Config, scope: str, version: str | None
) -> tuple[drift.Window, drift.Window, dict[str, Any]]:
    """(baseline, recent since the baseline, how the baseline was chosen) for a model
    version or scope."""
    conn = store.conn()
    if scope in THRESHOLD_SETTINGS:
        sql, params, kind = _MODEL_SQL, (scope, version), "model"
    else:
        sql, params, kind = (_FUNDUS_SQL if scope == "fundus-quality" else _ROUTER_SQL), (), scope
    size = config.monitor_window
    accepted = _baseline_row(conn, scope, version)
    if accepted is not None:
        base_rows = conn.execute(
            sql + " AND r.id BETWEEN ? AND ?",
            (*params, accepted["first_result_id"], accepted["last_result_id"]),
        ).fetchall()
        source = {"source": "accepted", "by": accepted["actor"], "at": accepted["created_at"]}
    else:
        base_rows = conn.execute(sql + " ORDER BY r.id LIMIT ?", (*params, size)).fetchall()
        source = {"source": "first results"}
    after = max((r["id"] for r in base_rows), default=0)
    recent_rows = conn.execute(
        sql + " AND r.id > ? ORDER BY r.id DESC LIMIT ?", (*params, after, size)
    ).fetchall()
    return _window(base_rows, kind), _window(recent_rows, kind), source


def latest(store: Store, config: Config, scope: str, version: str | None) -> drift.Window:
    """The last ``monitor_window`` results, wherever the baseline ends: what is compared
    with the validation reference."""
    if scope in THRESHOLD_SETTINGS:
        sql, params, kind = _MODEL_SQL, (scope, version), "model"
    else:
        sql, params, kind = _ROUTER_SQL, (), scope
    rows = (
        store.conn()
        .execute(sql + " ORDER BY r.id DESC LIMIT ?", (*params, config.monitor_window))
        .fetchall()
    )
    return _window(rows, kind)


def accept(store: Store, config: Config, scope: str, actor: str) -> dict[str, Any]:
    """Make the recent window this site's baseline for ``scope`` (a model or ``router``)."""
    if scope not in SCOPES:
        raise MonitorError(f"Unknown model {scope}: one of {', '.join(SCOPES)}.")
    version = None
    if scope in THRESHOLD_SETTINGS:
        version = str(calibration.installed_manifest(config, scope)["version"])
    conn = store.conn()
    sql = _MODEL_SQL if version else (_FUNDUS_SQL if scope == "fundus-quality" else _ROUTER_SQL)
    params = (scope, version) if version else ()
    rows = conn.execute(
        sql + " ORDER BY r.id DESC LIMIT ?", (*params, config.monitor_window)
    ).fetchall()
    if len(rows) < config.monitor_min_results:
        raise MonitorError(
            f"Only {len(rows)} results of {scope}: at least {config.monitor_min_results} are "
            "needed to accept them as this site's baseline."
        )
    first, last = min(r["id"] for r in rows), max(r["id"] for r in rows)
    with store.write() as conn:
        conn.execute(
            "INSERT INTO monitor_baselines (scope, model_version, first_result_id,"
            " last_result_id, actor, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (scope, version, first, last, actor, utc_now()),
        )
        audit(
            conn,
            actor,
            "monitor.baseline_accepted",
            scope,
            json.dumps({"version": version, "results": len(rows)}),
        )
    return {"scope": scope, "version": version, "results": len(rows)}


# -- the report -----------------------------------------------------------------------
def _model_report(store, config, name) -> tuple[dict[str, Any], list[Notice], list[Notice]]:
    manifest = calibration.installed_manifest(config, name)
    version = str(manifest["version"])
    threshold = calibration.threshold_in_force(config, name, manifest)
    suggested = float(manifest["operating_points"]["suggested"]["threshold"])
    baseline, recent, source = windows(store, config, name, version)
    enough = config.monitor_min_results
    last = latest(store, config, name, version)
    # "recent": the last results, wherever the baseline ends (on a new box its first
    # results are both); only the comparison with the site's baseline needs results
    # after it ("since_baseline").
    facts: dict[str, Any] = {
        "version": version,
        "threshold": threshold,
        "recent": last.n,
        "since_baseline": recent.n,
        "baseline": {**source, "results": baseline.n},
    }
    warnings: list[Notice] = []
    info: list[Notice] = []
    reference = manifest.get("reference")
    if not reference or "score_histogram" not in reference:
        info.append(Notice("no_reference", {"model": name, "version": version}, name))
        facts["validation"] = None
    elif last.n >= enough:
        checked, found = drift.vs_validation(name, last, reference, suggested)
        facts["validation"] = checked
        if source["source"] == "accepted":
            facts["validation"]["accepted_instead"] = True  # the site said its own is normal
        else:
            warnings += found
    if baseline.n >= enough and recent.n >= enough:
        checked, found = drift.vs_site(name, baseline, recent, threshold)
        facts["site"] = checked
        warnings += found
    else:
        facts["site"] = None
    # Whether anything was compared: "no warnings" means something only when it was.
    facts["judged"] = bool(facts.get("validation") or facts["site"])
    return facts, warnings, info


def _router_report(store, config) -> tuple[dict[str, Any], list[Notice]]:
    manifest = calibration.installed_manifest(config, ROUTER)
    baseline, recent, source = windows(store, config, ROUTER, None)
    last = latest(store, config, ROUTER, None)
    facts: dict[str, Any] = {
        "recent": last.n,
        "since_baseline": recent.n,
        "baseline": {**source, "results": baseline.n},
    }
    warnings: list[Notice] = []
    enough = config.monitor_min_results
    reference = manifest.get("reference")
    if reference and last.n >= enough and source["source"] != "accepted":
        facts["validation"], found = drift.router_vs_validation(last, reference)
        warnings += found
    if baseline.n >= enough and recent.n >= enough:
        facts["site"], found = drift.share_vs_site("refused_vs_site", "refused", baseline, recent)
        warnings += found
    f_base, f_recent, _ = windows(store, config, "fundus-quality", None)
    if f_base.n >= enough and f_recent.n >= enough:
        facts["fundus_quality"], found = drift.share_vs_site(
            "ungradable_vs_site", "ungradable", f_base, f_recent
        )
        warnings += found
    return facts, warnings


def report(store: Store, config: Config) -> dict[str, Any]:
    """Everything monitoring knows now (see the module's docstring)."""
    models: dict[str, Any] = {}
    cal: dict[str, Any] = {}
    warnings: list[Notice] = []
    info: list[Notice] = []
    for name in THRESHOLD_SETTINGS:
        try:
            models[name], found, said = _model_report(store, config, name)
            cal[name] = calibration.status(store, config, name)
        except calibration.CalibrationError as exc:  # a bundle missing: doctor says why
            models[name] = {"error": str(exc)}
            continue
        warnings += found
        info += said
    try:
        router, found = _router_report(store, config)
        warnings += found
    except calibration.CalibrationError as exc:
        router = {"error": str(exc)}
    health_facts, found = health(store, config)
    warnings += found
    stale = [n for status in cal.values() for n in status.pop("notices", [])]
    return {
        "generated_at": utc_now(),
        "window": config.monitor_window,
        "min_results": config.monitor_min_results,
        "models": models,
        "router": router,
        "calibration": cal,
        "health": health_facts,
        "warnings": [n.as_dict() for n in warnings] + stale,
        "notices": [n.as_dict() for n in info],
        "decision_support": DECISION_SUPPORT,
    }


# -- the hub's copy -------------------------------------------------------------------
def summary(full: dict[str, Any]) -> dict[str, Any]:
    """What the hub keeps of a report: small, and free of anything about a patient."""
    models = {}
    for name, facts in full["models"].items():
        if "error" in facts:
            models[name] = {"error": facts["error"]}
            continue
        site, validation = facts.get("site") or {}, facts.get("validation") or {}
        models[name] = {
            "version": facts["version"],
            "threshold": facts["threshold"],
            "recent": facts["recent"],
            "positivity": site.get("positivity", validation.get("positivity")),
            "psi_validation": validation.get("psi"),
            "psi_site": site.get("psi"),
        }
    router = full.get("router") or {}
    refused = (router.get("site") or router.get("validation") or {}).get("refused")
    return {
        "generated_at": full["generated_at"],
        "models": models,
        "refused": refused,
        "calibration": {
            name: {
                k: status[k]
                for k in (
                    "version",
                    "threshold",
                    "source",
                    "calibrated_at",
                    "n_positive",
                    "n_negative",
                )
            }
            for name, status in full["calibration"].items()
        },
        "health": {
            k: full["health"][k]
            for k in ("disk_free_mb", "temperature_c", "oldest_waiting_minutes")
        },
        "warnings": full["warnings"],
    }


def _meaning(payload: dict[str, Any] | None) -> Any:
    """What makes a summary worth sending at once: which warnings are raised, and each
    model's threshold, where it comes from and the version it applies to."""
    if payload is None:
        return None
    return {
        "warnings": sorted((w["code"], w.get("model") or "") for w in payload["warnings"]),
        "thresholds": {
            name: [status.get("version"), status.get("threshold"), status.get("source")]
            for name, status in payload["calibration"].items()
        },
    }


def queue_summary(store: Store, full: dict[str, Any], force: bool = False) -> bool:
    """Queue the summary for the hub when it says something new, or daily anyway."""
    new = summary(full)
    with store.write() as conn:
        last = outbox.last_monitor_payload(conn)
        if last is not None and not force:
            same = json.dumps(_meaning(last), sort_keys=True, default=str) == json.dumps(
                _meaning(new), sort_keys=True, default=str
            )
            age = time.time() - _timestamp(last.get("generated_at"))
            if same and age < SUMMARY_EVERY_SECONDS:
                return False
        outbox.record_monitor(conn, new)
    return True


def _timestamp(value: str | None) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


class Monitor:
    """The report, cached for ``max_age`` seconds (``/healthz`` may be polled often)."""

    def __init__(self, store: Store, config: Config, max_age: float = 30.0) -> None:
        self.store, self.config, self.max_age = store, config, max_age
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._at = 0.0

    def current(self) -> dict[str, Any]:
        with self._lock:
            if self._report is None or time.monotonic() - self._at > self.max_age:
                self._report = report(self.store, self.config)
                self._at = time.monotonic()
            return self._report

    def refresh(self) -> dict[str, Any]:
        with self._lock:
            self._report = report(self.store, self.config)
            self._at = time.monotonic()
            return self._report

    def run_forever(self, stop: threading.Event) -> None:
        """``appliance serve``'s monitoring thread: recompute, queue for the hub, wait."""
        while not stop.is_set():
            try:
                queue_summary(self.store, self.refresh())
            except Exception:  # never let monitoring take the box down
                log.exception("monitoring pass failed")
            stop.wait(self.config.monitor_interval_seconds)
