"""Model bundles: ``models/<name>/<version>/`` with a ``manifest.json`` that lists the
sha256 of every other file. Loading a bundle verifies every hash before anything is
run, so a corrupted or tampered model is refused rather than silently used.

    BundleError                 (appliance.errors)
    ├── BundleNotFoundError     no manifest where a bundle was expected
    ├── ManifestError           manifest unreadable or missing required fields
    └── BundleIntegrityError    a listed file is missing, unlisted, or its sha256 differs
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import BundleError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
REQUIRED_FIELDS = (
    "schema_version",
    "name",
    "version",
    "task",
    "modality",
    "input",
    "outputs",
    "preprocessing",
    "labels",
    "calibration",
    "operating_points",
    "validation",
    "files",
    "provenance",
    "intended_use",
)


class BundleNotFoundError(BundleError):
    """No manifest.json where a model bundle was expected."""


class ManifestError(BundleError):
    """The manifest cannot be read or lacks a required field."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing, unlisted, or does not match its recorded sha256."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (engines can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle on disk."""

    path: Path
    manifest: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def file(self, key: str) -> Path:
        """Path of a listed file, e.g. ``bundle.file("model.int8.onnx")``."""
        if key not in self.manifest["files"]:
            raise BundleError(f"{self.name} {self.version}: no file {key!r} in the bundle")
        return self.path / key

    def sha256(self, key: str) -> str:
        """Recorded sha256 of a listed file (names TensorRT engines, for one)."""
        return str(self.manifest["files"][key]["sha256"])


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """Parse and shape-check a bundle's manifest without touching the other files."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleNotFoundError(f"no {MANIFEST} in {bundle_dir}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: top level must be an object")
    missing = [f for f in REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise ManifestError(f"{path}: missing fields {', '.join(missing)}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: schema_version {manifest['schema_version']!r}, expected {SCHEMA_VERSION}"
        )
    return manifest


def verify_files(bundle_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Check every listed file's sha256 and that no unlisted file sits beside them."""
    bundle_dir = Path(bundle_dir)
    listed = manifest["files"]
    for rel, meta in listed.items():
        path = bundle_dir / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleIntegrityError(f"{bundle_dir}: file entry {rel!r} leaves the bundle")
        if not path.is_file():
            raise BundleIntegrityError(f"{bundle_dir}: {rel} is listed but missing")
        actual = file_sha256(path)
        if actual != meta["sha256"]:
            raise BundleIntegrityError(
                f"{bundle_dir}: {rel} sha256 mismatch (manifest {meta['sha256'][:12]}…, "
                f"file {actual[:12]}…): the bundle is corrupt or was modified; reinstall it"
            )
    present = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    extra = sorted(present - set(listed) - {MANIFEST})
    if extra:
        raise BundleIntegrityError(f"{bundle_dir}: files not in the manifest: {', '.join(extra)}")


def load_bundle(bundle_dir: Path | str) -> Bundle:
    """Read a bundle's manifest and verify every file; raise a BundleError if not sound."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest)
    return Bundle(path=bundle_dir, manifest=manifest)


def find_bundles(models_dir: Path | str) -> list[Path]:
    """Every ``<name>/<version>/`` folder under ``models_dir`` that holds a manifest."""
    return sorted(p.parent for p in Path(models_dir).glob(f"*/*/{MANIFEST}"))
