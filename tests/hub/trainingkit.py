"""A box's training export as the contract writes it (/ docs/learning.md, issue 27), for
the hub's tests: real test X-rays re-encoded as PNG, labels.csv, a signed manifest."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.cli import main
from appliance.wire.csv_safe import safe_row
from appliance.wire.model_signature import public_text
from appliance.wire.training_export import LABEL_COLUMNS

TESTS = Path(__file__).resolve().parents[1]
XRAYS = sorted((TESTS / "data" / "cxr64").glob("*.png")) + sorted(
    (TESTS / "data" / "tbx64").glob("*.png")
)
MODEL = "cxr-adult-abnormal"
SECRET_HEX = "5e" * 32  # a fixed programme secret: the tests know who is in the locked test
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def xray(n: int) -> np.ndarray:
    """The n-th real test X-ray's grey pixels."""
    return cv2.imread(str(XRAYS[n]), cv2.IMREAD_GRAYSCALE)


def near_copy(pixels: np.ndarray) -> np.ndarray:
    """The same picture saved again elsewhere: rescaled down and up, a little brighter."""
    h, w = pixels.shape[:2]
    small = cv2.resize(pixels, (w * 7 // 8, h * 7 // 8), interpolation=cv2.INTER_AREA)
    again = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.int16) + 6
    return np.clip(again, 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


@dataclass(eq=False)  # an item is itself: compared by identity
class Item:
    """One image of an export and its label row."""

    pixels: np.ndarray
    patient: str  # the patient id on the box; the export holds its salted key only
    label: int = 0
    label_source: str = "outcome"
    model: str = MODEL
    taken_on: str = "2025-02-20"
    outcome_test: str = "Xpert MTB/RIF"
    score: float = 50.0
    data: bytes | None = None  # the PNG's bytes as written, where not png(pixels)


@dataclass
class Box:
    """A box that exports: its device id, site, export key and patient-key salt."""

    device_id: str = "dev-a"
    site: str = "Clinic A"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    salt: bytes = b"box-a-salt"
    exports: int = 0

    def patient_key(self, patient: str) -> str:
        return hmac.new(self.salt, patient.encode(), hashlib.sha256).hexdigest()[:32]

    def export(self, root: Path, items: list[Item], *, model: str | None = None) -> Path:
        """Write one export under ``root`` as the contract says; its folder."""
        created = T0 + timedelta(days=self.exports)
        self.exports += 1
        export_id = f"{self.device_id}-{created.strftime('%Y%m%dT%H%M%SZ')}"
        partial = root / f".partial-{export_id}"
        (partial / "images").mkdir(parents=True)
        files, rows = {}, []
        for item in items:
            data = item.data or png(item.pixels)
            sha = hashlib.sha256(data).hexdigest()
            (partial / "images" / f"{sha}.png").write_bytes(data)
            files[f"images/{sha}.png"] = sha
            rows.append(self._row(item, sha))
        labels = io.StringIO(newline="")
        writer = csv.writer(labels, lineterminator="\r\n")
        writer.writerow(LABEL_COLUMNS)
        writer.writerows(safe_row(row) for row in rows)
        labels_bytes = labels.getvalue().encode("utf-8")
        (partial / "labels.csv").write_bytes(labels_bytes)
        files["labels.csv"] = hashlib.sha256(labels_bytes).hexdigest()
        manifest = {
            "format": "appliance-training-export",
            "version": 1,
            "export_id": export_id,
            "device_id": self.device_id,
            "site": self.site,
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "model": model,
            "since": None,
            "consent_policy": "always",
            "public_key": public_text(self.key),
            "counts": {
                "images": len(files) - 1,
                "labelled": sum(i.label_source == "outcome" for i in items),
                "weak": sum(i.label_source == "review" for i in items),
            },
            "files": files,
            "warnings": [],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True, indent=1).encode("utf-8")
        (partial / "manifest.json").write_bytes(manifest_bytes)
        signature = base64.b64encode(self.key.sign(manifest_bytes))
        (partial / "manifest.sig").write_bytes(signature + b"\n")
        final = root / export_id
        os.replace(partial, final)
        return final

    def _row(self, item: Item, sha: str) -> list:
        return [
            f"images/{sha}.png", item.label, item.label_source, item.outcome_test, item.model,
            "adult", "", item.score, "1.2.0", self.patient_key(item.patient), self.site,
            self.device_id, item.taken_on,
        ]  # fmt: skip


def hub_cli(hub_dir: Path, database_url: str, *args: str):
    """``appliance hub ARGS --data-dir HUB [--database-url URL]`` in this process."""
    extra = ["--database-url", database_url] if database_url else []
    return CliRunner().invoke(
        main,
        ["hub", *args, "--data-dir", str(hub_dir), *extra],
        env={"APPLIANCE_DATA_DIR": None, "APPLIANCE_HUB_DATABASE_URL": None},
    )


def fix_secret(database) -> None:
    """The programme secret set before any import, so the tests' splits are known."""
    database.migrate()
    conn = database.connect()
    try:
        conn.execute(
            "INSERT INTO hub_meta (key, value) VALUES ('training_split_secret', ?)",
            (SECRET_HEX,),
        )
    finally:
        conn.close()


def read_labels(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
