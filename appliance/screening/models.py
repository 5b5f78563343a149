"""The models the box carries, loaded once per process and shared by the workers.

A bundle that fails to load (missing, sha256 mismatch, backend error) is recorded with
its reason and the rest keep working: the box stays up and says so on /healthz and in
``appliance doctor``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import appliance
from appliance.config import Config
from appliance.errors import BundleError
from appliance.inference.bundle import Bundle, find_bundles, load_bundle
from appliance.inference.runner import Runner
from appliance.store.model_versions import ACTIVE, BUNDLED, SHADOW, read_selection

log = logging.getLogger(__name__)

ROUTER = "modality-router"
CXR = "cxr-pneumonia"  # children's chest X-rays (pneumonia pattern)
CXR_ADULT = "cxr-adult-abnormal"  # adults' chest X-rays (abnormal: refer for TB assessment)
FUNDUS = "fundus-referable-dr"
# Each ships in the wheel; without one, that kind of image cannot be screened (its jobs
# fail and say so) while the others go on.
REQUIRED = (ROUTER, CXR, CXR_ADULT, FUNDUS)
# The setting holding each screening model's site threshold (0: the bundle's suggested).
THRESHOLD_SETTINGS = {
    CXR: "cxr_threshold",
    CXR_ADULT: "cxr_adult_threshold",
    FUNDUS: "fundus_threshold",
}


def default_models_dir() -> Path:
    """Bundles shipped in the wheel (appliance/_models) or the source checkout's models/."""
    package = Path(appliance.__file__).parent
    for candidate in (package / "_models", package.parent / "models"):
        if candidate.is_dir() and find_bundles(candidate):
            return candidate
    return package.parent / "models"


def models_dir(config: Config) -> Path:
    return Path(config.models_dir) if config.models_dir else default_models_dir()


def installed_dir(config: Config, name: str, version: str) -> Path:
    """Where an installed (signed, verified) version lives: ``<data_dir>/models/``."""
    return Path(config.data_dir) / "models" / name / version


def version_dir(config: Config, row: dict[str, Any]) -> Path | None:
    """The folder of a ``model_versions`` row: a shipped version where the appliance
    keeps its bundles (the newest shipped one if an upgrade replaced it), an installed
    one under the data dir."""
    if row["source"] == BUNDLED:
        shipped = models_dir(config) / row["name"] / row["version"]
        return shipped if shipped.is_dir() else newest_bundles(models_dir(config)).get(row["name"])
    return installed_dir(config, row["name"], row["version"])


def _version_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.name.split("."))


def newest_bundles(folder: Path) -> dict[str, Path]:
    """name -> newest version's folder."""
    newest: dict[str, Path] = {}
    for path in find_bundles(folder):
        name = path.parent.name
        if name not in newest or _version_key(path) > _version_key(newest[name]):
            newest[name] = path
    return newest


@dataclass
class LoadedModel:
    bundle: Bundle
    runner: Runner
    lock: threading.Lock

    def infer(self, batch: Any) -> dict[str, Any]:
        return self.runner.infer({self.runner.input_name: batch})

    @property
    def identity(self) -> dict[str, str]:
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "sha256": self.runner.model_sha256,
            "file": self.runner.model_file,
        }


def active_bundle_dirs(config: Config) -> dict[str, Path]:
    """name -> folder of the version that screens: the one activated on this box
    (store/model_versions.py), else the newest shipped one."""
    found = newest_bundles(models_dir(config))
    for chosen in read_selection(config.data_dir)[1]:
        folder = version_dir(config, chosen) if chosen["state"] == ACTIVE else None
        if folder is not None:
            found[chosen["name"]] = folder
    return found


class ModelSet:
    """The active version of every model (the newest shipped one, unless another was
    activated: store/model_versions.py) and the versions running in shadow beside them."""

    def __init__(self, config: Config, log_progress=log.info) -> None:
        self.config = config
        self.folder = models_dir(config)
        self.models: dict[str, LoadedModel] = {}
        self.shadows: dict[str, LoadedModel] = {}
        self.errors: dict[str, str] = {}
        self.shadow_errors: dict[str, str] = {}
        self.generation = 0  # model_versions' generation this set was chosen at
        self._log = log_progress

    def load(self) -> ModelSet:
        self.generation, selected = read_selection(self.config.data_dir)
        found: dict[str, Path | None] = dict(newest_bundles(self.folder))
        for chosen in selected:
            if chosen["state"] == ACTIVE and chosen["name"] in REQUIRED:
                found[chosen["name"]] = version_dir(self.config, chosen)
        for name in REQUIRED:
            if found.get(name) is None:
                self.errors[name] = f"no bundle named {name} in {self.folder}"
                continue
            try:
                self.models[name] = self._load_one(found[name])
            except Exception as exc:  # whatever breaks one model, the box stays up
                self.errors[name] = str(exc)
                log.error("model %s not loaded: %s", name, exc)
        for chosen in selected:
            if chosen["state"] != SHADOW or chosen["name"] not in REQUIRED:
                continue
            try:  # a shadow that does not load is reported; screening goes on without it
                self.shadows[chosen["name"]] = self._load_one(version_dir(self.config, chosen))
            except Exception as exc:
                self.shadow_errors[chosen["name"]] = str(exc)
                log.error("shadow %s %s not loaded: %s", chosen["name"], chosen["version"], exc)
        return self

    def _load_one(self, folder: Path) -> LoadedModel:
        bundle = load_bundle(folder)
        return LoadedModel(bundle, self._open(bundle), threading.Lock())

    def _open(self, bundle: Bundle) -> Runner:
        """An active runner that never builds an engine at start-up (minutes on a Jetson,
        past systemd's start timeout): the engine refresher builds them later."""
        from appliance.inference.backends import open_runner
        from appliance.inference.engines.decide import startup_backend

        backend = startup_backend(self.config, bundle)
        for attempt in (backend, "onnxruntime"):
            runner = open_runner(
                bundle,
                backend=attempt,
                precision=self.config.model_precision,
                threads=self.config.inference_threads,
                engine_dir=self.config.data_dir / "engines",
                log=self._log,
            )
            try:
                runner.__enter__()
                return runner
            except Exception as exc:
                if attempt == "onnxruntime" or self.config.inference_backend != "auto":
                    raise
                log.error("%s: engine does not load (%s); using ONNX Runtime", bundle.name, exc)
        raise AssertionError("unreachable")

    def use_bundle(self, folder: Path) -> LoadedModel:
        """Screen with the bundle in ``folder`` instead of the loaded version of the same
        model, in this process only (``appliance screen --bundle``: a candidate checked
        anywhere). Verified as any bundle is (every file's sha256); nothing is recorded."""
        bundle = load_bundle(folder)
        if bundle.name not in REQUIRED:
            raise BundleError(
                f"{folder}: {bundle.name!r} is not a model this box screens with"
                f" ({', '.join(REQUIRED)})"
            )
        loaded = LoadedModel(bundle, self._open(bundle), threading.Lock())
        replaced = self.models.get(bundle.name)
        self.models[bundle.name] = loaded
        self.errors.pop(bundle.name, None)
        if replaced is not None:
            replaced.runner.__exit__(None, None, None)
        return loaded

    def get(self, name: str) -> LoadedModel | None:
        return self.models.get(name)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in REQUIRED:
            if name in self.models:
                model = self.models[name]
                out[name] = {
                    "loaded": True,
                    "version": model.bundle.version,
                    "backend": model.runner.backend,
                    "sha256": model.runner.model_sha256,
                }
            else:
                out[name] = {"loaded": False, "error": self.errors.get(name, "not loaded")}
        return out

    def versions(self) -> dict[str, str]:
        """name -> active version loaded (what a job screened with)."""
        return {name: model.bundle.version for name, model in self.models.items()}

    def close(self) -> None:
        for model in (*self.models.values(), *self.shadows.values()):
            model.runner.__exit__(None, None, None)
        self.models.clear()
        self.shadows.clear()
