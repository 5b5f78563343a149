"""An engine against ONNX Runtime on the check images: the tolerance, both ways."""

from __future__ import annotations

import numpy as np
from inference.engines.enginekit import (
    CXR,
)

from appliance.inference.bundle import Bundle
from appliance.inference.engines.checks import check_batch, compare_outputs
from appliance.inference.ort_runner import OnnxRuntimeRunner


def test_check_images_go_through_each_bundles_own_preprocessing(
    bundles: dict[str, Bundle],
) -> None:
    for bundle in bundles.values():
        batch = check_batch(bundle)
        assert batch.shape[1:] == tuple(bundle.manifest["input"]["shape"][1:])
        assert len(batch) == 4 and np.isfinite(batch).all()
        assert np.array_equal(batch, check_batch(bundle))  # deterministic


def test_compare_outputs_tolerance(bundles: dict[str, Bundle]) -> None:
    bundle = bundles[CXR]
    with OnnxRuntimeRunner(bundle, precision="int8") as runner:
        ref = runner.infer({"input": check_batch(bundle)})
    assert compare_outputs(bundle, ref, ref).passed
    nudged = {"logits": ref["logits"] + 0.01, "cam": ref["cam"] + 0.01}
    assert compare_outputs(bundle, ref, nudged).passed
    # the normal radiograph sits mid-curve: +1 logit moves its probability a lot
    shifted = {"logits": ref["logits"] + 1.0, "cam": ref["cam"]}
    verdict = compare_outputs(bundle, ref, shifted)
    assert not verdict.passed and "probabilities differ" in verdict.reason
    scrambled = {"logits": ref["logits"], "cam": ref["cam"][:, :, ::-1, :] * 3}
    assert "heat maps differ" in compare_outputs(bundle, ref, scrambled).reason
    broken = {"logits": ref["logits"] * np.nan, "cam": ref["cam"]}
    assert "NaN" in compare_outputs(bundle, ref, broken).reason
