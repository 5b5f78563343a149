"""The Calibration page (admin): this site's own operating point from its confirmed
cases, applied or rolled back with a button; and accepting a drift baseline."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

from appliance.monitoring import calibration, charts, monitor
from appliance.screening.models import CXR, CXR_ADULT, FUNDUS, THRESHOLD_SETTINGS
from appliance.web.auth import requires
from appliance.web.reasons import translate_reason

bp = Blueprint("calibration", __name__)

MODEL_NAMES = {
    CXR: _l("Child chest X-ray"),
    CXR_ADULT: _l("Adult chest X-ray"),
    FUNDUS: _l("Retina photo"),
}
TARGETS = (0.80, 0.85, 0.90, 0.95, 0.98)
assert set(MODEL_NAMES) == set(THRESHOLD_SETTINGS)


def _store():
    return current_app.extensions["appliance_store"]


def _chosen() -> tuple[str, float]:
    values = request.values
    model = values.get("model", CXR)
    if model not in THRESHOLD_SETTINGS:
        model = CXR
    target = values.get("target", 0.90, type=float)
    return model, min(TARGETS, key=lambda t: abs(t - target))


def _charts(report: dict) -> dict[str, Markup]:
    lines = [("current", report["current_threshold"], _("Threshold in force"))]
    marks = []
    if report["recommended_threshold"] is not None:
        lines.append(("recommended", report["recommended_threshold"], _("Recommended")))
    for css, key, label in (
        ("current", "at_current", _("Threshold in force")),
        ("recommended", "at_recommended", _("Recommended")),
    ):
        row = report.get(key)
        if row and row["sensitivity"] is not None and row["specificity"] is not None:
            marks.append((css, 1 - row["specificity"], row["sensitivity"], label))
    out = {
        "histogram": Markup(
            charts.histogram_chart(
                report["histogram"]["positive"],
                report["histogram"]["negative"],
                lines,
                x_label=_("score (probability)"),
                y_label=_("share of cases"),
                title=_("Scores of confirmed positives and negatives"),
            )
        )
    }
    if report.get("roc"):
        out["roc"] = Markup(
            charts.roc_chart(
                report["roc"],
                marks,
                x_label=_("1 − specificity"),
                y_label=_("sensitivity"),
                title=_("ROC curve on this site's confirmed cases"),
            )
        )
    return out


@bp.get("/calibration")
@requires("admin")
def index():
    config = current_app.config["APPLIANCE"]
    model, target = _chosen()
    try:
        report = calibration.calibrate(_store(), config, model, target)
    except calibration.CalibrationError as exc:
        flash(translate_reason(str(exc)), "error")
        report = None
    changes = calibration.history(_store(), model, limit=50)
    undone = {row["undoes"] for row in changes}
    return render_template(
        "calibration/index.html",
        report=report,
        charts=_charts(report) if report else {},
        model=model,
        target=target,
        targets=TARGETS,
        names=MODEL_NAMES,
        history=changes[:20],
        can_roll_back=any(r["action"] == "apply" and r["id"] not in undone for r in changes),
    )


@bp.post("/calibration/apply")
@requires("admin")
def apply_threshold():
    config = current_app.config["APPLIANCE"]
    model, target = _chosen()
    try:
        report = calibration.calibrate(_store(), config, model, target)
        shown = request.form.get("threshold", type=float)
        if shown is None or report["recommended_threshold"] != shown:
            flash(
                _("The recommendation changed since the page was shown: check it again."), "error"
            )
        else:
            change = calibration.apply(_store(), config, report, g.user["username"])
            flash(
                _(
                    "Threshold %(new)s applied to new results (it was %(old)s).",
                    new=f"{change['new']:g}",
                    old=f"{change['old']:g}" if change["old"] else _("the bundle's own"),
                ),
                "ok",
            )
    except calibration.CalibrationError as exc:
        flash(translate_reason(str(exc)), "error")
    return redirect(url_for("calibration.index", model=model, target=target))


@bp.post("/calibration/rollback")
@requires("admin")
def rollback():
    config = current_app.config["APPLIANCE"]
    model, target = _chosen()
    try:
        change = calibration.rollback(_store(), config, model, g.user["username"])
    except calibration.CalibrationError as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        flash(
            _(
                "Threshold back to %(new)s for new results.",
                new=f"{change['new']:g}" if change["new"] else _("the bundle's own"),
            ),
            "ok",
        )
    return redirect(url_for("calibration.index", model=model, target=target))


@bp.post("/monitoring/accept")
@requires("admin")
def accept_baseline():
    """An admin has checked a drift warning and accepts the recent images as normal."""
    scope = request.form.get("scope", "")
    try:
        monitor.accept(_store(), current_app.config["APPLIANCE"], scope, g.user["username"])
    except (monitor.MonitorError, calibration.CalibrationError) as exc:
        flash(translate_reason(str(exc)), "error")
    else:
        current_app.extensions["appliance_monitor"].refresh()
        flash(_("The recent images are now this site's baseline for %(model)s.", model=scope), "ok")
    return redirect(url_for("system.index"))
