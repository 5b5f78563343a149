"""Which engine a bundle needs here: facts in, action out (no I/O)."""

from __future__ import annotations

from inference.engines.enginekit import (
    CXR,
    JETPACK_61,
    ROUTER,
    engine_name,
)

from appliance.inference.bundle import Bundle
from appliance.inference.engines.decide import REJECTED, Decision, Device, decide


def test_decide_table(bundles: dict[str, Bundle]) -> None:
    cxr = bundles[CXR]
    name = engine_name(cxr)

    def action(device=JETPACK_61, files=(), record=None, precision="int8") -> Decision:
        return decide(cxr, precision, device, set(files), record or {})

    assert action(Device(reason="no GPU")).action == "skip"
    assert "no GPU" in action(Device(reason="no GPU")).reason
    assert action().action == "build" and action().engine == name
    assert action(files=[name]).action == "check"  # built offline, never checked here
    assert action(files=[name], record={"verified": name}).action == "use"
    assert action(files=[name + REJECTED]).action == "skip"
    assert "delete" in action(files=[name + REJECTED]).reason
    assert action(record={"failed_builds": {name: 2}}).action == "build"
    assert action(record={"failed_builds": {name: 3}, "error": "oom"}).action == "skip"
    # a JetPack upgrade (new TensorRT) or another GPU needs another engine: build it,
    # even though the old one is present and was checked
    upgraded = Device("10.7.0", (8, 7))
    assert action(upgraded, files=[name], record={"verified": name}).action == "build"
    other_gpu = Device("10.3.0", (7, 2))
    assert action(other_gpu, files=[name], record={"verified": name}).engine != name
    # a new model version has another sha256, hence another engine name
    assert decide(bundles[ROUTER], "int8", JETPACK_61, {name}, {"verified": name}).action == (
        "build"
    )


def test_decide_skips_a_precision_the_bundle_lacks(bundles: dict[str, Bundle]) -> None:
    manifest = dict(bundles[CXR].manifest)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k != "model.onnx"}
    decision = decide(Bundle(bundles[CXR].path, manifest), "fp16", JETPACK_61, set(), {})
    assert decision.action == "skip" and "fp16" in decision.reason
