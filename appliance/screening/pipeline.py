"""One image through the models: fitness gate -> quality -> preprocess -> infer -> post.

Everything here is computation on arrays already in memory; the worker does the I/O
(reading the original, writing the heatmap and the result row). Preprocessing is the
bundle's own spec applied by the same pure functions training used.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from appliance.config import CONFIG_FILE, Config, load_config
from appliance.errors import ApplianceError
from appliance.inference.postprocess import calibrated_probabilities, heatmap, operating_point
from appliance.inference.preprocess import find_fundus_disc, preprocess
from appliance.ingest.decode import DecodedImage
from appliance.screening import gate
from appliance.screening.measures import image_measures
from appliance.screening.models import (
    FUNDUS,
    ROUTER,
    THRESHOLD_SETTINGS,
    LoadedModel,
    ModelSet,
)
from appliance.screening.population import (
    OPERATOR,
    check_site_setting,
    choose_population,
    population_caution,
)
from appliance.screening.quality import assess_fundus

log = logging.getLogger(__name__)

DECISION_SUPPORT = "Decision support, not a diagnosis: a clinician reviews every result."
# A negative result's heatmap is scaled by this many logit units, not by its own peak,
# so faint evidence stays faint instead of looking like a finding.
NEGATIVE_HEAT_SCALE = 4.0

# A chest X-ray without an age, where the site asks staff to choose adult or child
# (chest_population = "ask"): not screened until they do.
NEEDS_POPULATION = "Adult or child? Choose on the study page to screen this X-ray."


class ScreeningUnavailableError(ApplianceError):
    """A model this image needs is not loaded (see /healthz or appliance doctor)."""


@dataclass
class ScreeningResult:
    route: str
    reason: str | None = None
    hints: list[str] = field(default_factory=list)
    probability: float | None = None
    score: int | None = None
    threshold: float | None = None
    triage: str | None = None
    model: dict[str, str] | None = None
    population: str | None = None  # chest X-rays: adult or child, the model that scored
    population_source: str | None = None  # dicom_age, operator, cli or site_setting
    route_source: str | None = None  # what decided the route: gate.BY_*
    needs_population: bool = False  # no age and the site asks: staff choose, then screen
    backend: str | None = None
    router: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    evidence: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    image_stats: dict[str, Any] | None = None  # what drift monitoring compares
    heatmap: np.ndarray | None = None  # RGBA uint8 overlay, or None

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "heatmap"}
        data["router"] = {k: round(v, 4) for k, v in self.router.items()}
        data["timings_ms"] = {k: round(v, 2) for k, v in self.timings_ms.items()}
        data["decision_support"] = DECISION_SUPPORT
        return data


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


class Screener:
    def __init__(self, models: ModelSet, config: Config) -> None:
        check_site_setting(config.chest_population)  # a typo stops start-up, saying why
        self.models = models
        self.config = config
        self._config_mtime = self._config_file_mtime()

    def _config_file_mtime(self) -> int | None:
        try:
            return (self.config.data_dir / CONFIG_FILE).stat().st_mtime_ns
        except OSError:
            return None

    def _reread_thresholds(self) -> None:
        """Site thresholds written by another process (``appliance calibrate --apply``
        while the box runs) apply to the next image, without a restart."""
        mtime = self._config_file_mtime()
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            fresh = load_config(self.config.data_dir)
        except ApplianceError as exc:  # half-edited by hand: keep what works
            log.error("config.toml not re-read: %s", exc)
            return
        for setting in THRESHOLD_SETTINGS.values():
            self.config.values[setting] = getattr(fresh, setting)

    @property
    def ready(self) -> bool:
        return self.models.get(ROUTER) is not None

    def threshold(self, model: LoadedModel) -> float:
        self._reread_thresholds()
        setting = THRESHOLD_SETTINGS.get(model.bundle.name)
        chosen = getattr(self.config, setting) if setting else 0.0
        return chosen or float(model.bundle.manifest["operating_points"]["suggested"]["threshold"])

    def urgent_threshold(self, model: LoadedModel, threshold: float) -> float:
        table = model.bundle.manifest["operating_points"]["table"]
        try:
            row = operating_point(table, min_specificity=self.config.urgent_min_specificity)
        except ValueError:
            return 1.01  # no row that specific: nothing is urgent by score alone
        return max(float(row["threshold"]), threshold)

    def screen(
        self,
        image: DecodedImage,
        tags: dict[str, Any],
        overlay_size: tuple[int, int] | None = None,
        *,
        population: str | None = None,
        population_by: str = OPERATOR,
        route: str | None = None,
    ) -> ScreeningResult:
        """``population``: adult or child, as staff chose (``population_by``: operator
        or cli) for an X-ray without an age; the age the image gives always wins.
        ``route``: chest_xray or fundus, as a clinician chose for an image the router
        refused (gate.decide: the tags still refuse what they rule out)."""
        timer = Timer()
        router = self.models.get(ROUTER)
        if router is None:
            raise ScreeningUnavailableError("the modality router model is not loaded")
        with timer.stage("gate"):
            manifest = router.bundle.manifest
            batch = preprocess(manifest["preprocessing"], image.pixels)[None]
            with router.lock:  # the backend may be swapped (TensorRT ready) between images
                logits = router.infer(batch)["logits"]
                router_backend = router.runner.backend
            probs = calibrated_probabilities(logits, manifest["calibration"])[0]
            router_probs = {
                label: float(p) for label, p in zip(manifest["labels"], probs, strict=True)
            }
            min_conf = self.config.router_min_confidence or float(
                manifest["operating_points"]["suggested"]["threshold"]
            )
            decision = gate.decide(router_probs, tags, min_conf, chosen=route)
            measures = image_measures(image.pixels)  # for drift monitoring, every image
        result = ScreeningResult(
            decision.route,
            decision.reason,
            decision.hints,
            router=router_probs,
            evidence=decision.evidence,
            backend=router_backend,
            image_stats=measures,
            route_source=decision.source,
        )
        if decision.route == gate.REFUSED:
            result.timings_ms = timer.ms
            return result

        if decision.route == gate.FUNDUS:
            with timer.stage("quality"):
                quality = assess_fundus(image.pixels)
            result.quality = quality.as_dict()
            if not quality.gradable:
                result.route = gate.REFUSED
                result.route_source = gate.BY_QUALITY
                result.reason = "Photo not gradable: " + quality.messages[0]
                result.hints = quality.messages
                result.timings_ms = timer.ms
                return result

        name = FUNDUS
        if decision.route == gate.CHEST:
            chosen = choose_population(
                tags.get("patient_age_years"),
                population,
                population_by,
                self.config.chest_population,
            )
            result.population, result.population_source = chosen.name, chosen.source
            if chosen.model is None:
                result.needs_population = True
                result.reason = NEEDS_POPULATION
                result.timings_ms = timer.ms
                return result
            name = chosen.model
            caution = population_caution(chosen, tags.get("patient_age_years"))
            if caution:
                result.hints.append(caution)
        model = self.models.get(name)
        if model is None:
            raise ScreeningUnavailableError(f"the {name} model is not loaded")
        manifest = model.bundle.manifest
        with timer.stage("preprocess"):
            batch = preprocess(manifest["preprocessing"], image.pixels)[None]
        with timer.stage("infer"):
            with model.lock:
                outputs = model.infer(batch)
                backend, identity = model.runner.backend, model.identity
        with timer.stage("postprocess"):
            probability = float(
                calibrated_probabilities(outputs["logits"], manifest["calibration"])[0]
            )
            threshold = self.threshold(model)
            urgent = self.urgent_threshold(model, threshold)
            result.probability = probability
            result.score = int(round(probability * 100))
            result.threshold = threshold
            result.triage = (
                "urgent"
                if probability >= urgent
                else "review"
                if probability >= threshold
                else "routine"
            )
            result.model = identity
            result.backend = backend
            if overlay_size is not None:
                result.heatmap = render_overlay(
                    outputs["cam"][0, 0],
                    image,
                    overlay_size,
                    positive=probability >= threshold,
                    fundus_params=manifest["preprocessing"]["params"] if name == FUNDUS else None,
                )
        result.timings_ms = timer.ms
        return result


def render_overlay(
    cam: np.ndarray,
    image: DecodedImage,
    size: tuple[int, int],
    *,
    positive: bool,
    fundus_params: dict[str, Any] | None = None,
) -> np.ndarray:
    """The class activation map as an RGBA overlay of ``size`` (width, height), aligned
    with the preview: warm colours where the model saw evidence, transparent elsewhere."""
    width, height = size
    scale = None if positive else max(float(cam.max()), NEGATIVE_HEAT_SCALE)
    if fundus_params is None:  # the chest model saw the whole radiograph, squashed
        heat = heatmap(cam, height, width, scale=scale)
    else:  # the fundus model saw the disc crop: put its map back where the disc is
        cx, cy, radius = find_fundus_disc(image.pixels, fundus_params.get("threshold", 0.15))
        k = width / image.pixels.shape[1]
        side = max(1, int(round(2 * radius * k)))
        crop_heat = heatmap(cam, side, side, scale=scale)
        heat = np.zeros((height, width), np.float32)
        x0, y0 = int(round((cx - radius) * k)), int(round((cy - radius) * k))
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        w = min(width - dx0, side - sx0)
        h = min(height - dy0, side - sy0)
        if w > 0 and h > 0:
            heat[dy0 : dy0 + h, dx0 : dx0 + w] = crop_heat[sy0 : sy0 + h, sx0 : sx0 + w]
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    rgba = np.dstack([cv2.cvtColor(colour, cv2.COLOR_BGR2RGB), (heat * 180).astype(np.uint8)])
    return rgba
