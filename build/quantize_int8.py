"""Static INT8 quantization in QDQ format, calibrated on real training images.

Symmetric INT8 for weights (per channel) and activations, because that is what
TensorRT's explicit quantization accepts (zero points must be 0) — the same
``model.int8.onnx`` then runs on ONNX Runtime's CPU provider and compiles on a Jetson.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed images to the calibrator in small batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int = 32) -> None:
        self._batches = iter([{input_name: x[i:i + batch_size]}
                              for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(fp32_path: Path, int8_path: Path, calibration_x: np.ndarray,
                  input_name: str = "input",
                  method: CalibrationMethod = CalibrationMethod.MinMax) -> None:
    """Write ``int8_path``: pre-process (shape inference, BN/Conv fusion), then QDQ."""
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped), str(int8_path),
            ArrayCalibrationReader(calibration_x.astype(np.float32), input_name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=method,
            # why: TensorRT 10's ONNX parser takes only INT8/FP8/INT4 into
            # DequantizeLinear; int32 conv biases would make every engine build fail
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "QuantizeBias": False},
        )
