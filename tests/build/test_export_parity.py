"""Export: opset, dynamic batch, the CAM output, and ORT-vs-PyTorch parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")

from appliance.inference.onnx_runner import run_batched  # noqa: E402
from build.export_onnx import OPSET, ParityError, check_parity, export_onnx  # noqa: E402
from models.training.nets import CamNet  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    torch.manual_seed(0)
    model = CamNet(3, widths=(4, 8, 8), num_outputs=2).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("export") / "m.onnx"
    export_onnx(model, path, (3, 32, 32), doc="test")
    return model, path


def test_exported_graph_has_fixed_opset_and_dynamic_batch(exported: tuple) -> None:
    _, path = exported
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    assert [o.name for o in proto.graph.output] == ["logits", "cam"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}


def test_parity_on_several_batch_sizes(exported: tuple) -> None:
    model, path = exported
    x = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    diffs = check_parity(model, path, x, atol=1e-4)
    assert diffs["logits"] < 1e-4 and diffs["cam"] < 1e-4
    out = run_batched(path, x, batch_size=3)  # batches of 3, 3, 1
    # the CAM really is the map whose spatial mean is the logits
    np.testing.assert_allclose(out["cam"].mean(axis=(2, 3)), out["logits"], atol=1e-5)


def test_parity_catches_a_wrong_export(exported: tuple, tmp_path: Path) -> None:
    model, path = exported
    proto = onnx.load(str(path))
    init = proto.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ParityError, match="differ beyond"):
        check_parity(model, broken, x)
