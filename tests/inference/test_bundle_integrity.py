"""Bundles are verified file by file; anything altered is refused with a BundleError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import bundle_dir

from appliance.errors import ApplianceError, BundleError
from appliance.inference.bundle import (
    BundleIntegrityError,
    BundleNotFoundError,
    ManifestError,
    find_bundles,
    load_bundle,
)

MODELS = Path(__file__).resolve().parents[2] / "models"
CXR = bundle_dir("cxr-pneumonia")


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "cxr-pneumonia" / CXR.name
    shutil.copytree(CXR, dest)
    return dest


def test_committed_bundles_load_and_verify() -> None:
    found = find_bundles(MODELS)
    assert {p.parent.name for p in found} >= {
        "cxr-pneumonia", "cxr-adult-abnormal", "fundus-referable-dr", "modality-router"}
    for path in found:
        bundle = load_bundle(path)
        assert bundle.file("model.int8.onnx").is_file()
        assert len(bundle.sha256("model.int8.onnx")) == 64


def test_one_flipped_byte_is_refused(bundle_copy: Path) -> None:
    model = bundle_copy / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="model.int8.onnx sha256 mismatch") as info:
        load_bundle(bundle_copy)
    assert isinstance(info.value, BundleError) and isinstance(info.value, ApplianceError)


def test_edited_model_card_is_refused_too(bundle_copy: Path) -> None:
    card = bundle_copy / "MODEL_CARD.md"
    card.write_text(card.read_text() + "\nbetter than a radiologist!\n")
    with pytest.raises(BundleIntegrityError, match="MODEL_CARD.md"):
        load_bundle(bundle_copy)


def test_missing_and_unlisted_files_are_refused(bundle_copy: Path, tmp_path: Path) -> None:
    extra = bundle_copy / "model.fp16.onnx"
    extra.write_bytes(b"x")
    with pytest.raises(BundleIntegrityError, match="not in the manifest"):
        load_bundle(bundle_copy)
    extra.unlink()
    (bundle_copy / "MODEL_CARD.md").unlink()
    with pytest.raises(BundleIntegrityError, match="listed but missing"):
        load_bundle(bundle_copy)


def test_manifest_problems(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError):
        load_bundle(tmp_path / "nowhere")
    manifest = bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        load_bundle(bundle_copy)
    manifest.write_text(json.dumps({k: v for k, v in data.items() if k != "calibration"}))
    with pytest.raises(ManifestError, match="calibration"):
        load_bundle(bundle_copy)
    data["files"]["../../etc/passwd"] = {"sha256": "0" * 64}
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleIntegrityError, match="leaves the bundle"):
        load_bundle(bundle_copy)
