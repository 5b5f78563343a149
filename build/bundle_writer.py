"""Write a bundle folder: models, MODEL_CARD.md, then manifest.json with every sha256.

The folder is assembled beside its final place and renamed into it, so a failed build
never leaves a half-written bundle that the appliance could pick up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.inference.bundle import MANIFEST, SCHEMA_VERSION, file_sha256, load_bundle

INTENDED_USE = ("Decision support, not a diagnosis: a screening aid that flags images for "
                "review by a trained clinician. Never use it to rule disease in or out alone.")


def write_bundle(dest: Path, manifest: Mapping[str, Any], files: Mapping[str, Path],
                 card: str) -> Path:
    """Create ``dest`` (replacing an older build of the same version) and verify it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name, src in files.items():
            shutil.copyfile(src, staging / name)
        (staging / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        listed = {}
        for path in sorted(staging.iterdir()):
            listed[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        full = {"schema_version": SCHEMA_VERSION, **manifest, "files": listed}
        (staging / MANIFEST).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        load_bundle(staging)  # the reader must accept what the writer wrote
        staging.chmod(0o755)  # why: mkdtemp makes it private; a bundle is for everyone
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(staging, dest)
            shutil.rmtree(old)
        else:
            os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _fmt_ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} (95% CI {ci[0]:.3f}–{ci[1]:.3f})"


def render_card(manifest: Mapping[str, Any], limitations: list[str]) -> str:
    """MODEL_CARD.md from the manifest's own numbers (one source of truth)."""
    v = manifest["validation"]
    prov = manifest["provenance"]
    lines = [
        f"# {manifest['name']} {manifest['version']}", "",
        f"**Task:** {manifest['task']}  ", f"**Modality:** {manifest['modality']}  ",
        f"**Labels:** {', '.join(manifest['labels'])}  ",
        f"**Intended use:** {manifest['intended_use']}", "",
        "## Data", "",
    ]
    for d in prov["training_data"]:
        lines.append(f"- {d['dataset']} — licence {d['licence']}. {d.get('citation', '')}")
    lines += ["", f"Split: {prov['validation']}.", "",
              "Counts: " + ", ".join(f"{k} {val}" for k, val in v["counts"].items()), "",
              "## Validation metrics", "",
              "Bootstrap 95% confidence intervals (1000 resamples, stratified by class). "
              "Validation images were never trained on, but the same images fitted the "
              "calibration and the operating-point table, so these are estimates from one "
              "site, not external performance.", "",
              "| model | metric | value |", "|---|---|---|"]
    for precision in ("fp32", "int8"):
        for metric, value in v[precision].items():
            if metric.endswith("_ci95"):
                continue
            ci = v[precision].get(f"{metric}_ci95")
            text = _fmt_ci(value, ci) if ci else f"{value:.4f}"
            lines.append(f"| {precision} | {metric} | {text} |")
    lines += ["", f"INT8 − FP32 gate metric: {v['int8_minus_fp32']:+.4f} (gate: within "
              f"±{v['gate_tolerance']}).", ""]
    extra = v.get("notes")
    if extra:
        lines += [f"- {n}" for n in extra] + [""]
    op = manifest["operating_points"]
    lines += ["## Operating points", "", op["description"], ""]
    if op.get("suggested"):
        s = op["suggested"]
        lines += [f"Suggested: {s['why']} — threshold {s['threshold']}"
                  + (f", sensitivity {s['sensitivity']:.3f}, specificity "
                     f"{s['specificity']:.3f}" if "sensitivity" in s else ""), ""]
    lines += ["The full table is in `manifest.json` (`operating_points.table`).", "",
              "## Calibration", "",
              f"`{json.dumps(manifest['calibration'])}`", "",
              "## Targets", "", json.dumps(manifest.get("targets", {})), "",
              "## Limitations", ""]
    lines += [f"- {item}" for item in limitations]
    lines += ["", "## Rebuild", "", f"`{manifest['training']['command']}`", ""]
    return "\n".join(lines)
