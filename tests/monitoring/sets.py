"""The real images of the monitoring tests (import as ``from monitoring.sets import ...``).

- children: 400 Kermany radiographs of the report split (no model trains on them), at
  that split's own share of pneumonia; split into two halves by patient (``half``);
- adults: 98 NIH adult films of the NIH report split (fold 0);
- fundus cameras: 30 IDRiD photos (Kowa) and 11 HRF photos (Canon), 512 px.

How they were chosen: ``tests/data/monitoring/select_images.py``.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from helpers import TESTS

DATA = TESTS / "data"


@dataclass(frozen=True)
class Labelled:
    path: Path
    positive: bool
    group: str

    @property
    def name(self) -> str:
        return self.path.name


def _read(folder: Path, column: str, group: str) -> list[Labelled]:
    with open(folder / "labels.csv", newline="") as fh:
        return [
            Labelled(folder / row["file"], row[column] == "1", row[group])
            for row in csv.DictReader(fh)
        ]


def children() -> list[Labelled]:
    found = _read(DATA / "cxr64", "pneumonia", "patient_key")
    found += _read(DATA / "cxr64" / "site", "pneumonia", "patient_key")
    return sorted(found, key=lambda item: item.name)


def half(items: list[Labelled], which: int) -> list[Labelled]:
    """A patient's images all in one half, by a hash of the patient (not by label)."""

    def side(item: Labelled) -> int:
        return int(hashlib.sha256(item.group.encode()).hexdigest(), 16) % 2

    return [item for item in items if side(item) == which]


def adults() -> list[Labelled]:
    return sorted(_read(DATA / "nih64", "abnormal", "patient_id"), key=lambda item: item.name)


def fundus(camera: str) -> list[Path]:
    """``idrid`` or ``hrf``."""
    return sorted((DATA / "fundus" / "cameras" / camera).glob("*.jpg"))


def copy_to(items, folder: Path) -> Path:
    """A folder holding these images (as a USB stick or a lab's share would)."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        path = item.path if isinstance(item, Labelled) else item
        shutil.copyfile(path, folder / path.name)
    return folder
