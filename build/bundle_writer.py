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


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _band(ci: list[float] | None) -> str:
    return f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""


def _binary_table(rows: list[Mapping[str, Any]]) -> list[str]:
    out = ["| set | n (positive) | AUC (95% CI) | sensitivity | specificity | flagged |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        ci = r.get("ci95_with_threshold_choice", {})
        auc = f"{r['auc']:.3f}{_band(r.get('auc_ci95'))}" if "auc" in r else "—"
        out.append(f"| {r['set']} | {r['n']} ({r['positives']}) | {auc} | "
                   f"{_pct(r['sensitivity'])}{_band(ci.get('sensitivity'))} | "
                   f"{_pct(r['specificity'])}{_band(ci.get('specificity'))} | "
                   f"{_pct(r['flagged'])} |")
    notes = [f"- *{r['set']}*: {r['note']}" for r in rows if r.get("note")]
    cv = [r for r in rows if "cross_validated" in r]
    if cv:
        c = cv[0]["cross_validated"]
        notes.append(f"- Nested check on the pool ({c['how']}): sensitivity "
                     f"{_pct(c['sensitivity'])}, specificity {_pct(c['specificity'])}.")
    return out + [""] + notes


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _router_table(rows: list[Mapping[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        out += [f"**{r['set']}**" + (f" — {r['note']}" if r.get("note") else ""), "",
                "| source | class | n | routed correctly (95% CI) | refused (unsure) | "
                "misrouted |", "|---|---|---|---|---|---|"]
        for s in r["per_source"]:
            lo, hi = wilson(s["correct"] * s["n"], s["n"])
            out.append(f"| {s['source']} | {s['label']} | {s['n']} | {s['correct']:.3f} "
                       f"({lo:.3f}–{hi:.3f}) | {s['refused_unsure']:.3f} | "
                       f"{_pct(s.get('misrouted'))} |")
        out.append("")
    return out


def _generic_table(rows: list[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out = ["| " + " | ".join(k.replace("_", " ") for k in keys) + " |",
           "|" + "---|" * len(keys)]
    for row in rows:
        cells = [row.get(k, "") for k in keys]
        out.append("| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c)
                                     for c in cells) + " |")
    return out


def render_card(manifest: Mapping[str, Any], limitations: list[str], story: str = "") -> str:
    """MODEL_CARD.md from the manifest's own numbers (one source of truth), plus the
    recipe's own account of its choices (``story``)."""
    v = manifest["validation"]
    prov = manifest["provenance"]
    lines = [
        f"# {manifest['name']} {manifest['version']}", "",
        f"**Task:** {manifest['task']}  ", f"**Modality:** {manifest['modality']}  ",
        f"**Labels:** {', '.join(manifest['labels'])}  ",
        f"**Intended population:** {manifest['population']}  ",
        f"**Intended use:** {manifest['intended_use']}", "",
        "## Data", "",
    ]
    for d in prov["training_data"]:
        lines.append(f"- {d['dataset']} — licence {d['licence']}. {d.get('citation', '')}")
    lines += ["", f"Split: {prov['validation']}.", "",
              "Counts: " + ", ".join(f"{k} {val}" for k, val in v["counts"].items()), "",
              "## What this model was never shown", ""]
    lines += [f"- {item}" for item in manifest["never_shown"]]
    binary = manifest["operating_points"]["kind"] == "binary"
    how = ("Calibration and the threshold were fitted on out-of-fold scores only; every "
           "other row is data that took no part in any choice. Intervals are bootstrap "
           "95% CI (1000 resamples); for sensitivity and specificity they include "
           "re-choosing the threshold on each resample." if binary else
           "Its folds hold out whole sources, so every out-of-fold row is a source its "
           "member never saw; the refusal threshold was derived from those rows and is "
           "checked again with the threshold re-chosen without each source's fold. "
           "Intervals are Wilson 95% CI.")
    lines += ["", "## Evaluation: in-source and out-of-source, side by side", "",
              f"The shipped model is an ensemble of {v['members']} members trained by "
              f"cross-fitting. {how}", ""]
    rows = manifest["evaluation"]
    lines += _binary_table(rows) if binary else _router_table(rows)
    lines += ["", f"INT8 − FP32 {v['gate_metric']} on {v['on']}: {v['int8_minus_fp32']:+.4f} "
              f"(gate: within ±{v['gate_tolerance']}).", ""]
    fused = v.get("fused")
    if fused:
        diff = fused["fp32_vs_members_max_abs_diff"]
        # why: one number for the pipeline's single graph, one per graph (by name) for
        # build/fuse_ensemble.py's fused heads
        worst = max(diff.values()) if isinstance(diff, Mapping) else float(diff)
        lines += [f"Served as one graph: the {v['members']} members' convolutions grouped, run "
                  f"as one model; in FP32 it differs from the members run one by one by at "
                  f"most {worst:.1e} logit.", ""]
    if story:
        lines += [story.strip(), ""]
    loso = manifest.get("leave_one_source_out")
    if loso:
        intro = loso.get("intro", "Single models, shorter runs than the shipped ensemble, "
                                  "each scored on a source it never saw")
        lines += [f"## {loso.get('title', 'Leave-one-source-out checks of each choice')}", "",
                  f"{intro} (`{loso['command']}`):", ""]
        lines += _generic_table(loso["rows"]) + [""]
        notes = loso.get("notes", [])
        lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    op = manifest["operating_points"]
    s = op["suggested"]
    lines += ["## Operating point", "", op["description"], "",
              f"Shipped threshold {s['threshold']}: {s['why']}. A site can choose another "
              "row of `operating_points.table` in Settings.", "",
              "## Calibration", "", f"`{json.dumps(manifest['calibration'])}`", "",
              "## Targets", "", json.dumps(manifest.get("targets", {})), "",
              "## Limitations", ""]
    lines += [f"- {item}" for item in limitations]
    lines += ["", "## Rebuild", "", f"`{manifest['training']['command']}`", ""]
    return "\n".join(lines)
