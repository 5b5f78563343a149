"""ONNX Runtime runner: the default backend, the same on a laptop and on the box.

Polygraphy-style: a context manager whose ``infer(feed) -> dict`` checks input names,
ranks, fixed dimensions and dtypes against the model before running it, so a caller
mistake is a clear ``ValueError`` instead of an opaque runtime error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
}


class OnnxRunner:
    """``with OnnxRunner(path) as r: out = r.infer({"input": x})``."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        threads: int | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        self.model_path = Path(model_path)
        self.threads = threads
        self.providers = providers
        self._session: Any = None

    def __enter__(self) -> OnnxRunner:
        import onnxruntime as ort  # why: keep `import appliance.inference` light

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: ORT's notices are not ours to show
        # why: ORT's pool threads spin for a while after each run. On a 2-core box running
        # the listener, the hot folder and other workers beside it, that spinning took
        # the CPU the next image needed (issue 28: 8.1-8.4 -> 15.4-15.5 mixed images/s
        # with it off, the rest unchanged).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=opts, providers=list(self.providers)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._session = None

    @property
    def input_metadata(self) -> dict[str, tuple[list[Any], Any]]:
        """name -> (shape with None/str for dynamic dims, numpy dtype)."""
        return {i.name: (list(i.shape), _ORT_TYPES.get(i.type)) for i in self._inputs()}

    def _inputs(self) -> list[Any]:
        if self._session is None:
            raise RuntimeError("OnnxRunner used outside its `with` block")
        return list(self._session.get_inputs())

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        meta = self.input_metadata
        if set(feed) != set(meta):
            raise ValueError(f"inputs {sorted(feed)} do not match the model's {sorted(meta)}")
        for name, arr in feed.items():
            shape, dtype = meta[name]
            if dtype is not None and arr.dtype != dtype:
                raise ValueError(f"{name}: dtype {arr.dtype}, model wants {np.dtype(dtype)}")
            if arr.ndim != len(shape) or any(
                isinstance(d, int) and d != a for d, a in zip(shape, arr.shape, strict=True)
            ):
                raise ValueError(f"{name}: shape {arr.shape}, model wants {shape}")
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, feed), strict=True))


def run_batched(
    model_path: Path | str,
    x: np.ndarray,
    *,
    batch_size: int = 64,
    input_name: str = "input",
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Run a whole array through a model in batches; outputs concatenated."""
    parts: dict[str, list[np.ndarray]] = {}
    with OnnxRunner(model_path, threads=threads) as runner:
        for i in range(0, len(x), batch_size):
            for k, v in runner.infer({input_name: x[i : i + batch_size]}).items():
                parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}
