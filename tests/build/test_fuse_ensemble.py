"""An ensemble fused into one grouped graph computes what its members compute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from appliance.inference.onnx_runner import run_batched  # noqa: E402
from build.export_onnx import export_onnx  # noqa: E402
from build.fuse_ensemble import FusionError, fused_from_bundle, member_chains  # noqa: E402
from build.quantize_int8 import quantize_int8  # noqa: E402
from models.training.fused import FusedCamEnsemble  # noqa: E402
from models.training.nets import CamNet, HeadsEnsemble  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "models"
SHAPE = (3, 32, 32)


def members(n: int = 3, **kw: object) -> list[CamNet]:
    """Trained-looking members: BatchNorm statistics and affine far from identity."""
    torch.manual_seed(0)
    nets = [CamNet(3, widths=(4, 8, 8), num_outputs=2, **kw).eval() for _ in range(n)]
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return nets


@pytest.mark.parametrize(("kw", "heads"), [({}, None), ({"peak": 8}, [1]),
                                          ({"stem_stride": 2, "peak": 0}, [0])])
def test_fused_network_equals_the_ensemble(kw: dict, heads: list[int] | None) -> None:
    ensemble = HeadsEnsemble(members(**kw), heads).eval()
    fused = FusedCamEnsemble.from_ensemble(ensemble, SHAPE)
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        want, got = ensemble(x), fused(x)
    for w, g in zip(want, got, strict=True):
        assert w.shape == g.shape
        assert float((w - g).abs().max()) < 1e-5
    grouped = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    assert grouped[0].groups == 1 and all(c.groups == 3 for c in grouped[1:])


@pytest.fixture(scope="module")
def sequential_int8(tmp_path_factory: pytest.TempPathFactory) -> tuple[HeadsEnsemble, Path]:
    """A five-graphs-in-sequence INT8 model, made as build/pipeline.py made them."""
    ensemble = HeadsEnsemble(members(peak=8), [1]).eval()
    tmp = tmp_path_factory.mktemp("fuse")
    export_onnx(ensemble, tmp / "seq.onnx", SHAPE)
    calibration = np.random.default_rng(0).random((16, *SHAPE)).astype(np.float32)
    quantize_int8(tmp / "seq.onnx", tmp / "seq.int8.onnx", calibration)
    return ensemble, tmp / "seq.int8.onnx"


class Recipe:
    serving_heads = [1]
    input_shape = SHAPE

    def build_model(self) -> CamNet:
        return CamNet(3, widths=(4, 8, 8), num_outputs=2, peak=8)


def test_members_recovered_from_an_int8_bundle_in_training_order(
        sequential_int8: tuple, tmp_path: Path) -> None:
    ensemble, int8 = sequential_int8
    fused, members_onnx, chains = fused_from_bundle(Recipe(), int8, tmp_path)
    assert len(chains) == 3 and all(len(c) == 6 for c in chains)
    # chain k is member k (out-of-fold scoring depends on it): its stem is member k's
    # weights up to INT8 rounding, and closer to them than to any other member's
    stems = [m.features[0][0].weight.detach().numpy() for m in ensemble.members]
    for k, chain in enumerate(chains):
        dist = [np.abs(chain[0][0] - s).max() for s in stems]
        assert int(np.argmin(dist)) == k
    x = np.random.default_rng(2).random((6, *SHAPE)).astype(np.float32)
    want = run_batched(members_onnx, x)
    with torch.no_grad():
        got = [t.numpy() for t in fused(torch.from_numpy(x))]
    assert np.abs(want["logits"] - got[0]).max() < 1e-5
    assert np.abs(want["cam"] - got[1]).max() < 1e-5


def test_fused_int8_is_one_grouped_graph_close_to_the_sequence(
        sequential_int8: tuple, tmp_path: Path) -> None:
    _, int8 = sequential_int8
    fused, _, _ = fused_from_bundle(Recipe(), int8, tmp_path)
    export_onnx(fused, tmp_path / "f.onnx", SHAPE)
    x = np.random.default_rng(3).random((16, *SHAPE)).astype(np.float32)
    quantize_int8(tmp_path / "f.onnx", tmp_path / "f.int8.onnx", x)
    graph = onnx.load(str(tmp_path / "f.int8.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 6  # one per layer, not one per layer and member
    biases = {n.input[2] for n in convs}
    assert all(n.op_type != "DequantizeLinear" or n.output[0] not in biases
               for n in graph.node)  # biases stay float: TensorRT refuses int32 DQ
    a, b = run_batched(int8, x), run_batched(tmp_path / "f.int8.onnx", x)
    assert np.abs(a["logits"] - b["logits"]).max() < 0.1 * np.abs(a["logits"]).max()
    with pytest.raises(FusionError, match="fused already"):
        member_chains(tmp_path / "f.onnx")


@pytest.mark.parametrize("name", ["cxr-pneumonia", "cxr-adult-abnormal",
                                  "fundus-referable-dr"])
def test_shipped_bundles_run_one_fused_graph(name: str) -> None:
    (path,) = (MODELS / name).glob("*/manifest.json")
    manifest = json.loads(path.read_text())
    fused = manifest["validation"]["fused"]
    assert max(fused["fp32_vs_members_max_abs_diff"].values()) < 1e-5
    assert abs(manifest["validation"]["int8_minus_fp32"]) <= manifest["validation"][
        "gate_tolerance"]
    graph = onnx.load(str(path.parent / "model.int8.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert groups[0] == 1 and set(groups[1:]) == {manifest["validation"]["members"]}
