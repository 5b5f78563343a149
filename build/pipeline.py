"""Rebuild a model bundle from the shared training data.

    python build/pipeline.py --model cxr      # or cxr-adult, fundus, router, all

cross-fitted members (PyTorch) -> their ensemble exported to ONNX (opset 17, dynamic
batch, CAM output) -> onnx checker -> parity ORT vs PyTorch -> static INT8 QDQ
(calibrated on training images, biases left in float for TensorRT) -> accuracy gate
(INT8 within 0.01 of FP32 or the build fails) -> calibration and threshold from
out-of-fold scores -> evaluation on the report split and other sources, with intervals
that include the threshold's choice -> ``models/<name>/<version>/``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # why: run as a script from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from appliance.inference.bundle import file_sha256  # noqa: E402
from appliance.inference.onnx_runner import run_batched  # noqa: E402
from appliance.inference.postprocess import calibrated_probabilities  # noqa: E402
from build import metrics  # noqa: E402
from build.bundle_writer import INTENDED_USE, render_card, write_bundle  # noqa: E402
from build.evaluate import binary_report, cross_validated_threshold  # noqa: E402
from build.gate import DEFAULT_TOLERANCE, check_accuracy_gate  # noqa: E402
from build.heatmap_card import with_heatmaps  # noqa: E402
from build.routing import router_evaluation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"cxr": "models.training.cxr", "cxr-adult": "models.training.cxr_adult",
           "fundus": "models.training.fundus", "router": "models.training.router"}


def log(msg: str) -> None:
    print(msg, flush=True)


def gate_metric(y: np.ndarray, logits: np.ndarray, num_outputs: int) -> float:
    if num_outputs == 1:
        return metrics.roc_auc(y, logits[:, 0])
    return metrics.macro_auc(y, logits)


def out_of_fold_logits(members: list, heads: list[int] | None, prepared: Any) -> np.ndarray:
    """Each pool image scored by the one member that never trained on it."""
    from models.training.nets import HeadsEnsemble
    from models.training.train import predict

    fold_of = prepared.folds[prepared.oof_index]
    out = None
    for k, member in enumerate(members):
        rows = np.flatnonzero(fold_of == k)
        if not rows.size:
            continue
        logits = predict(HeadsEnsemble([member], heads), prepared.oof_x[rows])
        out = np.zeros((len(fold_of), logits.shape[1]), np.float32) if out is None else out
        out[rows] = logits
    return out


def binary_evaluation(recipe: Any, prepared: Any, oof_logits: np.ndarray,
                      score: Any) -> dict[str, Any]:
    """Calibration and threshold on out-of-fold scores; everything reported elsewhere.

    Where the recipe marks which out-of-fold images are real films (``oof_reference``),
    calibration, threshold and table use those only; the others (films mixed for a
    check) are reported, one row per kind, at the same threshold."""
    keep = (np.ones(len(prepared.oof_y), bool) if prepared.oof_reference is None
            else np.asarray(prepared.oof_reference, bool))
    y, logits = prepared.oof_y[keep], oof_logits[keep]
    calibration = metrics.fit_platt(logits[:, 0], y)
    all_prob = calibrated_probabilities(oof_logits, calibration)
    oof_prob = all_prob[keep]
    rule = recipe.threshold_rule
    threshold = rule.choose(y, oof_prob)
    choose = (y, oof_prob)
    name = ("out-of-fold (pool, each image scored by the member that did not train on it)"
            + ("" if keep.all() else ", real films only"))
    rows = [dict(binary_report(name, y, oof_prob, threshold),
                 cross_validated=cross_validated_threshold(
                     rule, y, oof_prob, prepared.folds[prepared.oof_index][keep]))]
    sources = np.asarray(prepared.oof_sources) if prepared.oof_sources else None
    if sources is not None and not keep.all():
        for kind in sorted(set(sources[~keep])):
            part = sources == kind
            rows.append(binary_report(f"out-of-fold, {kind} (mixed for a check)",
                                      prepared.oof_y[part], all_prob[part], threshold))
    for eval_set in [prepared.report, *prepared.external]:
        prob = calibrated_probabilities(score(eval_set.x), calibration)
        rows.append(binary_report(eval_set.name, eval_set.y, prob, threshold, rule=rule,
                                  choose=choose, note=eval_set.note))
    calibration["fitted_on"] = "out-of-fold scores of the cross-fitting pool"
    suggested = {"threshold": threshold, "why": rule.describe() + " on out-of-fold scores"}
    table = metrics.operating_points(y, oof_prob)
    return {
        "calibration": calibration,
        "operating_points": {
            "kind": "binary", "score": "calibrated probability of the positive label",
            "description": "Positive when calibrated probability >= threshold; the table's "
                           "sensitivity/specificity are out-of-fold (pool images scored by "
                           "members that never trained on them).",
            "table": table, "suggested": suggested},
        "evaluation": rows,
        "reference": reference_distribution(oof_prob, threshold),
    }


def reference_distribution(prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """What the box should expect to see: the out-of-fold score histogram (20 bins of
    the calibrated probability) and the share flagged, for drift monitoring."""
    counts, _ = np.histogram(prob, bins=20, range=(0.0, 1.0))
    return {"score_histogram": (counts / max(len(prob), 1)).round(4).tolist(),
            "bins": 20, "positivity": round(float((prob >= threshold).mean()), 4),
            "n": int(len(prob))}


def build(model_key: str, args: argparse.Namespace) -> dict[str, Any]:
    from build.export_onnx import INPUT_NAME, OPSET, OUTPUT_NAMES, check_parity, export_onnx
    from build.quantize_int8 import quantize_int8
    from models.training.fused import FusedCamEnsemble
    from models.training.nets import HeadsEnsemble
    from models.training.train import fit_members, predict, seed_everything

    recipe = importlib.import_module(RECIPES[model_key]).RECIPE
    t0 = time.perf_counter()
    seed_everything(args.seed, args.threads)
    log(f"[{recipe.name}] preparing data from {args.data_root}")
    prepared = recipe.prepare(Path(args.data_root), args.seed, log)
    cfg = recipe.train_config
    if args.epochs:
        cfg = type(cfg)(**{**cfg.__dict__, "epochs": args.epochs})
    log(f"[{recipe.name}] training {int(prepared.folds.max()) + 1} members: {cfg}")
    members = fit_members(recipe.build_model, prepared.folds, prepared.make_batch, cfg,
                          seed=args.seed, num_outputs=recipe.num_outputs,
                          sample_weights=prepared.sample_weights, log=log)
    heads = recipe.serving_heads
    oof_logits = out_of_fold_logits(members, heads, prepared)
    ensemble = HeadsEnsemble(members, heads).eval()
    # why: the members as one graph (grouped convs) cost one model's dispatch, not five
    served = FusedCamEnsemble.from_ensemble(ensemble, recipe.input_shape)
    report = prepared.report
    torch_logits = predict(ensemble, report.x)
    fused_diff = float(np.abs(predict(served, report.x) - torch_logits).max())
    if fused_diff > 1e-4:
        raise RuntimeError(f"fused graph differs from its members by {fused_diff}")

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        export_onnx(served, fp32, recipe.input_shape, doc=f"{recipe.name} {recipe.version}")
        parity = check_parity(ensemble, fp32, report.x)
        log(f"[{recipe.name}] ONNX checker ok; parity max|ORT-PyTorch| {parity}")
        quantize_int8(fp32, int8, prepared.calibration_x, INPUT_NAME)
        out32 = run_batched(fp32, report.x)
        out8 = run_batched(int8, report.x)
        g32 = gate_metric(report.y, out32["logits"], recipe.num_outputs)
        g8 = gate_metric(report.y, out8["logits"], recipe.num_outputs)
        metric_name = "auc" if recipe.num_outputs == 1 else "macro_auc"
        delta = check_accuracy_gate(g32, g8, tolerance=args.tolerance, metric=metric_name)
        log(f"[{recipe.name}] accuracy gate passed on the report split: INT8 {g8:.4f} "
            f"FP32 {g32:.4f} ({delta:+.4f})")

        def score_int8(x: np.ndarray) -> np.ndarray:  # the box serves the INT8 model
            return run_batched(int8, x)["logits"]

        if recipe.num_outputs == 1:
            found = binary_evaluation(recipe, prepared, oof_logits, score_int8)
        else:
            found = router_evaluation(recipe, prepared, oof_logits, score_int8)
        for row in found["evaluation"]:
            log(f"[{recipe.name}] {json.dumps(row)}")

        cam_shape = list(out32["cam"].shape[2:])
        command = (f"python build/pipeline.py --model {model_key} --seed {args.seed} "
                   f"--threads {args.threads}")
        manifest = {
            "name": recipe.name, "version": recipe.version, "task": recipe.task,
            "modality": recipe.modality,
            "input": {"name": INPUT_NAME, "shape": ["batch", *recipe.input_shape],
                      "dtype": "float32", "layout": "NCHW"},
            "outputs": {
                OUTPUT_NAMES[0]: {"shape": ["batch", recipe.num_outputs],
                                  "meaning": "uncalibrated logits; apply `calibration`"},
                OUTPUT_NAMES[1]: {"shape": ["batch", recipe.num_outputs, *cam_shape],
                                  "meaning": "class activation map in logit units "
                                             "(its spatial mean equals the logits)"}},
            "preprocessing": {**recipe.preprocessing,
                              "module": "appliance.inference.preprocess",
                              "input_contract": "decoded image, float32 in [0,1]: greyscale "
                              "HxW (MONOCHROME1 already inverted) or RGB HxWx3"},
            "labels": recipe.labels,
            "population": recipe.population,
            # why: an ensemble's FP32 file is several MB; the INT8 model is what the box
            # serves and what TensorRT compiles, and the gate above holds it to FP32
            "serving": {"default": "model.int8.onnx",
                        "tensorrt": "compile model.int8.onnx with build/compile_tensorrt.py"},
            "calibration": found["calibration"],
            "operating_points": found["operating_points"],
            "validation": {
                "fp32": {metric_name: round(g32, 4)}, "int8": {metric_name: round(g8, 4)},
                "on": report.name, "gate_metric": metric_name,
                "int8_minus_fp32": delta, "gate_tolerance": args.tolerance,
                "parity_max_abs_diff": parity, "counts": prepared.counts,
                "members": len(members),
                "fused": {"graph": "one graph: the members' convolutions grouped "
                                   "(models/training/fused.py)",
                          # by output, as build/fuse_ensemble.py writes it
                          "fp32_vs_members_max_abs_diff": {"logits": fused_diff}},
                "pytorch_vs_fp32": round(gate_metric(report.y, torch_logits,
                                                     recipe.num_outputs) - g32, 6)},
            "evaluation": found["evaluation"],
            "reference": found["reference"],
            "targets": dict(recipe.targets),
            "training": {"command": command, "seed": args.seed, "threads": args.threads,
                         "config": cfg.__dict__, "opset": OPSET, "versions": _versions()},
            "provenance": dict(recipe.provenance),
            "licence": {"model": "Apache-2.0",
                        "data": sorted({d["licence"] for d in
                                        recipe.provenance["training_data"]})},
            "intended_use": INTENDED_USE,
            "never_shown": list(recipe.never_shown),
            "leave_one_source_out": _loso(recipe.loso),
            "limitations": list(recipe.limitations),
        }
        card = render_card(manifest, list(recipe.limitations), getattr(recipe, "card", ""))
        card = with_heatmaps(manifest, card, file_sha256(int8))
        dest = Path(args.models_dir) / recipe.name / recipe.version
        write_bundle(dest, manifest, {"model.int8.onnx": int8}, card)
    log(f"[{recipe.name}] bundle written to {dest} in {time.perf_counter() - t0:.0f}s")
    return {"bundle": str(dest), "gate": {"fp32": g32, "int8": g8, "delta": delta},
            "operating_point": found["operating_points"].get("suggested"),
            "evaluation": found["evaluation"]}


def recard(model_key: str, args: argparse.Namespace) -> dict[str, Any]:
    """Re-write a built bundle's card and manifest with the latest leave-one-source-out
    results and the recipe's words, keeping its model file byte for byte (no training)."""
    from appliance.inference.bundle import load_bundle

    recipe = importlib.import_module(RECIPES[model_key]).RECIPE
    dest = Path(args.models_dir) / recipe.name / recipe.version
    bundle = load_bundle(dest)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "schema_version")}
    manifest.update(leave_one_source_out=_loso(recipe.loso), never_shown=list(recipe.never_shown),
                    limitations=list(recipe.limitations), population=recipe.population)
    card = render_card(manifest, list(recipe.limitations), getattr(recipe, "card", ""))
    card = with_heatmaps(manifest, card, bundle.sha256("model.int8.onnx"))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.int8.onnx"
        model.write_bytes(bundle.file("model.int8.onnx").read_bytes())
        write_bundle(dest, manifest, {"model.int8.onnx": model}, card)
    log(f"[{recipe.name}] card and manifest re-written in {dest}")
    return {"bundle": str(dest)}


def _loso(key: str) -> dict[str, Any] | None:
    """The recipe's choices checked source by source (``build/loso.py``), if run."""
    path = REPO / "models" / "loso" / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def main(argv: list[str] | None = None) -> int:
    from models.training.data import DEFAULT_DATA_ROOT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=[*RECIPES, "all"])
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=0, help="override the recipe (quick runs)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    p.add_argument("--recard", action="store_true",
                   help="no training: re-write the built bundle's card and manifest")
    args = p.parse_args(argv)
    keys = list(RECIPES) if args.model == "all" else [args.model]
    results = {k: (recard if args.recard else build)(k, args) for k in keys}
    print(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
