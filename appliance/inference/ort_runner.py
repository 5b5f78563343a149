"""The default backend: ONNX Runtime on the CPU, one session per model, reused."""

from __future__ import annotations

import numpy as np

from appliance.inference.bundle import Bundle
from appliance.inference.onnx_runner import OnnxRunner
from appliance.inference.runner import Runner

PRECISION_FILES = {"int8": "model.int8.onnx", "fp32": "model.onnx"}


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, *, precision: str = "int8", threads: int = 0) -> None:
        super().__init__(bundle)
        if precision not in PRECISION_FILES:
            raise ValueError(f"precision must be one of {sorted(PRECISION_FILES)}")
        self.precision = precision
        self.threads = threads
        self._session: OnnxRunner | None = None

    @property
    def model_file(self) -> str:
        return PRECISION_FILES[self.precision]

    def activate(self) -> None:
        self._session = OnnxRunner(self.bundle.file(self.model_file), threads=self.threads or None)
        self._session.__enter__()

    def deactivate(self) -> None:
        if self._session is not None:
            self._session.__exit__(None, None, None)
            self._session = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        return self._session.infer(feed)
