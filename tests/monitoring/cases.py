"""Known scores and confirmatory results for calibration tests (import as
``from monitoring.cases import ...``): results of the installed child chest model
written through the store's own ``insert_result``, outcomes through the CSV import."""

from __future__ import annotations

import numpy as np
from helpers import bundle_dir

from appliance.inference.bundle import read_manifest
from appliance.monitoring import outcome_import
from appliance.screening.models import CXR
from appliance.store.db import utc_now
from appliance.store.results import insert_result

VERSION = read_manifest(bundle_dir(CXR))["version"]


def scored(
    store, scores, *, version: str = VERSION, threshold: float = 0.5, model: str = CXR
) -> list[str]:
    """One image per score with a result of the installed child chest model (through the
    store's own insert_result); returns the images' file names."""
    names = []
    offset = store.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0]
    with store.write() as conn:
        for n, score in enumerate(scores, start=offset):
            study = conn.execute(
                "INSERT INTO studies (study_instance_uid, created_at) VALUES (?, ?)",
                (f"2.25.{n}", utc_now()),
            ).lastrowid
            image = conn.execute(
                "INSERT INTO images (study_id, file_format, source, original_name, sha256,"
                " size_bytes, stored_path, received_at, state)"
                " VALUES (?, 'png', 'usb', ?, ?, 1, '', ?, 'decoded')",
                (study, f"img{n}.png", f"{n:064x}", utc_now()),
            ).lastrowid
            result = {
                "route": "chest_xray",
                "probability": float(score),
                "score": int(round(score * 100)),
                "threshold": threshold,
                "triage": "review" if score >= threshold else "routine",
                "model": {"name": model, "version": version, "sha256": "0" * 64},
            }
            insert_result(conn, image, None, result, None)
            names.append(f"img{n}.png")
    return names


def confirm(store, names, labels) -> None:
    rows = "".join(
        f"{name},xpert,{'positive' if y else 'negative'},2024-05-01\n"
        for name, y in zip(names, labels, strict=True)
    )
    report = outcome_import.import_csv(
        store,
        "original_name,test,result,date\n" + rows,
        entered_by="lab",
        source="csv",
        match_days=14,
    )
    assert report.ok, report.problems


def population(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.15), 0.001, 0.999).round(4)
    return scores, labels
