"""The shipped adult bundle's members, read out of its one fused graph
(build/tb_bundle_members.py), and the shortcut figures measured on them."""

from pathlib import Path

import numpy as np
import pytest

from appliance.inference.onnx_runner import OnnxRunner
from appliance.inference.postprocess import map_shifts, shift_input
from build import tb_bundle_members as tbm
from build.tb_shortcuts import measure
from models.training.cxr_adult import RECIPE

MODEL = Path(__file__).resolve().parents[2] / "models" / RECIPE.name / RECIPE.version / \
    "model.int8.onnx"


@pytest.fixture(scope="module")
def session():
    return tbm.member_session(MODEL)


def _films(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *RECIPE.input_shape)).astype(np.float32)


def test_the_members_outputs_are_what_the_served_graph_averages(session) -> None:
    x = _films(6, 0)
    with OnnxRunner(MODEL, threads=1) as runner:
        served = runner.infer({"input": x})
    per_member = [tbm.member_run(session, k)(x) for k in range(5)]
    logits = np.stack([lg for _, lg, _ in per_member])
    cams = np.stack([cam for _, _, cam in per_member])
    # a graph exported with other tensor names, or members in another order, fails here
    assert np.abs(logits.mean(0) - served["logits"]).max() < 1e-4
    assert np.abs(cams.mean(0) - served["cam"]).max() < 1e-4
    _, ensemble_logits, ensemble_cams = tbm.member_run(session, None)(x)  # --folds report
    assert np.abs(ensemble_logits - served["logits"]).max() < 1e-4
    assert np.abs(ensemble_cams - served["cam"]).max() < 1e-4
    assert np.abs(logits[0] - logits[1]).max() > 1e-2  # members differ: not one copy
    feats = per_member[0][0]
    # one member's share of the grouped last block: the shipped choice's last width
    assert feats.shape == (6, RECIPE.choice.widths[-1])


def test_the_shift_score_averages_the_film_and_the_maps_copies(session) -> None:
    x = _films(3, 1)
    _, shifted, _ = tbm.member_run(session, 2, "shifts")(x)
    plain = tbm.member_run(session, 2)
    want = []
    for xi in x:
        copies = [xi] + [shift_input(xi, dx, dy) for dx, dy in map_shifts(4)[1:]]
        want.append(np.mean([plain(c[None])[1][0, 0] for c in copies]))
    assert np.abs(shifted[:, 0] - np.array(want)).max() < 1e-4
    _, lg, cam = plain(x)
    _, less_mean, _ = tbm.member_run(session, 2, "peak-mean")(x)
    assert np.abs(less_mean - (lg - cam.mean(axis=(2, 3)))).max() < 1e-6
    with pytest.raises(ValueError, match="score must be"):
        tbm.member_run(session, 0, "mean")


def test_shortcut_figures_of_a_served_member_leave_out_heads_it_has_not(session) -> None:
    names = ("tb", "nih_normal", "nih_abnormal", "lesions_removed", "lesion_pasted",
             "tissue_pasted", "children_normal", "children_pneumonia", "tb_soft",
             "nih_other_disease", "nih_tb_like", "sharp_film", "sharp_film_soft", "tb_tight",
             "nih_normal_tight", "tb_processed", "nih_normal_processed")
    checks = {name: _films(10, i) for i, name in enumerate(names)}
    checks["tb_masks"] = np.zeros((10, 64, 64), np.float32)
    checks["tb_masks"][:, 10:30, 10:30] = 1
    figures = measure(tbm.member_run(session, 0), checks)
    assert figures["n_tb"] == 10 and 0.0 <= figures["auc_in_source"] <= 1.0
    assert 0.0 <= figures["pointing_game"] <= 1.0
    # the served graph has the TB head only: no second-head or summed figures
    assert not any(k.endswith(("_second_head", "_sum")) for k in figures)
