"""The manifest and card story of a retrained version that passed the gate.

Same layout as every bundle (``build/bundle_writer.py`` writes and checks it). What
changes from the version it started from: the weights, and every figure measured with
them. What does not: the task, labels, inputs and outputs, preprocessing, intended use,
population, calibration and the shipped threshold. The manifest names the data it was
made from (sites, counts, dates) and the gate's figures (``retraining``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from build.evaluate import binary_report
from build.metrics import operating_points


def retrained_manifest(args: Any, recipe: Any, shipped: dict[str, Any], bundle: Any,
                       result: dict[str, Any], parity: dict[str, float], *,
                       new_probs: np.ndarray, y_test: np.ndarray
                       ) -> tuple[dict[str, Any], str]:
    from build.export_onnx import OPSET
    from build.pipeline import _versions, reference_distribution

    threshold = shipped["operating_points"]["suggested"]["threshold"]
    train, test = result["data"]["train"], result["data"]["locked_test"]
    where = (f"locked test split ({test['images']} images of {len(test['sites'])} sites, "
             "never trained on)")
    sites = ", ".join(f"{s} ({c['images']})" for s, c in train["sites"].items())
    dates = train["dates"] or {"first": "?", "last": "?"}
    new = {k: v for k, v in shipped.items() if k != "heatmap"}
    new["version"] = result["version"]
    new["calibration"] = {**shipped["calibration"],
                          "fitted_on": f"kept from {shipped['version']}: "
                                       f"{shipped['calibration'].get('fitted_on', '')}"}
    new["operating_points"] = {
        **shipped["operating_points"],
        "description": "Positive when calibrated probability >= threshold; the table's "
                       "sensitivity/specificity are measured on the programme's locked "
                       "test split (never trained on). The shipped threshold is kept.",
        "table": operating_points(y_test, new_probs),
        "suggested": {"threshold": threshold,
                      "why": f"kept from {shipped['version']}: "
                             f"{shipped['operating_points']['suggested']['why']}"},
    }
    int8 = result["int8"]
    new["validation"] = {
        "fp32": {"auc": int8["fp32_auc"]}, "int8": {"auc": int8["int8_auc"]},
        "on": where, "gate_metric": "auc", "int8_minus_fp32": int8["delta"],
        "gate_tolerance": 0.01, "parity_max_abs_diff": parity,
        "counts": {"train_images": train["images"], "train_positives": train["positives"],
                   "locked_test_images": test["images"],
                   "locked_test_positives": test["positives"]},
        "members": shipped["validation"]["members"],
        "fused": {"graph": "one graph: the members' convolutions grouped "
                           "(models/training/fused.py)",
                  "fp32_vs_members_max_abs_diff": {"logits": 0.0, "cam": 0.0},
                  "fp32_means": "fine-tuned as one grouped graph; each member's loss on "
                                "its own logit"},
    }
    rows = [binary_report(where, y_test, new_probs, threshold,
                          note="the programme's own images; the gate's figures")]
    rows += [{"set": r["set"], "n": r["n"], "positives": r["positives"], "auc": r["new_auc"],
              "sensitivity": r["new_sensitivity"], "specificity": r["new_specificity"],
              "flagged": None,
              "note": f"the project's report split: {shipped['version']} had AUC "
                      f"{r['active_auc']}"}
             for r in result["report_splits"]["rows"]]
    new["evaluation"] = rows
    new["reference"] = reference_distribution(new_probs, threshold)
    new["training"] = {
        "command": args.command, "seed": args.seed, "threads": min(args.threads, 2),
        "config": {"epochs": args.epochs, "site_epochs": args.site_epochs,
                   "batch_size": args.batch, "lr": args.lr, "weight_decay": 0.0,
                   "from": f"{shipped['name']} {shipped['version']}"},
        "opset": OPSET, "versions": _versions()}
    programme = {"dataset": f"the programme's confirmed cases: {train['images']} images "
                            f"from {sites}, taken {dates['first']} to {dates['last']}",
                 "citation": "exported by the boxes with consent (appliance training "
                             "export), gathered by appliance hub training-set",
                 "licence": "the programme's own data"}
    new["provenance"] = {
        "training_data": [*shipped["provenance"]["training_data"], programme],
        "validation": f"the programme's locked test split (the hub's fixed rule, by "
                      f"patient): {test['images']} images; and {shipped['version']}'s "
                      "report splits where present"}
    new["licence"] = {**shipped["licence"],
                      "data": sorted({*shipped["licence"]["data"], programme["licence"]})}
    new["retraining"] = {
        "from": {"name": shipped["name"], "version": shipped["version"],
                 "sha256": bundle.sha256("model.int8.onnx")},
        "data": result["data"],
        "gate": {k: result[k] for k in ("gate", "reasons", "locked_test", "report_splits",
                                        "int8", "tensorrt")},
        "per_site": result["per_site"], "seconds": result["seconds"]}
    new["limitations"] = [
        *shipped["limitations"],
        f"Fine-tuned from {shipped['version']} on {train['images']} images of "
        f"{len(train['sites'])} sites; its figures on a site's images are in the "
        "leave-one-site-out table of the card.",
    ]
    return new, _story(shipped, result)


def _story(shipped: dict[str, Any], result: dict[str, Any]) -> str:
    lt = result["locked_test"]
    lines = ["## Retraining and its gate", "",
             f"Fine-tuned from {shipped['name']} {shipped['version']} on the programme's "
             "own confirmed cases (`build/retrain.py`); passed the gate:", "",
             "| on the locked test | AUC | sensitivity | specificity |", "|---|---|---|---|"]
    for who in ("active", "new"):
        f = lt[who]
        label = shipped["version"] if who == "active" else result["version"]
        lines.append(f"| {label} | {f['auc']} | {f['sensitivity']} | {f['specificity']} |")
    lines += ["", f"Threshold {lt['threshold']} (kept); target sensitivity "
              f"{lt['target_sensitivity']}.", ""]
    sites = {k: v for k, v in result["per_site"].items() if "new" in v}
    if sites:
        lines += ["Leave one site out (fine-tuned without the site, scored on it):", "",
                  "| site | n | AUC before | AUC after | sensitivity before | after |",
                  "|---|---|---|---|---|---|"]
        for site, v in sites.items():
            lines.append(f"| {site} | {v['new']['n']} | {v['active']['auc']} | "
                         f"{v['new']['auc']} | {v['active']['sensitivity']} | "
                         f"{v['new']['sensitivity']} |")
        lines.append("")
    return "\n".join(lines)
