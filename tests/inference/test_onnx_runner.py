"""The ONNX Runtime runner checks its inputs against the model before running."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bundle_dir

from appliance.inference.onnx_runner import OnnxRunner

MODEL = bundle_dir("cxr-pneumonia") / "model.int8.onnx"


def test_infer_returns_logits_and_cam_for_any_batch() -> None:
    with OnnxRunner(MODEL, threads=1) as runner:
        assert runner.input_metadata["input"][0][1:] == [1, 64, 64]
        for n in (1, 3):
            out = runner.infer({"input": np.zeros((n, 1, 64, 64), np.float32)})
            assert out["logits"].shape == (n, 1) and out["cam"].shape[:2] == (n, 1)


@pytest.mark.parametrize(
    ("feed", "match"),
    [
        ({"image": np.zeros((1, 1, 64, 64), np.float32)}, "do not match"),
        ({"input": np.zeros((1, 1, 64, 64), np.float64)}, "dtype"),
        ({"input": np.zeros((1, 3, 64, 64), np.float32)}, "shape"),
        ({"input": np.zeros((1, 64, 64), np.float32)}, "shape"),
    ],
)
def test_wrong_inputs_are_clear_errors(feed: dict, match: str) -> None:
    with OnnxRunner(MODEL) as runner, pytest.raises(ValueError, match=match):
        runner.infer(feed)


def test_runner_outside_with_block() -> None:
    with pytest.raises(RuntimeError, match="outside"):
        OnnxRunner(MODEL).infer({})


@pytest.mark.parametrize("threads", [None, 2])
def test_pool_threads_do_not_spin_between_images(threads) -> None:
    # A spinning pool took the CPU the listener and the other workers needed (issue 28).
    with OnnxRunner(MODEL, threads=threads) as runner:
        options = runner._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
