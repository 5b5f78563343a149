"""build/compile_tensorrt.py against the TensorRT stand-in (see trt_standin.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import bundle_dir
from trt_standin import make_standin

from appliance.inference.bundle import load_bundle
from build.compile_tensorrt import main

CXR = bundle_dir("cxr-pneumonia")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(CXR, tmp_path / "cxr"))


def test_compiles_the_int8_model_named_by_its_sha(bundle: Path, tmp_path: Path) -> None:
    trt, rec = make_standin("10.3.0")
    engines = tmp_path / "engines"
    assert (
        main([str(bundle), "--engine-dir", str(engines), "--compute-capability", "8.7"], trt=trt)
        == 0
    )
    sha = load_bundle(bundle).sha256("model.int8.onnx")
    assert (engines / f"{sha[:16]}_trt10.3.0_sm87_int8_b2.engine").is_file()
    assert (engines / "timing.cache").is_file()
    assert rec.strongly_typed and rec.flags == set()  # the QDQ graph's types decide
    assert rec.profiles == [{"input": ((1, 1, 64, 64), (1, 1, 64, 64), (8, 1, 64, 64))}]


def test_tampered_bundle_is_not_compiled(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = bundle / "model.int8.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    trt, rec = make_standin()
    assert (
        main(
            [str(bundle), "--engine-dir", str(tmp_path / "e"), "--compute-capability", "8.7"],
            trt=trt,
        )
        == 1
    )
    assert "sha256 mismatch" in capsys.readouterr().err
    assert rec.builds == 0
