"""What a recipe provides to the build pipeline (``build/pipeline.py``).

Every bundle is an ensemble of members trained by cross-fitting: the recipe splits its
training pool into folds (by patient, image or whole source), member k never sees fold
k, so every pool image gets an out-of-fold score from a model that did not train on it.
Calibration and the shipped threshold are fitted on those out-of-fold scores; the
``report`` set and the ``external`` sets (other sources) take no part in any choice and
are what the model card reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from models.training.train import BatchFn, TrainConfig


@dataclass
class EvalSet:
    """Preprocessed images with labels, scored by the finished ensemble."""

    name: str
    x: np.ndarray                          # N x C x H x W float32
    y: np.ndarray                          # class index per image
    note: str = ""                         # what the set is, in words, for the card
    sources: list[str] = field(default_factory=list)  # per image, for per-source tables


@dataclass
class Prepared:
    """Data ready for cross-fitting."""

    n_train: int                           # pool size; make_batch takes pool indices
    make_batch: BatchFn
    folds: np.ndarray                      # fold of every pool image (0..K-1)
    oof_index: np.ndarray                  # pool images scored out-of-fold (served task)
    oof_x: np.ndarray                      # their preprocessed inputs
    oof_y: np.ndarray                      # their labels
    report: EvalSet                        # never trained on, never used for a choice
    calibration_x: np.ndarray              # real *training* images for INT8 calibration
    counts: dict[str, Any]                 # for the model card
    sample_weights: np.ndarray | None = None
    external: list[EvalSet] = field(default_factory=list)  # other sources (LOSO)
    oof_sources: list[str] = field(default_factory=list)   # per out-of-fold image
    # out-of-fold images that are real films as the box would see them (not mixed for a
    # check): the drift reference is drawn from these only (None: all of them)
    oof_reference: np.ndarray | None = None


class Recipe(Protocol):
    name: str                  # bundle folder, e.g. "cxr-pneumonia"
    version: str
    task: str
    modality: str
    loso: str                  # build/loso.py --model <loso>: its choices, source by source
    labels: list[str]          # index -> label; binary: [negative, positive]
    num_outputs: int           # served outputs: 1 for binary (one logit), K for K-class
    serving_heads: list[int] | None   # member outputs served (None: all of them)
    input_shape: tuple[int, int, int]
    preprocessing: Mapping[str, Any]   # {"function": ..., "params": {...}}
    train_config: TrainConfig
    provenance: Mapping[str, Any]
    population: str            # who the model is for, in words (model card)
    never_shown: list[str]     # what the model never saw in training, in words
    limitations: list[str]
    targets: Mapping[str, float]

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared: ...

    def build_model(self) -> nn.Module: ...
