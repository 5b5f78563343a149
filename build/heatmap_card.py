"""A bundle's heatmap verdict: ``models/heatmaps/<bundle>.json`` (written by
``build/heatmap_checks.py``, committed) -> the manifest's ``heatmap`` entry and the
card's "Heatmaps" section.

``build/pipeline.py`` calls :func:`heatmap_entry` and :func:`card_section` whenever it
writes a card and manifest (build or ``--recard``), so a re-card keeps the section;
:func:`patch_bundle` patches an installed bundle in place and may run any number of
times (it replaces its own section). The verdict counts only for the model file it was
measured on: a rebuilt model's maps are "not validated" until the checks run again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.inference.bundle import MANIFEST, file_sha256, load_bundle

REPO = Path(__file__).resolve().parents[1]
HEATMAPS_DIR = REPO / "models" / "heatmaps"
SECTION = "## Heatmaps"
CARD = "MODEL_CARD.md"


def heatmap_entry(name: str, model_sha256: str,
                  heatmaps_dir: Path = HEATMAPS_DIR) -> dict[str, Any]:
    """The manifest's ``heatmap`` entry for a model file (not validated when no checks
    were run on that very file)."""
    path = Path(heatmaps_dir) / f"{name}.json"
    measured = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if name == "modality-router":  # it only routes: no finding for a map to point at
        return {"validated": False, "checks": {}, "method": None, "measured_on": None,
                "why": "the router only decides which model screens an image; it has no "
                       "finding to point at, so its map is never shown"}
    if measured is None or measured.get("model_sha256") != model_sha256:
        return {"validated": False, "checks": {}, "method": None, "measured_on": None,
                "why": "the heatmap checks (build/heatmap_checks.py) were not run on "
                       "this model file"}
    keep = ("validated", "checks", "method", "measured_on", "scale_logits", "report_auc",
            "command", "model_sha256", "shift_average_px")
    return {k: measured[k] for k in keep if k in measured}


def _ratio(d: Mapping[str, Any]) -> str:
    ratio = "random raised it" if d["ratio"] is None else f"ratio {d['ratio']:.2f}"
    return f"{ratio}; map wins on {d['win_rate']:.0%} of images"


def _odd_shift(f: Mapping[str, Any]) -> str:
    odd = f.get("shift_correlation_odd")
    return "" if odd is None else f" (one pixel less: {odd:.3f})"


def _inside_floor(f: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    boxes = f.get("boxes_mass_inside")
    if boxes is None or not c.get("mass_inside_at_most_boxes") or boxes >= c["min_mass_inside"]:
        return str(c["min_mass_inside"])
    return (f"{boxes:.3f}: the radiologists' own boxes on these films reach that much, "
            f"less than {c['min_mass_inside']}")


def card_section(entry: Mapping[str, Any]) -> str:
    """The card's "Heatmaps" section from the manifest's entry (one source of truth)."""
    lines = [SECTION, ""]
    if not entry.get("checks"):
        return "\n".join(lines + ["Heatmaps are **off**: " + entry.get("why", "not checked")
                                  + ". The box shows the score only.", ""])
    f, p, c = (entry["checks"][k] for k in ("figures", "passed", "criteria"))
    verdict = ("**shown**: every check below passed." if entry["validated"] else
               "**off**: the page, the slip and sync show the score only, with a line "
               "saying why. Failed: " + ", ".join(k for k, ok in p.items() if not ok) + ".")
    def ok(key: str) -> str:
        return "pass" if p[key] else "**fail**"

    def deletion_rule(ratio: float) -> str:
        return (f"drop > 0, ratio ≥ {ratio} (or random ≤ 0), wins ≥ "
                f"{c['min_deletion_win_rate']:.0%}")
    chest = "lung" in f["region"]
    boxed = f.get("boxes_area") is not None
    lines += [
        f"Heatmaps are {verdict}", "",
        f"Method: {entry['method']}.", "",
        f"Measured on: {entry['measured_on']} (`{entry['command']}`). "
        + ("The radiologists' boxes of the held-out TB films give the pointing game; the "
           "other checks need no boxes." if boxed else
           "No box-labelled images are available here, so these checks need no boxes; the "
           "pointing game on boxed films is the maintainers' to run with "
           "`appliance screen --heatmap-dir`."), "",
        "| check | figure | needed | result |", "|---|---|---|---|",
        f"| report-split AUC (the score a map explains) | {entry['report_auc']:.3f} | "
        f"≥ {c['min_report_auc']} | {ok('report_auc')} |",
        f"| evidence inside {f['region']} (area {f['region_area']:.2f} of the input) | "
        f"{f['mass_inside']:.3f} | ≥ {_inside_floor(f, c)} | {ok('mass_inside')} |",
        f"| map under a shift of {f['shift_px']} px, shifted back (Pearson r) | "
        f"{f['shift_correlation']:.3f}{_odd_shift(f)} | ≥ {c['min_shift_correlation']} | "
        f"{ok('shift_stability')} |",
        f"| map of the mirrored image, mirrored back (r) | {f['flip_correlation']:.3f} | "
        f"≥ {c['min_flip_correlation']} | {ok('flip_stability')} |",
        f"| deletion, top 10%: logit drop map {f['deletion_10']['drop_map']:.3f} vs random "
        f"{f['deletion_10']['drop_random']:.3f} | {_ratio(f['deletion_10'])} | "
        f"{deletion_rule(c['min_deletion_ratio_10'])} | {ok('deletion_10')} |",
        f"| deletion, top 20%: {f['deletion_20']['drop_map']:.3f} vs "
        f"{f['deletion_20']['drop_random']:.3f} | {_ratio(f['deletion_20'])} | "
        f"{deletion_rule(c['min_deletion_ratio_20'])} | {ok('deletion_20')} |",
        f"| normal images' median peak / abnormal's ({f['peak_median_normal']:.2f} / "
        f"{f['peak_median_abnormal']:.2f} logit) | {f['normal_to_abnormal_peak']} | "
        f"≤ {c['max_normal_to_abnormal_peak']} | {ok('normal_faint')} |",
        *([f"| pointing game: the map's peak inside a radiologist's box, held-out TB films "
           f"(boxes cover {f['boxes_area']:.2f} of the film: chance) | "
           f"{f['pointing_game']:.3f} | ≥ {c['min_pointing_game']} | "
           f"{ok('pointing_game')} |"] if boxed else []),
        "",
        f"{f['n_images']} images ({f['n_abnormal']} abnormal, {f['n_normal']} normal); "
        "figures are means over images (deletion and evidence inside: abnormal images). "
        "Deletion replaces the map's strongest pixels by a heavy blur of the same input; "
        "the random baseline deletes as many pixels of smooth random maps (3 draws). "
        + ("The lung fields are a fixed two-ellipse template placed in each film's body "
           "box, not a segmentation: it includes the heart's shadow where it overlaps, "
           "misses the costophrenic angles and misplaces the fields on rotated or "
           "cropped films. " if chest else
           "The field of view covers two thirds of the input crop, so this check is "
           "weak here: it rules out maps on the black surround, little more. ")
        + "The grey map's 255 is "
        f"{entry.get('scale_logits')} logit (99th percentile of abnormal images' peaks).",
        "",
    ]
    return "\n".join(lines)


def replace_section(card: str, section: str) -> str:
    """``card`` with its "Heatmaps" section replaced by ``section`` (or inserted before
    "## Rebuild", else appended): running twice changes nothing."""
    if SECTION in card:
        start = card.index(SECTION)
        nxt = card.find("\n## ", start + len(SECTION))
        end = len(card) if nxt < 0 else nxt + 1
        return card[:start] + section.rstrip("\n") + "\n\n" + card[end:].lstrip("\n")
    anchor = card.find("## Rebuild")
    if anchor < 0:
        return card.rstrip("\n") + "\n\n" + section
    return card[:anchor] + section.rstrip("\n") + "\n\n" + card[anchor:]


def with_heatmaps(manifest: dict[str, Any], card: str, model_sha256: str,
                  heatmaps_dir: Path = HEATMAPS_DIR) -> str:
    """Set ``manifest["heatmap"]`` for the model file and return ``card`` with its
    Heatmaps section: what ``build/pipeline.py`` does on every build and re-card."""
    manifest["heatmap"] = heatmap_entry(str(manifest["name"]), model_sha256, heatmaps_dir)
    return replace_section(card, card_section(manifest["heatmap"]))


def patch_bundle(bundle_dir: Path, heatmaps_dir: Path = HEATMAPS_DIR) -> dict[str, Any]:
    """Write the heatmap entry into an installed bundle's manifest and card, re-hashing
    the card (manifest.json itself is not hashed: ``verify_files``)."""
    bundle = load_bundle(bundle_dir)
    manifest = dict(bundle.manifest)
    card_path = Path(bundle_dir) / CARD
    card = with_heatmaps(manifest, card_path.read_text(encoding="utf-8"),
                         bundle.sha256("model.int8.onnx"), heatmaps_dir)
    card_path.write_text(card, encoding="utf-8")
    entry = manifest["heatmap"]
    files = dict(manifest.pop("files"))
    files[CARD] = {"sha256": file_sha256(card_path), "bytes": card_path.stat().st_size}
    manifest["files"] = files
    tmp = Path(bundle_dir) / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, Path(bundle_dir) / MANIFEST)
    load_bundle(bundle_dir)  # the reader must accept what was written
    return entry
