"""How long each stage of screening one image took (``ScreeningResult.timings_ms``)."""

from __future__ import annotations

import time
from contextlib import contextmanager


class Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000
