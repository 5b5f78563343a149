"""Shared by the PACS tests: a stored image with a result, as the worker leaves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from appliance.store.results import insert_result

CHEST_RESULT = {
    "route": "chest_xray",
    "probability": 0.8123,
    "score": 81,
    "threshold": 0.42,
    "triage": "urgent",
    "model": {"name": "cxr-pneumonia", "version": "1.1.0", "sha256": "0" * 64},
    "backend": "onnxruntime",
}


def stored_result(store, importer, path: Path, result: dict | None = None,
                  heatmap_path: str | None = None) -> int:
    """Import ``path`` and store a result for it with a preview, in one transaction as
    the worker does (the real insert_result: outbox rows included); returns its id.
    ``heatmap_path``: the overlay the row names (the worker writes it just after)."""
    outcome = importer.import_path(path, source="dicom")
    image_id = outcome.image_id
    preview = Path("previews") / f"{image_id}.jpg"
    grey = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (300, 1))
    Image.fromarray(grey).save(store.data_dir / preview)
    with store.write() as conn:
        conn.execute("UPDATE images SET preview_path = ? WHERE id = ?", (str(preview), image_id))
        return insert_result(conn, image_id, None, result or CHEST_RESULT, heatmap_path)


def sr_values(dataset) -> dict[str, object]:
    """Concept meaning -> value for every NUM, TEXT and CODE item in an SR (any depth)."""
    found: dict[str, object] = {}

    def walk(items) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            if item.ValueType == "NUM":
                found[name] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "TEXT":
                found.setdefault(name, [])
                found[name].append(item.TextValue)  # type: ignore[union-attr]
            elif item.ValueType == "CODE":
                found[name] = item.ConceptCodeSequence[0].CodeMeaning
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(dataset.ContentSequence)
    return found
