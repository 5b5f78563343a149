"""build/retrain.py (issue 27, part 3): fine-tune the shipped fundus model on a programme's
set, the gate it cannot skip, and a bundle only when it passes. Real IDRiD photos laid
out as `appliance hub training-set` writes them (retrainkit.py); the shipped bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import retrainkit as kit
from click.testing import CliRunner

from appliance.cli import main as appliance
from appliance.inference.bundle import load_bundle
from appliance.inference.engines.trt_support import check_file
from build import retrain, retrain_gate

REPO = Path(__file__).resolve().parents[2]
needs_idrid = pytest.mark.skipif(not (kit.IDRID / "labels.csv").is_file(),
                                 reason="the shared IDRiD photos are not here")
# few epochs, small batches: enough steps for shuffled labels to do their harm
QUICK = ["--epochs", "4", "--batch", "8", "--json"]


def run_retrain(set_dir: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "build" / "retrain.py"), kit.MODEL, "--data", str(set_dir),
         "--locked-test", str(set_dir), "--out", str(out), *QUICK, *extra],
        capture_output=True, text=True, timeout=900, cwd=REPO)
    result = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, result, done.stderr


@pytest.fixture(scope="module")
def photos() -> tuple[list, list]:
    """16 photos of each class to train on, 8 of each for the locked test."""
    return kit.pick(16), kit.pick(8, skip=16)


@pytest.fixture(scope="module")
def true_run(photos, tmp_path_factory) -> tuple[int, dict, str, Path]:
    root = tmp_path_factory.mktemp("true")
    kit.training_set(root / "set", *photos)
    return (*run_retrain(root / "set", root / "out"), root)


@pytest.fixture(scope="module")
def shuffled_run(photos, tmp_path_factory) -> tuple[int, dict, str, Path]:
    root = tmp_path_factory.mktemp("shuffled")
    kit.training_set(root / "set", *photos, shuffle_seed=0)
    # the report splits are left out (no shared data there): the locked test decides
    return (*run_retrain(root / "set", root / "out", "--data-root", str(root / "none")), root)


@needs_idrid
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_retrain_with_true_labels_passes_and_writes_a_bundle_the_box_can_use(true_run):
    code, result, log, root = true_run
    assert code == 0, log
    assert result["gate"] == "pass" and result["reasons"] == []
    assert result["version"].startswith("1.2.0+retrain.")
    for who in ("active", "new"):
        assert set(result["locked_test"][who]) == {"auc", "sensitivity", "specificity"}
    assert result["locked_test"]["new"]["sensitivity"] >= 0.8
    assert result["locked_test"]["new"]["auc"] >= result["locked_test"]["active"]["auc"] - 0.01
    assert set(result["per_site"]) == {"Clinic A", "Clinic B"}
    assert all({"active", "new", "trained_on"} <= set(v) for v in result["per_site"].values())
    rows = result["report_splits"]["rows"]
    assert rows and rows[0]["set"] == "report split (IDRiD photos never trained on)"
    assert all(r["drop"] <= 0.02 for r in rows if r["gated"])
    assert result["seconds"] > 0

    bundle = load_bundle(Path(result["bundle"]))  # every file's sha256 checked
    assert bundle.path == root / "out" / kit.MODEL / result["version"]
    m = bundle.manifest
    shipped = load_bundle(REPO / "models" / kit.MODEL / "1.2.0").manifest
    for kept in ("input", "outputs", "preprocessing", "labels", "intended_use", "targets"):
        assert m[kept] == shipped[kept]
    assert {k: m["calibration"][k] for k in ("method", "a", "b")} == {
        k: shipped["calibration"][k] for k in ("method", "a", "b")}
    assert (m["operating_points"]["suggested"]["threshold"]
            == shipped["operating_points"]["suggested"]["threshold"])
    data = m["retraining"]["data"]
    assert data["train"]["sites"] == {"Clinic A": {"images": 16, "positives": 8,
                                                   "review_labels": 0},
                                      "Clinic B": {"images": 16, "positives": 8,
                                                   "review_labels": 0}}
    assert data["train"]["dates"] == {"first": "2025-01-10", "last": "2025-03-19"}
    assert data["locked_test"]["images"] == 16
    assert m["retraining"]["gate"]["locked_test"] == result["locked_test"]
    assert m["heatmap"]["validated"] is False  # the maps of new weights are unchecked
    assert check_file(bundle.file("model.int8.onnx")) == []
    assert "## Retraining and its gate" in bundle.file("MODEL_CARD.md").read_text()

    # the candidate is checked on any box: appliance screen --bundle (the box's own
    # doors still apply: its quality check may refuse a photo before any model scores it)
    photos = sorted(str(p) for p in (root / "set" / "locked_test" / "images").iterdir())
    screened = CliRunner().invoke(
        appliance, ["screen", *photos, "--json", "--data-dir", str(root / "box"),
                    "--bundle", str(bundle.path)], catch_exceptions=False)
    assert screened.exit_code == 0, screened.output
    assert f"scoring with {kit.MODEL} {result['version']} from {bundle.path}" in screened.output
    found = [json.loads(x) for x in screened.output.splitlines() if x.startswith("{")]
    assert len(found) == len(photos)
    scored = [r for r in found if r["model"]]
    assert scored and all(r["model"]["version"] == result["version"] for r in scored)


@needs_idrid
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_shuffled_labels_fail_the_gate_on_the_locked_test_and_write_no_bundle(shuffled_run):
    code, result, log, root = shuffled_run
    assert code == 1, log
    assert result["gate"] == "fail" and result["bundle"] is None
    locked = result["locked_test"]
    new, active = locked["new"], locked["active"]
    short = {"AUC": new["auc"] < active["auc"] - 0.01,
             "sensitivity": new["sensitivity"] < locked["target_sensitivity"],
             "specificity": new["specificity"] < locked["target_specificity"]}
    assert any(short.values())
    for figure, failed in short.items():  # each shortfall named with its figure
        value = new["auc" if figure == "AUC" else figure]
        said = f"locked test: {figure} {value:.4f}"
        assert failed == any(r.startswith(said) for r in result["reasons"]), result["reasons"]
    assert not (root / "out" / kit.MODEL).exists()
    record = root / "out" / f"retrain-{kit.MODEL}-{result['version']}.json"
    assert json.loads(record.read_text())["gate"] == "fail"  # the refusal is on record
    assert "no report splits" in log


# -- bad input: refused before any training, saying what is wrong --------------------


def refused(capsys, *args: str) -> str:
    assert retrain.main([kit.MODEL, *args]) == 2
    return capsys.readouterr().err


@needs_idrid
def test_bad_sets_are_refused_with_a_clear_error(tmp_path, capsys):
    photos = kit.pick(2)
    good = kit.training_set(tmp_path / "good", photos, kit.pick(2, skip=2))
    out = ["--out", str(tmp_path / "out")]

    missing = tmp_path / "missing"
    (missing / "train" / "images").mkdir(parents=True)
    err = refused(capsys, "--data", str(missing), "--locked-test", str(good), *out)
    assert f"--data {missing}: no labels.csv there nor in {missing / 'train'}" in err

    empty = tmp_path / "empty"
    kit.write_split(empty / "train", [], "train")
    err = refused(capsys, "--data", str(empty), "--locked-test", str(good), *out)
    assert f"{empty / 'train' / 'labels.csv'}: no images" in err

    one_class = tmp_path / "one"
    kit.write_split(one_class / "train", [p for p in photos if p[1] == 1], "train")
    err = refused(capsys, "--data", str(one_class), "--locked-test", str(good), *out)
    assert "the training data holds one class only (2 images labelled 1)" in err

    err = refused(capsys, "--data", str(good / "train"), "--locked-test", str(good / "train"),
                  *out)
    assert "locked-test images are also in the training data" in err

    other = tmp_path / "other"
    kit.write_split(other / "train", photos, "train")
    labels = other / "train" / "labels.csv"
    labels.write_text(labels.read_text().replace(kit.MODEL, "cxr-pneumonia"))
    err = refused(capsys, "--data", str(other), "--locked-test", str(good), *out)
    assert "line 2: model 'cxr-pneumonia', not 'fundus-referable-dr'" in err

    assert not (tmp_path / "out").exists()  # nothing written for a refused run


def test_a_model_without_a_retraining_recipe_is_refused(tmp_path, capsys):
    assert retrain.main(["modality-router", "--data", str(tmp_path), "--locked-test",
                         str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no retraining for 'modality-router'" in capsys.readouterr().err


# -- the start: the shipped members, recovered from the INT8 bundle -------------------


def test_the_shipped_members_are_recovered_from_the_fused_int8_bundle(tmp_path):
    from appliance.inference.preprocess import preprocess
    from build.retrain_data import decode01
    from models.training.fundus import RECIPE

    bundle = load_bundle(REPO / "models" / kit.MODEL / "1.2.0")
    photos = sorted((REPO / "tests" / "data" / "fundus").glob("*.jpg"))[:3]
    x = np.stack([preprocess(bundle.manifest["preprocessing"], decode01(p)) for p in photos])
    model = retrain.recover_start(RECIPE, bundle, tmp_path, x)  # checked to 1e-4 inside
    assert model.members == bundle.manifest["validation"]["members"] == 5
    logits = retrain.member_logits(model, __import__("torch").from_numpy(x))
    assert tuple(logits.shape) == (3, 5, 1)


# -- the gate's arithmetic ----------------------------------------------------------------


def test_the_locked_test_rules_name_the_figures():
    active = {"auc": 0.90, "sensitivity": 0.85, "specificity": 0.7}
    assert retrain_gate.locked_test_reasons(
        active, {"auc": 0.891, "sensitivity": 0.80, "specificity": 0.5},
        threshold=0.56, target_sensitivity=0.8) == []
    reasons = retrain_gate.locked_test_reasons(
        active, {"auc": 0.885, "sensitivity": 0.75, "specificity": 0.9},
        threshold=0.56, target_sensitivity=0.8)
    assert reasons[0] == ("locked test: AUC 0.8850 is below the active version's 0.9000 "
                          "minus 0.01 (0.8900)")
    assert reasons[1].startswith("locked test: sensitivity 0.7500 at the shipped threshold "
                                 "0.56 is below the target 0.8")


def test_report_splits_gate_an_auc_drop_above_002_where_both_classes_are_enough():
    def row(name: str, auc: float, positives: int = 40, n: int = 70) -> dict:
        return {"set": name, "n": n, "positives": positives, "auc": auc,
                "sensitivity": 0.8, "specificity": 0.8}

    active = [row("report", 0.94), row("camera", 0.92), row("few", 0.93, positives=1, n=15)]
    new = [row("report", 0.925), row("camera", 0.895), row("few", 0.50, positives=1, n=15)]
    rows, reasons = retrain_gate.report_split_rows(active, new)
    assert [r["gated"] for r in rows] == [True, True, False]
    assert reasons == ["report split 'camera': AUC 0.8950 dropped 0.0250 from the active "
                       "version's 0.9200 (at most 0.02 allowed)"]
