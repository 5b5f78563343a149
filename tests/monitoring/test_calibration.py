"""Local calibration on known scores: the recommendation, its guardrails, verification
bias, and applying and rolling back the site threshold (audited, effective at once)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import bundle_dir
from monitoring.cases import VERSION, confirm, population, scored

from appliance.config import load_config
from appliance.monitoring import calibration
from appliance.monitoring.calibration import CalibrationError
from appliance.screening.models import CXR


def test_no_recommendation_below_the_minimum_of_confirmed_cases(store, config):
    names = scored(store, [0.9] * 12 + [0.1] * 40)
    confirm(store, names, [True] * 12 + [False] * 40)
    report = calibration.calibrate(store, config, CXR)
    assert (report["n_positive"], report["n_negative"], report["ready"]) == (12, 40, False)
    assert report["recommended_threshold"] is None and report["sensitivity"] is None
    [notice] = report["notices"]
    assert notice["code"] == "too_few_cases"
    assert "12 positive and 40 negative; at least 30 positive and 30 negative" in notice["message"]
    with pytest.raises(CalibrationError, match="Nothing to apply: Not enough confirmed cases"):
        calibration.apply(store, config, report, "admin")


def test_the_recommendation_keeps_the_target_and_says_what_it_would_change(store, config):
    scores, labels = population(300)
    names = scored(store, scores)
    confirm(store, names[:200], labels[:200])  # the last 100 images have no outcome
    report = calibration.calibrate(store, config, CXR, target_sensitivity=0.9)
    pos, neg = scores[:200][labels[:200]], scores[:200][~labels[:200]]
    assert (report["n_positive"], report["n_negative"]) == (len(pos), len(neg))
    expected = calibration.stats.Confirmed(scores[:200], labels[:200]).threshold_for_sensitivity(
        0.9
    )
    assert report["recommended_threshold"] == expected
    assert report["sensitivity"] == pytest.approx((pos >= expected).mean())
    assert report["sensitivity"] >= 0.9
    assert report["specificity"] == pytest.approx((neg < expected).mean())
    low, high = report["ci"]["sensitivity"]
    assert low < report["sensitivity"] <= high
    assert 0.5 < report["auc"] <= 1 and report["auc_ci"][0] < report["auc"]
    current = report["current_threshold"]  # the bundle's own: no site setting yet
    effect = report["effect"]
    assert effect["window"] == 300
    assert effect["referrals_now"] == int((scores >= current).sum())
    assert effect["fewer_referrals"] == int((scores >= current).sum() - (scores >= expected).sum())
    flagged_now_not_new = (scores[:200] >= current) & (scores[:200] < expected)
    assert effect["more_missed"] == int((flagged_now_not_new & labels[:200]).sum())
    marks = {m: row["threshold"] for row in report["table"] for m in row["marks"]}
    assert marks["recommended"] == expected and marks["current"] == current
    assert sum(report["histogram"]["positive"]) == len(pos)
    assert report["roc"][0] == (0.0, 0.0) and report["roc"][-1] == (1.0, 1.0)
    assert not report["verification"]["biased"] and report["notices"] == []
    assert "not a diagnosis" in report["decision_support"]


def test_outcomes_mostly_for_flagged_images_warn_of_verification_bias(store, config):
    scores, labels = population(400, seed=2)
    names = scored(store, scores, threshold=0.5)
    flagged = scores >= 0.5
    # Every flagged image sent for the test; one in eight of the others.
    verified = flagged | (np.arange(400) % 8 == 0)
    confirm(store, [n for n, v in zip(names, verified, strict=True) if v], labels[verified])
    report = calibration.calibrate(store, config, CXR, target_sensitivity=0.9)
    codes = [n["code"] for n in report["notices"]]
    assert "verification_bias" in codes
    message = report["notices"][codes.index("verification_bias")]["message"]
    assert "100% of the images the box flagged but only 1" in message
    assert "random sample of the patients the box did not flag" in message
    corrected = report["verification"]["corrected"]["recommended"]
    assert corrected["sensitivity"] < report["sensitivity"]  # the naive figure flatters


def test_cases_scored_by_another_version_are_left_out_and_said_so(store, config):
    scores, labels = population(80, seed=3)
    confirm(store, scored(store, scores, version="0.0.1"), labels)
    report = calibration.calibrate(store, config, CXR)
    assert report["n_positive"] + report["n_negative"] == 0
    assert {n["code"] for n in report["notices"]} == {
        "no_results",
        "older_versions",
        "too_few_cases",
    }


def test_apply_sets_the_site_threshold_audited_and_rollback_restores_it(store, config):
    scores, labels = population(200, seed=4)
    confirm(store, scored(store, scores), labels)
    report = calibration.calibrate(store, config, CXR, target_sensitivity=0.85)
    change = calibration.apply(store, config, report, "admin")
    assert change["old"] == 0.0 and change["new"] == report["recommended_threshold"]
    text = (config.data_dir / "config.toml").read_text()
    assert f"cxr_threshold = {report['recommended_threshold']!r}" in text
    reloaded = load_config(config.data_dir, environ={})
    assert reloaded.cxr_threshold == report["recommended_threshold"]
    status = calibration.status(store, reloaded, CXR)
    assert status["source"] == "calibrated" and status["threshold"] == change["new"]
    again = calibration.calibrate(store, reloaded, CXR, target_sensitivity=0.85)
    assert again["current_threshold"] == change["new"]

    back = calibration.rollback(store, reloaded, CXR, "admin")
    assert (back["old"], back["new"]) == (change["new"], 0.0)
    assert load_config(config.data_dir, environ={}).cxr_threshold == 0.0
    with pytest.raises(CalibrationError, match="No calibration of cxr-pneumonia to roll back"):
        calibration.rollback(store, reloaded, CXR, "admin")
    actions = [
        row[0]
        for row in store.conn().execute(
            "SELECT action FROM audit_log WHERE action LIKE 'calibration.%' ORDER BY id"
        )
    ]
    assert actions == ["calibration.applied", "calibration.rolled_back"]
    history = calibration.history(store, CXR)
    assert [(h["action"], h["old_value"], h["new_value"]) for h in history] == [
        ("rollback", change["new"], 0.0),
        ("apply", 0.0, change["new"]),
    ]
    assert history[0]["undoes"] == history[1]["id"]


def test_apply_refuses_when_the_environment_would_override_it(store, config, monkeypatch):
    scores, labels = population(200, seed=5)
    confirm(store, scored(store, scores), labels)
    report = calibration.calibrate(store, config, CXR)
    monkeypatch.setenv("APPLIANCE_CXR_THRESHOLD", "0.3")
    with pytest.raises(CalibrationError, match="APPLIANCE_CXR_THRESHOLD is set"):
        calibration.apply(store, config, report, "admin")
    assert not (config.data_dir / "config.toml").exists()
    assert calibration.history(store, CXR) == []


def test_a_running_screener_uses_a_threshold_applied_by_another_process(
    store, config, screener, models
):
    scores, labels = population(200, seed=6)
    confirm(store, scored(store, scores), labels)
    model = models.get(CXR)
    before = screener.threshold(model)
    other_process = load_config(config.data_dir, environ={})  # `appliance calibrate --apply`
    report = calibration.calibrate(store, other_process, CXR, target_sensitivity=0.95)
    calibration.apply(store, other_process, report, "cli:nurse")
    assert report["recommended_threshold"] != before
    assert screener.threshold(model) == report["recommended_threshold"]


def test_a_calibration_made_for_another_bundle_version_is_flagged(store, config, tmp_path):
    from build.bundle_writer import write_bundle

    scores, labels = population(200, seed=7)
    confirm(store, scored(store, scores), labels)
    calibration.apply(store, config, calibration.calibrate(store, config, CXR), "admin")
    models_dir = tmp_path / "models"
    shutil.copytree(bundle_dir(CXR).parent.parent, models_dir)
    manifest = calibration.read_manifest(bundle_dir(CXR))
    files = {k: bundle_dir(CXR) / k for k in manifest["files"] if k != "MODEL_CARD.md"}
    write_bundle(
        models_dir / CXR / "99.0.0",
        {k: v for k, v in manifest.items() if k not in ("files", "schema_version")}
        | {"version": "99.0.0"},
        files,
        (bundle_dir(CXR) / "MODEL_CARD.md").read_text(),
    )
    newer = config.with_overrides(models_dir=str(models_dir))
    [notice] = calibration.status(store, newer, CXR)["notices"]
    assert notice["code"] == "calibration_stale"
    assert f"calibrated on version {VERSION}, and the box now runs 99.0.0" in notice["message"]


def test_the_adult_tb_model_calibrates_on_xpert_results(store, config):
    """Issue 23: the site's own operating point for the adult TB model from Xpert results.
    The scores are the committed bundle's own on real films it never trained on (TBX11K
    report split, Xpert-positive here; NIH report-split normals, Xpert-negative)."""
    import csv

    import cv2
    from helpers import TESTS

    from appliance.inference.bundle import load_bundle
    from appliance.inference.onnx_runner import run_batched
    from appliance.inference.postprocess import calibrated_probabilities
    from appliance.inference.preprocess import preprocess_batch
    from appliance.screening.models import CXR_ADULT

    def grey(path):
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255

    bundle = load_bundle(bundle_dir(CXR_ADULT))
    films = TESTS / "data" / f"tbx{bundle.manifest['preprocessing']['params']['size']}"
    with open(films / "labels.csv", newline="") as fh:
        tb = [films / r["file"] for r in csv.DictReader(fh)]
    with open(TESTS / "data" / "nih64" / "labels.csv", newline="") as fh:
        nn = [TESTS / "data" / "nih64" / r["file"] for r in csv.DictReader(fh)
              if r["abnormal"] == "0"]
    x = preprocess_batch(bundle.manifest["preprocessing"], [grey(p) for p in tb + nn])
    logits = run_batched(bundle.file("model.int8.onnx"), x)["logits"]
    scores = calibrated_probabilities(logits, bundle.manifest["calibration"]).round(4)
    labels = np.r_[np.ones(len(tb), bool), np.zeros(len(nn), bool)]
    names = scored(store, scores, model=CXR_ADULT, version=bundle.version,
                   threshold=bundle.manifest["operating_points"]["suggested"]["threshold"])
    confirm(store, names, labels)  # as Xpert MTB/RIF results (cases.confirm)
    report = calibration.calibrate(store, config, CXR_ADULT, target_sensitivity=0.9)
    assert (report["n_positive"], report["n_negative"]) == (len(tb), len(nn))
    assert report["ready"] and report["sensitivity"] >= 0.9
    assert report["recommended_threshold"] == calibration.stats.Confirmed(
        scores, labels).threshold_for_sensitivity(0.9)
    assert report["auc"] > 0.8
