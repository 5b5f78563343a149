"""What a recipe provides to the build pipeline (``build/pipeline.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from models.training.train import BatchFn, TrainConfig


@dataclass
class Prepared:
    """Data ready for training: a batch maker for train, fixed arrays for validation."""

    n_train: int
    make_batch: BatchFn
    val_x: np.ndarray                      # preprocessed, N x C x H x W float32
    val_y: np.ndarray                      # class index per image
    calibration_x: np.ndarray              # real *training* images for INT8 calibration
    counts: dict[str, Any]                 # for the model card
    sample_weights: np.ndarray | None = None
    val_sources: list[str] = field(default_factory=list)  # per val image, for breakdowns


class Recipe(Protocol):
    name: str                  # bundle folder, e.g. "cxr-pneumonia"
    version: str
    task: str
    modality: str
    labels: list[str]          # index -> label; binary: [negative, positive]
    num_outputs: int           # 1 for binary (one logit), K for K-class softmax
    input_shape: tuple[int, int, int]
    preprocessing: Mapping[str, Any]   # {"function": ..., "params": {...}}
    train_config: TrainConfig
    provenance: Mapping[str, Any]
    limitations: list[str]
    targets: Mapping[str, float]

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared: ...

    def build_model(self) -> nn.Module: ...
