"""Shadow screening: an installed version screens each new image beside the active one.

The shadow runs the very same pipeline (gate, quality, pre- and post-processing) with
one model swapped for its shadow version, so the comparison is of models, not of code
paths. What it finds is only returned here; the worker stores it in ``shadow_results``
(never ``results``), so it is never shown, reviewed or synced as the result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from appliance.ingest.decode import DecodedImage
from appliance.screening.models import ROUTER, LoadedModel, ModelSet
from appliance.screening.pipeline import Screener, ScreeningResult

log = logging.getLogger(__name__)


class ShadowView:
    """A model set with one name answered by its shadow version."""

    def __init__(self, models: ModelSet, name: str) -> None:
        self._models = models
        self._name = name

    def get(self, name: str) -> LoadedModel | None:
        if name == self._name:
            return self._models.shadows.get(name)
        return self._models.get(name)


@dataclass
class ShadowResult:
    name: str
    version: str
    active_version: str | None
    result: dict[str, Any]
    ms: float


def screen_in_shadow(
    screener: Screener,
    models: ModelSet,
    image: DecodedImage,
    tags: dict[str, Any],
    active: ScreeningResult,
    population: str | None = None,
) -> list[ShadowResult]:
    """Each shadow version that concerns this image (the router's always; a screening
    model's when the active set used that model) screens it; a shadow that fails is
    logged and skipped, never the image's problem."""
    found = []
    used = (active.model or {}).get("name")
    for name, shadow in models.shadows.items():
        if name != ROUTER and name != used:
            continue
        started = time.perf_counter()
        try:
            result = screener.screen(
                image, tags, None, population=population, models=ShadowView(models, name),
                map_now=False,  # a shadow's map is never shown
            )
        except Exception:
            log.exception("shadow %s %s failed on an image", name, shadow.bundle.version)
            continue
        running = models.get(name)
        found.append(
            ShadowResult(
                name,
                shadow.bundle.version,
                running.bundle.version if running else None,
                result.as_dict(),
                (time.perf_counter() - started) * 1000,
            )
        )
    return found
