"""One small runner interface for every inference backend (Polygraphy-style).

    with open_runner(bundle, backend="auto") as runner:
        outputs = runner.infer({"input": batch})   # {"logits": ..., "cam": ...}

``infer`` checks the feed against the bundle's manifest (input name, rank, fixed
dimensions, dtype; the batch dimension is free) before any backend sees it, and returns
exactly the outputs the manifest lists, so every backend answers the same questions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from appliance.inference.bundle import Bundle


class InferenceInputError(ValueError):
    """A feed that does not match the model's declared input."""


def check_feed(manifest: dict[str, Any], feed: dict[str, np.ndarray]) -> None:
    spec = manifest["input"]
    if set(feed) != {spec["name"]}:
        raise InferenceInputError(
            f"inputs {sorted(feed)} do not match the model's [{spec['name']!r}]"
        )
    array = feed[spec["name"]]
    if array.dtype != np.dtype(spec["dtype"]):
        raise InferenceInputError(
            f"{spec['name']}: dtype {array.dtype}, model wants {spec['dtype']}"
        )
    shape = spec["shape"]
    if array.ndim != len(shape) or any(
        isinstance(want, int) and want != got for want, got in zip(shape, array.shape, strict=True)
    ):
        raise InferenceInputError(f"{spec['name']}: shape {array.shape}, model wants {shape}")


class Runner(ABC):
    """A loaded model on one backend. Subclasses implement activate/deactivate/_infer."""

    backend: ClassVar[str]

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.input_name: str = bundle.manifest["input"]["name"]
        self.output_names: list[str] = list(bundle.manifest["outputs"])
        self.active = False

    def __enter__(self) -> Runner:
        if not self.active:
            self.activate()
            self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self.deactivate()
            self.active = False

    @abstractmethod
    def activate(self) -> None:
        """Load the model (once): create the session / deserialize the engine."""

    @abstractmethod
    def deactivate(self) -> None:
        """Release what activate() took."""

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the checked feed; return at least the manifest's outputs."""

    @property
    def model_sha256(self) -> str:
        """sha256 of the model file this runner serves (from the verified manifest)."""
        return self.bundle.sha256(self.model_file)

    @property
    @abstractmethod
    def model_file(self) -> str:
        """The bundle file this runner serves, e.g. ``model.int8.onnx``."""

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.active:
            raise RuntimeError(f"{type(self).__name__} used outside its `with` block")
        check_feed(dict(self.bundle.manifest), feed)
        outputs = self._infer(feed)
        missing = [name for name in self.output_names if name not in outputs]
        if missing:
            raise RuntimeError(f"{self.backend} returned no {', '.join(missing)}")
        return {name: outputs[name] for name in self.output_names}
