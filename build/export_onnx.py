"""PyTorch -> ONNX export with a fixed opset, dynamic batch and the CAM as 2nd output,
then onnx's checker and a parity check against PyTorch on validation images."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from appliance.inference.onnx_runner import run_batched

OPSET = 17  # why: supported by TensorRT 10.3's ONNX parser and by every current ORT
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "cam")


class ParityError(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond tolerance."""


def export_onnx(model: torch.nn.Module, path: Path, input_shape: tuple[int, ...],
                doc: str = "") -> None:
    """Export ``model`` (eval mode) and validate the file with onnx's full checker."""
    model.eval()
    dummy = torch.zeros(2, *input_shape)
    dynamic = {n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # why: the TorchScript exporter is deprecated in favour of the dynamo one, which
        # needs onnxscript; the legacy one is deterministic and folds BatchNorm for us.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic, do_constant_folding=True)
    proto = onnx.load(str(path))
    proto.doc_string = doc
    proto.producer_name = "clinic-screening-appliance build/pipeline.py"
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def check_parity(model: torch.nn.Module, onnx_path: Path, x: np.ndarray,
                 atol: float = 1e-3) -> dict[str, float]:
    """Max |ORT - PyTorch| per output on ``x``; raises ParityError beyond ``atol``."""
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    got = run_batched(onnx_path, x, batch_size=64)
    diffs = {name: float(np.abs(got[name] - r).max()) for name, r in zip(OUTPUT_NAMES, ref,
                                                                          strict=True)}
    bad = {k: v for k, v in diffs.items() if v > atol}
    if bad:
        raise ParityError(f"ONNX Runtime vs PyTorch differ beyond {atol}: {bad}")
    return diffs
