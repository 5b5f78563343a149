"""One image through the models: fitness gate -> quality -> preprocess -> infer -> post.

A frame the router refused gets a second look at the part that matters
(``second_look``: a retina's small field cut from black). A chest film is screened
without its flat border (``film_border``): collimation is no finding.

Everything here is computation on arrays already in memory; the worker does the I/O
(reading the original, writing the heatmap and the result row). Preprocessing is the
bundle's own spec applied by the same pure functions training used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.config import CONFIG_FILE, Config, load_config
from appliance.errors import ApplianceError
from appliance.inference.postprocess import calibrated_probabilities, operating_point
from appliance.inference.preprocess import fundus_frame, preprocess
from appliance.ingest.decode import DecodedImage
from appliance.screening import gate, heatmaps
from appliance.screening.film_border import cut, exposed_box
from appliance.screening.heatmaps import HEATMAP_NOT_SHOWN, HeatSource, heat_source, render_overlay
from appliance.screening.measures import image_measures, is_blank
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
from appliance.screening.second_look import look_again
from appliance.screening.timing import Timer
from appliance.wire.codes import finding_meaning

log = logging.getLogger(__name__)

DECISION_SUPPORT = "Decision support, not a diagnosis: a clinician reviews every result."

# A chest X-ray without an age, where the site asks staff to choose adult or child
# (chest_population = "ask"): not screened until they do.
NEEDS_POPULATION = "Adult or child? Choose on the study page to screen this X-ray."
# A retina photo the quality check refused, screened on a clinician's word (issue 26).
OVERRULED_QUALITY = (
    "Screened although the photo was judged not gradable (%(problem)s), on the instruction "
    "of %(user)s: read the result with care."
)


def _route(router: LoadedModel, pixels: np.ndarray,
           resized: dict | None = None) -> tuple[dict[str, float], str]:
    """The router's calibrated probabilities for an image, and the backend that ran it."""
    manifest = router.bundle.manifest
    batch = preprocess(manifest["preprocessing"], pixels, resized=resized)[None]
    with router.lock:  # the backend may be swapped (TensorRT ready) between images
        logits = router.infer(batch)["logits"]
        backend = router.runner.backend
    probs = calibrated_probabilities(logits, manifest["calibration"])[0]
    return {label: float(p) for label, p in zip(manifest["labels"], probs, strict=True)}, backend


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
    heatmap: np.ndarray | None = None  # RGBA uint8 overlay (validated maps only), or None
    heat: HeatSource | None = None  # what any map of this result is drawn from
    map_input: heatmaps.MapInput | None = None  # what its map still needs (draw_map)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("heatmap", "heat", "map_input")}
        data["heatmap_validated"] = None if self.heat is None else self.heat.validated
        data["router"] = {k: round(v, 4) for k, v in self.router.items()}
        data["timings_ms"] = {k: round(v, 2) for k, v in self.timings_ms.items()}
        data["finding"] = finding_name(self.model, self.probability)
        data["flagged"] = (None if self.probability is None or self.threshold is None
                           else self.probability >= self.threshold)
        data["decision_support"] = DECISION_SUPPORT
        return data


def finding_name(model: dict[str, str] | None, probability: float | None) -> str | None:
    """What the scoring model looks for ("TB-consistent findings"), named as the SR, FHIR
    and the hub name it; None where no model scored."""
    if not model or probability is None:
        return None
    return finding_meaning(model.get("name"), model.get("version"), model.get("name"))


class Screener:
    def __init__(self, models: ModelSet, config: Config) -> None:
        check_site_setting(config.chest_population)  # a typo stops start-up, saying why
        self.models = models
        self.config = config
        self._config_mtime = self._config_file_mtime()
        self._config_lock = threading.Lock()  # workers re-read the site's file one at a time
        # Model sets swapped in by reload_if_changed; each is closed when no job uses it.
        self._swap = threading.Lock()
        self._users: dict[int, int] = {}
        self._retired: list[ModelSet] = []
        self._loading: threading.Thread | None = None
        self._failed_generation: int | None = None
        self.on_swap: list[Callable[[ModelSet], None]] = []  # e.g. the engine refresher
        self.last_swap_ms: float | None = None  # how long the last swap held jobs back

    @contextmanager
    def use(self) -> Iterator[ModelSet]:
        """The model set one job screens with, start to finish: an activation meanwhile
        swaps in a new set for the next job, and this one is closed once no job uses it."""
        with self._swap:
            models = self.models
            self._users[id(models)] = self._users.get(id(models), 0) + 1
        try:
            yield models
        finally:
            with self._swap:
                self._users[id(models)] -= 1
                self._close_retired()

    def _close_retired(self) -> None:
        for old in [m for m in self._retired if not self._users.get(id(m))]:
            self._retired.remove(old)
            self._users.pop(id(old), None)
            old.close()

    def reload_if_changed(self, generation: int) -> None:
        """Load the model set chosen at ``generation`` in the background when it is not
        the one running; jobs go on with the running set until the new one is whole."""
        with self._swap:
            if (
                generation == self.models.generation
                or generation == self._failed_generation
                or self._loading is not None
            ):
                return
            self._loading = threading.Thread(
                target=self._load, args=(generation,), name="models-reload", daemon=True
            )
            self._loading.start()

    def _load(self, generation: int) -> None:
        try:
            fresh = ModelSet(self.config, self.models._log).load()
            lost = sorted(set(fresh.errors) - set(self.models.errors))
            if lost:  # keep screening with what works; the activation is audited already
                log.error("new model set not used, %s would not load: %s", lost, fresh.errors)
                fresh.close()
                self._failed_generation = generation
                return
            swap_started = time.perf_counter()
            with self._swap:
                old, self.models = self.models, fresh
                self._retired.append(old)
                self._close_retired()
            self.last_swap_ms = (time.perf_counter() - swap_started) * 1000
            log.info("models now %s (shadow %s)", fresh.versions(), list(fresh.shadows))
            for callback in self.on_swap:
                callback(fresh)
        except Exception:
            log.exception("model reload failed; screening goes on with the running set")
            self._failed_generation = generation
        finally:
            self._loading = None

    def wait_for_reload(self, timeout: float = 60.0) -> None:
        loading = self._loading
        if loading is not None:
            loading.join(timeout)

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
        # The file's time is taken as seen only once its values are in: a second worker
        # that arrives meanwhile waits here, not screening with the old threshold.
        with self._config_lock:
            if mtime == self._config_mtime:
                return
            try:
                fresh = load_config(self.config.data_dir)
            except ApplianceError as exc:  # half-edited by hand: keep what works
                log.error("config.toml not re-read: %s", exc)
            else:
                for setting in THRESHOLD_SETTINGS.values():
                    self.config.values[setting] = getattr(fresh, setting)
            self._config_mtime = mtime

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
        models: ModelSet | None = None,
        route: str | None = None,
        quality_overruled_by: str | None = None,
        map_now: bool = True,
    ) -> ScreeningResult:
        """``population``: adult or child, as staff chose (``population_by``: operator
        or cli) for an X-ray without an age; the age the image gives always wins.
        ``models``: the set to screen with (a job's, or a shadow view), else the running one.
        ``route``: chest_xray or fundus, as a clinician chose for an image the router
        refused (gate.decide: the tags still refuse what they rule out).
        ``quality_overruled_by``: the clinician who had a retina photo screened although
        the quality check refuses it (store/routes.py): screened, with a hint saying so.
        ``map_now``: False leaves the shown map and overlay to :meth:`draw_map`."""
        timer = Timer()
        models = self.models if models is None else models
        router = models.get(ROUTER)
        if router is None:
            raise ScreeningUnavailableError("the modality router model is not loaded")
        with timer.stage("gate"):
            manifest = router.bundle.manifest
            router_probs, router_backend = _route(router, image.pixels, image.resized)
            min_conf = self.config.router_min_confidence or float(
                manifest["operating_points"]["suggested"]["threshold"]
            )
            # for drift monitoring, every image
            measures = image_measures(image.pixels, image.resized)
            decision = gate.decide(router_probs, tags, min_conf, chosen=route,
                                   blank=is_blank(measures))
            second = look_again(decision, tags, image.pixels, min_conf,
                                lambda pixels: _route(router, pixels)[0])
            decision, frame = second.decision, second.frame
            router_probs = second.router or router_probs
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
                frame = frame if frame is not None else fundus_frame(image.pixels)
                quality = assess_fundus(image.pixels, frame=frame)
            result.quality = quality.as_dict()
            if not quality.gradable and quality_overruled_by:
                result.hints = [
                    OVERRULED_QUALITY % {"problem": quality.messages[0],
                                         "user": quality_overruled_by}
                ]
            elif not quality.gradable:
                result.route = gate.REFUSED
                result.route_source = gate.BY_QUALITY
                result.reason = "Photo not gradable: " + quality.messages[0]
                result.hints = quality.messages
                result.timings_ms = timer.ms
                return result

        name, pixels, box = FUNDUS, image.pixels, None
        if decision.route == gate.CHEST:
            # the exposed film only: a collimation or padding border is no finding
            box = exposed_box(image.pixels, image.resized)
            if box is not None:
                pixels = cut(image.pixels, box)
                result.evidence.append("the film's flat border was left out of the screening")
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
        model = models.get(name)
        if model is None:
            raise ScreeningUnavailableError(f"the {name} model is not loaded")
        manifest = model.bundle.manifest
        with timer.stage("preprocess"):
            x = preprocess(
                manifest["preprocessing"], pixels, frame,
                image.resized if pixels is image.pixels else None,
            )
        with timer.stage("infer"):
            with model.lock:
                outputs = model.infer(x[None])
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
            result.heat = heat_source(
                outputs["cam"][0, 0],
                image.pixels,
                manifest,
                positive=probability >= threshold,
                fundus=name == FUNDUS,
                frame=frame,
                box=box,
            )
            result.map_input = heatmaps.map_input(model, x, manifest)
            if not result.heat.validated:  # the score only, and why (page, slip, sync)
                result.hints.append(HEATMAP_NOT_SHOWN)
            elif map_now:
                self.draw_map(result, image.pixels.shape[:2], overlay_size)
        result.timings_ms = timer.ms
        return result

    def draw_map(self, result: ScreeningResult, image_hw: tuple[int, int],
                 overlay_size: tuple[int, int] | None) -> None:
        """Finish the result's map (a shift-averaged one runs its input's copies now) and
        the page's overlay. The worker calls it once the result is stored: the clinic
        waits for the score, and a map can be drawn again from the original."""
        result.heat, result.map_input = heatmaps.finish(result.heat, result.map_input), None
        if result.heat is not None and result.heat.validated and overlay_size is not None:
            result.heatmap = render_overlay(result.heat, image_hw, overlay_size)
