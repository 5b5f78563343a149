"""Local calibration: the site's own operating point, from its own confirmed cases.

For one screening model, the latest result of each image scored by the version now
installed is paired with the image's confirmatory reference (``outcomes.py``). From
those pairs: the ROC curve and AUC, sensitivity and specificity with 95 % Wilson
intervals at candidate thresholds, and the highest threshold that keeps the target
sensitivity. Guardrails: no recommendation below a minimum of confirmed positives and
negatives, and a warning when outcomes exist mostly for flagged images (verification
bias) with the Begg–Greenes corrected figures beside the naive ones.

``apply`` writes the site threshold setting (``config.save_settings``, the settings
page's writer) and records the change with the old value, for ``rollback``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from appliance.config import ENV_PREFIX, Config, save_settings
from appliance.errors import ApplianceError
from appliance.inference.bundle import read_manifest
from appliance.monitoring import stats
from appliance.monitoring.notices import Notice, percent
from appliance.monitoring.outcomes import references
from appliance.screening.models import THRESHOLD_SETTINGS, active_bundle_dirs
from appliance.store.db import Store, audit, utc_now

DECISION_SUPPORT = (
    "Decision support, not a diagnosis: a threshold chooses which images a clinician sees "
    "first; it never rules disease in or out."
)
EFFECT_WINDOW = 500  # "of the last 500 images, ... fewer referrals"
GRID = [round(0.05 * i, 2) for i in range(1, 20)]
BIAS_RATIO = 0.5  # unflagged images verified at under half the flagged ones' rate


class CalibrationError(ApplianceError):
    """A calibration cannot be computed, applied or rolled back as asked."""


def installed_manifest(config: Config, name: str) -> dict[str, Any]:
    found = active_bundle_dirs(config)
    if name not in found:
        raise CalibrationError(f"No model bundle named {name} is installed.")
    return read_manifest(found[name])


def threshold_in_force(config: Config, name: str, manifest: dict[str, Any]) -> float:
    suggested = float(manifest["operating_points"]["suggested"]["threshold"])
    return float(getattr(config, THRESHOLD_SETTINGS[name]) or suggested)


def _cases(store: Store, name: str, version: str) -> dict[str, np.ndarray]:
    """Latest result per image of this model version, with its reference (if any)."""
    conn = store.conn()
    rows = conn.execute(
        "SELECT image_id, probability, threshold, MAX(id) AS id FROM results"
        " WHERE model_name = ? AND model_version = ? AND probability IS NOT NULL"
        " GROUP BY image_id ORDER BY id",
        (name, version),
    ).fetchall()
    truth = references(conn)
    image = np.array([r["image_id"] for r in rows], dtype=np.int64)
    score = np.array([r["probability"] for r in rows], dtype=np.float64)
    then = np.array([r["threshold"] if r["threshold"] is not None else 1.0 for r in rows])
    label = np.array([truth.get(int(i), -1) for i in image], dtype=np.int8)
    return {"image": image, "score": score, "flagged_then": score >= then, "label": label}


def _other_versions(store: Store, name: str, version: str, mine: np.ndarray) -> int:
    """Confirmed images scored only by other versions of the model."""
    conn = store.conn()
    scored = {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT image_id FROM results WHERE model_name = ? AND model_version != ?"
            " AND probability IS NOT NULL",
            (name, version),
        )
    }
    return len((scored - set(mine.tolist())) & set(references(conn)))


def _bias(cases: dict[str, np.ndarray]) -> dict[str, Any]:
    """Verification rates among images flagged and not flagged at the time, and the
    Begg–Greenes weight of each confirmed case (1 / its stratum's verification rate)."""
    verified, flagged = cases["label"] >= 0, cases["flagged_then"]
    n_f, n_u = int(flagged.sum()), int((~flagged).sum())
    v_f, v_u = int((verified & flagged).sum()), int((verified & ~flagged).sum())
    rate_f = v_f / n_f if n_f else None
    rate_u = v_u / n_u if n_u else None
    biased = bool(rate_f and rate_u is not None and rate_u < BIAS_RATIO * rate_f)
    weights = None
    if v_f and v_u:
        weights = np.where(flagged[verified], n_f / v_f, n_u / v_u)
    return {
        "flagged_verified": rate_f,
        "unflagged_verified": rate_u,
        "biased": biased,
        "weights": weights,
    }


def _row(confirmed: stats.Confirmed, threshold: float, recent: np.ndarray) -> dict[str, Any]:
    counts = confirmed.at(threshold)
    return {
        "threshold": round(threshold, 4),
        "sensitivity": counts.sensitivity,
        "specificity": counts.specificity,
        "ci": counts.intervals(),
        "referred": float((recent >= threshold).mean()) if recent.size else None,
        "true_positive": counts.true_positive,
        "false_negative": counts.false_negative,
        "true_negative": counts.true_negative,
        "false_positive": counts.false_positive,
    }


def _effect(cases, recent_ids: np.ndarray, current: float, new: float) -> dict[str, Any]:
    """What the new threshold would have changed on the last ``EFFECT_WINDOW`` images."""
    take = np.isin(cases["image"], recent_ids)
    score, label = cases["score"][take], cases["label"][take]
    now, then = score >= current, score >= new
    return {
        "window": int(take.sum()),
        "referrals_now": int(now.sum()),
        "referrals_new": int(then.sum()),
        "fewer_referrals": int(now.sum() - then.sum()),
        "more_missed": int((now & ~then & (label == 1)).sum()),
        "fewer_missed": int((~now & then & (label == 1)).sum()),
        "fewer_false_alarms": int((now & ~then & (label == 0)).sum()),
    }


def calibrate(
    store: Store, config: Config, name: str, target_sensitivity: float = 0.90
) -> dict[str, Any]:
    """The calibration report of one model (see the module's docstring)."""
    if name not in THRESHOLD_SETTINGS:
        known = ", ".join(THRESHOLD_SETTINGS)
        raise CalibrationError(f"{name} has no site threshold to calibrate (one of: {known}).")
    if not 0.5 <= target_sensitivity < 1.0:
        raise CalibrationError("The target sensitivity must be at least 0.5 and below 1.")
    manifest = installed_manifest(config, name)
    version = str(manifest["version"])
    suggested = float(manifest["operating_points"]["suggested"]["threshold"])
    current = threshold_in_force(config, name, manifest)
    cases = _cases(store, name, version)
    verified = cases["label"] >= 0
    scores, labels = cases["score"][verified], cases["label"][verified] == 1
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    notices: list[Notice] = []
    if not len(cases["score"]):
        notices.append(Notice("no_results", {"model": name, "version": version}, name))
    others = _other_versions(store, name, version, cases["image"])
    if others:
        notices.append(Notice("older_versions", {"count": others, "model": name}, name))
    min_pos, min_neg = config.calibration_min_positives, config.calibration_min_negatives
    enough = n_pos >= min_pos and n_neg >= min_neg
    if not enough:
        notices.append(
            Notice(
                "too_few_cases",
                {
                    "positives": n_pos,
                    "negatives": n_neg,
                    "min_positives": min_pos,
                    "min_negatives": min_neg,
                },
                name,
            )
        )
    bias = _bias(cases)
    if bias["biased"]:
        notices.append(
            Notice(
                "verification_bias",
                {
                    "flagged": percent(bias["flagged_verified"]),
                    "unflagged": percent(bias["unflagged_verified"]),
                },
                name,
            )
        )
    confirmed = stats.Confirmed(scores, labels)
    recent_ids = cases["image"][-EFFECT_WINDOW:]
    recent = cases["score"][-EFFECT_WINDOW:]
    recommended = confirmed.threshold_for_sensitivity(target_sensitivity) if enough else None
    report: dict[str, Any] = {
        "model": name,
        "version": version,
        "setting": THRESHOLD_SETTINGS[name],
        "target_sensitivity": target_sensitivity,
        "n_results": int(len(cases["score"])),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "minimum": {"positive": min_pos, "negative": min_neg},
        "ready": enough,
        "current_threshold": current,
        "suggested_threshold": suggested,
        "recommended_threshold": recommended,
        "auc": None,
        "auc_ci": None,
        "sensitivity": None,
        "specificity": None,
        "ci": None,
        "verification": {
            "flagged_verified": bias["flagged_verified"],
            "unflagged_verified": bias["unflagged_verified"],
            "biased": bias["biased"],
        },
        "notices": [n.as_dict() for n in notices],
        "decision_support": DECISION_SUPPORT,
    }
    if n_pos and n_neg:
        auc, auc_ci = stats.auc_with_ci(scores, labels)
        report.update(auc=auc, auc_ci=list(auc_ci), roc=stats.roc_points(scores, labels))
    marks = {"current": current, "suggested": suggested}
    if recommended is not None:
        marks["recommended"] = recommended
    grid = sorted(set(GRID) | {round(v, 4) for v in marks.values()})
    report["table"] = [
        {**_row(confirmed, t, recent), "marks": [k for k, v in marks.items() if abs(v - t) < 1e-9]}
        for t in grid
    ]
    report["histogram"] = {
        "positive": stats.histogram(scores[labels]).tolist(),
        "negative": stats.histogram(scores[~labels]).tolist(),
    }
    report["at_current"] = _row(confirmed, current, recent)
    if recommended is not None:
        at = _row(confirmed, recommended, recent)
        report.update(
            sensitivity=at["sensitivity"],
            specificity=at["specificity"],
            ci=at["ci"],
            at_recommended=at,
            effect=_effect(cases, recent_ids, current, recommended),
        )
        if bias["biased"] and bias["weights"] is not None:
            weights = bias["weights"]
            corrected = {
                key: stats.weighted_rates(scores, labels, weights, value)
                for key, value in (("current", current), ("recommended", recommended))
            }
            report["verification"]["corrected"] = {
                key: {"sensitivity": se, "specificity": sp} for key, (se, sp) in corrected.items()
            }
    return report


# -- applying and rolling back ----------------------------------------------------------
def _write_setting(conn, config: Config, setting: str, value: float) -> None:
    if ENV_PREFIX + setting.upper() in os.environ:
        raise CalibrationError(
            f"{ENV_PREFIX + setting.upper()} is set in the environment and would override "
            "config.toml: remove it first."
        )
    save_settings(config, {setting: value})


def apply(store: Store, config: Config, report: dict[str, Any], actor: str) -> dict[str, Any]:
    """Make the recommended threshold the site's; returns the change recorded."""
    new = report.get("recommended_threshold")
    if new is None:
        reasons = "; ".join(n["message"] for n in report["notices"]) or "no recommendation"
        raise CalibrationError(f"Nothing to apply: {reasons}")
    setting, name = report["setting"], report["model"]
    old = float(getattr(config, setting))
    detail = {
        key: report[key]
        for key in (
            "target_sensitivity",
            "n_positive",
            "n_negative",
            "auc",
            "sensitivity",
            "specificity",
            "ci",
        )
    }
    with store.write() as conn:
        cur = conn.execute(
            "INSERT INTO threshold_changes (model_name, model_version, setting, old_value,"
            " new_value, action, detail, actor, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'apply', ?, ?, ?)",
            (name, report["version"], setting, old, new, json.dumps(detail), actor, utc_now()),
        )
        audit(
            conn,
            actor,
            "calibration.applied",
            name,
            json.dumps({"setting": setting, "old": old, "new": new, **detail}),
        )
        _write_setting(conn, config, setting, new)  # last: a refusal rolls the row back
    return {"id": cur.lastrowid, "model": name, "setting": setting, "old": old, "new": new}


def rollback(store: Store, config: Config, name: str, actor: str) -> dict[str, Any]:
    """Undo the latest calibration of ``name`` not yet undone: its old value comes back."""
    with store.write() as conn:
        row = conn.execute(
            "SELECT * FROM threshold_changes WHERE model_name = ? AND action = 'apply'"
            " AND id NOT IN (SELECT undoes FROM threshold_changes WHERE undoes IS NOT NULL)"
            " ORDER BY id DESC LIMIT 1",
            (name,),
        ).fetchone()
        if row is None:
            raise CalibrationError(f"No calibration of {name} to roll back.")
        now = float(getattr(config, row["setting"]))
        cur = conn.execute(
            "INSERT INTO threshold_changes (model_name, model_version, setting, old_value,"
            " new_value, action, undoes, actor, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'rollback', ?, ?, ?)",
            (
                name,
                row["model_version"],
                row["setting"],
                now,
                row["old_value"],
                row["id"],
                actor,
                utc_now(),
            ),
        )
        audit(
            conn,
            actor,
            "calibration.rolled_back",
            name,
            json.dumps({"setting": row["setting"], "old": now, "new": row["old_value"]}),
        )
        _write_setting(conn, config, row["setting"], row["old_value"])
    return {
        "id": cur.lastrowid,
        "model": name,
        "setting": row["setting"],
        "old": now,
        "new": row["old_value"],
    }


def history(store: Store, name: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    sql = "SELECT * FROM threshold_changes"
    params: tuple = ()
    if name:
        sql += " WHERE model_name = ?"
        params = (name,)
    rows = store.conn().execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]


def status(store: Store, config: Config, name: str) -> dict[str, Any]:
    """For the System page, the monitor summary and the hub: the threshold in force,
    where it comes from, and how many confirmed cases the version now installed has."""
    manifest = installed_manifest(config, name)
    version = str(manifest["version"])
    cases = _cases(store, name, version)
    label = cases["label"]
    setting_value = float(getattr(config, THRESHOLD_SETTINGS[name]))
    last = history(store, name, limit=1)
    applied = last[0] if last and last[0]["action"] == "apply" else None
    calibrated = applied is not None and abs(applied["new_value"] - setting_value) < 1e-9
    out = {
        "model": name,
        "version": version,
        "threshold": threshold_in_force(config, name, manifest),
        "source": "calibrated" if calibrated else ("site" if setting_value else "bundle"),
        "calibrated_at": applied["created_at"] if calibrated else None,
        "calibrated_version": applied["model_version"] if calibrated else None,
        "n_positive": int((label == 1).sum()),
        "n_negative": int((label == 0).sum()),
        "minimum": {
            "positive": config.calibration_min_positives,
            "negative": config.calibration_min_negatives,
        },
    }
    out["notices"] = []
    if calibrated and applied["model_version"] != version:
        out["notices"].append(
            Notice(
                "calibration_stale",
                {
                    "model": name,
                    "threshold": f"{setting_value:g}",
                    "calibrated": applied["model_version"],
                    "version": version,
                },
                name,
            ).as_dict()
        )
    return out
