"""The programme's images for ``build/retrain.py``: read, checked, and made model inputs.

Reads the layout ``appliance hub training-set`` writes (``OUT/train`` and
``OUT/locked_test``, each ``images/`` and ``labels.csv``; see docs/learning.md), or a
box's exports as ``appliance training export`` writes them (each verified against its
signed manifest). A folder is refused whole, naming the file and row, when it is
neither. Pixels
are decoded by the box's own decoder (``appliance.ingest.decode``) and turned into model
inputs by the bundle's own preprocessing (``appliance.inference.preprocess``); training
inserts the recipe's augmentations where the recipe does (``models/training``).
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.preprocess import (
    enhance_fundus,
    fundus_disc,
    preprocess,
    squash,
    to_grey,
)
from appliance.wire.csv_safe import FORMULA_STARTS
from appliance.wire.training_export import MANIFEST, TrainingExportError
from appliance.wire.training_verify import verify_export

COLUMNS = ("file", "label", "label_source", "model", "patient_key", "site", "taken_on")
SPLITS = {"train": "train", "locked-test": "locked_test"}


class RetrainError(RuntimeError):
    """The retrain cannot run as asked: missing or malformed data, an unknown model."""


@dataclass(frozen=True)
class Example:
    """One labelled image of the programme's set."""

    path: Path
    label: int
    label_source: str
    site: str
    patient_key: str
    taken_on: str

    @property
    def sha256(self) -> str:
        return self.path.stem


def _plain(cell: str) -> str:
    """A cell as the exporter meant it: csv_safe's apostrophe before a formula removed."""
    return cell[1:] if cell.startswith("'") and cell[1:2] in FORMULA_STARTS else cell


def split_folders(folder: Path, split: str) -> tuple[list[Path], bool]:
    """(folders holding a labels.csv, whether they are box exports) for ``folder``:

    - ``folder`` itself when it holds labels.csv (a split of a training set);
    - its ``train``/``locked_test`` (what ``appliance hub training-set`` writes);
    - the exports in it (what ``appliance training export --to`` writes: one folder per
      export, each verified whole against its signed manifest first).
    """
    folder = Path(folder)
    if (folder / "labels.csv").is_file():
        return [folder], (folder / MANIFEST).is_file()
    inner = folder / SPLITS[split]
    if (inner / "labels.csv").is_file():
        return [inner], False
    exports = sorted(p.parent for p in folder.glob(f"*/{MANIFEST}")
                     if not p.parent.name.startswith("."))
    if exports:
        for export in exports:
            try:
                verify_export(export)
            except TrainingExportError as exc:
                raise RetrainError(f"{export}: {exc}") from exc
        return exports, True
    raise RetrainError(f"--{'data' if split == 'train' else split} {folder}: no labels.csv "
                       f"there nor in {inner}, and no export (expected the folder `appliance "
                       "hub training-set` or `appliance training export` writes)")


def read_examples(folder: Path, split: str, model: str) -> list[Example]:
    """Every row of the split's labels.csv, checked; RetrainError naming the row if not.
    A box's export may hold several models' images: the other models' rows are skipped."""
    bases, exported = split_folders(folder, split)
    examples = [e for base in bases for e in _read_labels(base, model, exported)]
    if not examples:
        where = bases[0] / "labels.csv" if len(bases) == 1 else folder
        raise RetrainError(f"{where}: no images" + (f" of {model}" if exported else ""))
    return examples


def _read_labels(base: Path, model: str, exported: bool) -> list[Example]:
    with open(base / "labels.csv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RetrainError(f"{base / 'labels.csv'}: missing columns {missing}")
        rows = list(reader)
    examples = []
    root = base.resolve()
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{base / 'labels.csv'} line {number}"
        row = {k: _plain(v or "") for k, v in row.items()}
        if row["model"] != model:
            if exported:
                continue
            raise RetrainError(f"{where}: model {row['model']!r}, not {model!r}")
        if row["label"] not in ("0", "1"):
            raise RetrainError(f"{where}: label {row['label']!r} is not 0 or 1")
        path = (base / row["file"]).resolve()
        if root not in path.parents or not path.is_file():
            raise RetrainError(f"{where}: image {row['file']!r} is not in {base}")
        examples.append(Example(path, int(row["label"]), row["label_source"],
                                row["site"] or "(no site)", row["patient_key"],
                                row["taken_on"]))
    return examples


def read_sets(data: list[Path], locked: Path, model: str
              ) -> tuple[list[Example], list[Example]]:
    """(train, locked test) for ``model``. Refused when a locked-test image or patient is
    also in train (the test would not be a test), or a set lacks a class."""
    train = [e for folder in data for e in read_examples(folder, "train", model)]
    train = list({e.sha256: e for e in train}.values())  # one image in two --data dirs
    test = read_examples(locked, "locked-test", model)
    shared = {e.sha256 for e in train} & {e.sha256 for e in test}
    if shared:
        raise RetrainError(f"{len(shared)} locked-test images are also in the training data "
                           f"(e.g. {sorted(shared)[0]}): the locked test is never trained on")
    patients = {(e.site, e.patient_key) for e in train} & {(e.site, e.patient_key)
                                                           for e in test}
    if patients:
        raise RetrainError(f"{len(patients)} patients have images in both the training data "
                           "and the locked test: a patient belongs to one split")
    for name, examples in (("training data", train), ("locked test", test)):
        if len({e.label for e in examples}) < 2:
            raise RetrainError(f"the {name} holds one class only ({len(examples)} images "
                               f"labelled {examples[0].label}): both are needed")
    return train, test


def describe(examples: list[Example]) -> dict[str, Any]:
    """Sites, counts and dates of a set: what a bundle's manifest says it was made from."""
    sites: dict[str, Counter] = {}
    for e in examples:
        c = sites.setdefault(e.site, Counter())
        c["images"] += 1
        c["positives"] += e.label
        c["review_labels"] += e.label_source == "review"
    dates = sorted(e.taken_on for e in examples if e.taken_on)
    return {"images": len(examples), "positives": sum(e.label for e in examples),
            "patients": len({(e.site, e.patient_key) for e in examples}),
            "sites": {s: dict(c) for s, c in sorted(sites.items())},
            "dates": {"first": dates[0], "last": dates[-1]} if dates else None}


def fingerprint(examples: list[Example]) -> str:
    """Short digest of the images and their labels (names a retrained version)."""
    text = "\n".join(sorted(f"{e.sha256}:{e.label}" for e in examples))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def decode01(path: Path) -> np.ndarray:
    """The box's decoder: float32 in [0, 1], grey HxW or RGB HxWx3."""
    from appliance.ingest.decode import decode_file

    return decode_file(path).pixels


@dataclass
class Inputs:
    """How one model's images become inputs: ``keep`` (decoded image -> what is held in
    memory for training), ``augmented`` (held, rng -> one training input) and ``served``
    (decoded image -> the input the box gives the model)."""

    keep: Callable[[np.ndarray], np.ndarray]
    augmented: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    served: Callable[[np.ndarray], np.ndarray]


def model_inputs(spec: dict[str, Any]) -> Inputs:
    """The recipe's inputs for a bundle's ``preprocessing`` spec."""
    params = dict(spec["params"])

    def served(image: np.ndarray) -> np.ndarray:
        return preprocess(spec, image)

    if spec["function"] == "fundus_preprocess":
        from models.training.augment import augment_camera
        from models.training.fundus import augment_rotation

        size, threshold = params["size"], params["threshold"]

        def keep(image: np.ndarray) -> np.ndarray:
            # as models/training/fundus.py: the disc crop at twice the input size, so the
            # camera changes act on real detail; float16 halves the memory (8-bit photos)
            return fundus_disc(image, 2 * size, threshold).astype(np.float16)

        def augmented(held: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            camera = augment_camera(held.astype(np.float32), rng)
            return augment_rotation(enhance_fundus(camera, **params), rng)

        return Inputs(keep, augmented, served)
    if spec["function"] in ("cxr_preprocess", "cxr_equalised_preprocess"):
        from models.training.augment import augment_radiograph

        def keep_film(image: np.ndarray) -> np.ndarray:
            return squash(to_grey(image), 4 * params["size"])

        def augmented_film(held: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return preprocess(spec, augment_radiograph(held, rng))

        return Inputs(keep_film, augmented_film, served)
    raise RetrainError(f"no retraining recipe for preprocessing {spec['function']!r}")


# -- the project's own report splits, where the shared data is present --------------


@dataclass
class ReportSet:
    name: str      # the bundle's evaluation row it re-measures
    x: np.ndarray  # served inputs
    y: np.ndarray


def report_sets(model: str, spec: dict[str, Any], data_root: Path, tests_data: Path
                ) -> tuple[list[ReportSet], str]:
    """The images behind the bundle's report rows (never trained on by the shipped
    version), and where they came from; ([], why) where they are not here."""
    if model == "fundus-referable-dr":
        from models.training.augment import CAMERA_PROFILES, as_camera
        from models.training.data import fundus_files, split_by_group
        from models.training.fundus import REPORT_FRACTION, REPORT_SALT

        if not (Path(data_root) / "fundus" / "idrid" / "labels.csv").is_file():
            return [], f"{data_root}/fundus/idrid not found"
        files = fundus_files(Path(data_root))
        report = split_by_group(files.groups, REPORT_FRACTION, REPORT_SALT)
        images = [decode01(files.paths[i]) for i in np.flatnonzero(report)]
        y = files.labels[report]
        sets = [ReportSet("report split (IDRiD photos never trained on)",
                          np.stack([preprocess(spec, im) for im in images]), y)]
        sets += [ReportSet(f"report split as another camera: {name}",
                           np.stack([preprocess(spec, as_camera(im, prof)) for im in images]), y)
                 for name, prof in CAMERA_PROFILES.items()]
        return sets, f"{data_root}/fundus/idrid (the recipe's report split)"
    if model == "cxr-pneumonia":
        folder = Path(tests_data) / "cxr64"
        if not (folder / "labels.csv").is_file():
            return [], f"{folder} not found"
        with open(folder / "labels.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        x = np.stack([preprocess(spec, decode01(folder / r["file"])) for r in rows])
        return ([ReportSet("report split (tests/data/cxr64 copy)", x,
                           np.array([int(r["pneumonia"]) for r in rows]))],
                f"{folder} (a copy of report-split radiographs)")
    return [], f"no copy of {model}'s report split is kept outside the shared data"
