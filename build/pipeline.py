"""Rebuild a model bundle from the shared training data.

    python build/pipeline.py --model cxr      # or fundus, router, all

train (PyTorch) -> export ONNX (opset 17, dynamic batch, CAM output) -> onnx checker
-> parity ORT vs PyTorch on validation -> static INT8 QDQ (calibrated on training
images) -> accuracy gate (INT8 within 0.01 of FP32 or the build fails) -> calibration,
operating points, bootstrap CIs -> ``models/<name>/<version>/``.
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

from appliance.inference.onnx_runner import run_batched  # noqa: E402
from appliance.inference.postprocess import calibrated_probabilities  # noqa: E402
from build import metrics  # noqa: E402
from build.bundle_writer import INTENDED_USE, render_card, write_bundle  # noqa: E402
from build.gate import DEFAULT_TOLERANCE, check_accuracy_gate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"cxr": "models.training.cxr", "fundus": "models.training.fundus",
           "router": "models.training.router"}


def log(msg: str) -> None:
    print(msg, flush=True)


def evaluate(y: np.ndarray, logits: np.ndarray, num_outputs: int, *,
             with_ci: bool) -> dict[str, Any]:
    """Gate metric first: AUC (binary) or macro one-vs-rest AUC (multi-class)."""
    if num_outputs == 1:
        score = logits[:, 0]
        out: dict[str, Any] = {"auc": metrics.roc_auc(y, score)}
        if with_ci:
            out["auc_ci95"] = metrics.bootstrap_ci(metrics.roc_auc, y, score)
        return out
    out = {"macro_auc": metrics.macro_auc(y, logits), "accuracy": metrics.accuracy(y, logits)}
    if with_ci:
        out["macro_auc_ci95"] = metrics.bootstrap_ci(metrics.macro_auc, y, logits)
        out["accuracy_ci95"] = metrics.bootstrap_ci(metrics.accuracy, y, logits)
    return out


def binary_operating_points(y: np.ndarray, prob: np.ndarray,
                            targets: dict[str, float]) -> dict[str, Any]:
    table = metrics.operating_points(y, prob)
    # why: a screening box should miss as little as possible, so suggest the most
    # sensitive threshold that still keeps the target specificity
    floor = targets.get("specificity", 0.8)
    ok = [r for r in table if r["specificity"] >= floor]
    best = max(ok, key=lambda r: (r["sensitivity"], r["specificity"])) if ok else None
    suggested = dict(best, why=f"highest sensitivity with specificity >= {floor}") if best \
        else None
    return {"kind": "binary", "score": "calibrated probability of the positive label",
            "description": "Positive when calibrated probability >= threshold; "
                           "sensitivity/specificity measured on validation (INT8 model).",
            "table": table, "suggested": suggested}


def router_operating_points(y: np.ndarray, prob: np.ndarray,
                            labels: list[str]) -> dict[str, Any]:
    """For a router a 'threshold' is the minimum top-class probability to accept an
    image; below it the image is refused as unsure."""
    table = []
    for t in np.round(np.arange(0.4, 0.99, 0.05), 2):
        keep = prob.max(axis=1) >= t
        acc = float((prob[keep].argmax(1) == y[keep]).mean()) if keep.any() else 1.0
        table.append({"threshold": float(t), "coverage": round(float(keep.mean()), 4),
                      "accuracy_of_accepted": round(acc, 4)})
    recall = {labels[k]: round(float((prob[y == k].argmax(1) == k).mean()), 4)
              for k in np.unique(y)}
    return {"kind": "router", "score": "calibrated top-class probability",
            "description": "Route an image to its top class when that class's calibrated "
                           "probability >= threshold, otherwise refuse it as unsure; "
                           f"per-class recall at argmax: {recall}.",
            "table": table, "per_class_recall": recall,
            "suggested": {"threshold": 0.6, "why": "refuse unsure images"}}


def build(model_key: str, args: argparse.Namespace) -> dict[str, Any]:
    from build.export_onnx import INPUT_NAME, OPSET, OUTPUT_NAMES, check_parity, export_onnx
    from build.quantize_int8 import quantize_int8
    from models.training.train import fit, predict, seed_everything

    recipe = importlib.import_module(RECIPES[model_key]).RECIPE
    t0 = time.perf_counter()
    seed_everything(args.seed, args.threads)
    log(f"[{recipe.name}] preparing data from {args.data_root}")
    prepared = recipe.prepare(Path(args.data_root), args.seed, log)
    cfg = recipe.train_config
    if args.epochs:
        cfg = type(cfg)(**{**cfg.__dict__, "epochs": args.epochs})
    model = recipe.build_model()
    log(f"[{recipe.name}] training {cfg}")
    fit(model, prepared.n_train, prepared.make_batch, cfg, seed=args.seed,
        num_outputs=recipe.num_outputs, sample_weights=prepared.sample_weights, log=log)
    y = prepared.val_y
    torch_logits = predict(model, prepared.val_x)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        export_onnx(model, fp32, recipe.input_shape, doc=f"{recipe.name} {recipe.version}")
        parity = check_parity(model, fp32, prepared.val_x)
        log(f"[{recipe.name}] ONNX checker ok; parity max|ORT-PyTorch| {parity}")
        quantize_int8(fp32, int8, prepared.calibration_x, INPUT_NAME)
        out32 = run_batched(fp32, prepared.val_x)
        out8 = run_batched(int8, prepared.val_x)
        m32 = evaluate(y, out32["logits"], recipe.num_outputs, with_ci=True)
        m8 = evaluate(y, out8["logits"], recipe.num_outputs, with_ci=True)
        gate_metric = "auc" if recipe.num_outputs == 1 else "macro_auc"
        log(f"[{recipe.name}] FP32 {m32}\n[{recipe.name}] INT8 {m8}")
        delta = check_accuracy_gate(m32[gate_metric], m8[gate_metric],
                                    tolerance=args.tolerance, metric=gate_metric)
        log(f"[{recipe.name}] accuracy gate passed: INT8-FP32 {gate_metric} {delta:+.4f}")

        # why: the box serves the INT8 model, so calibrate what it will actually output
        if recipe.num_outputs == 1:
            calibration = metrics.fit_platt(out8["logits"][:, 0], y)
            prob = calibrated_probabilities(out8["logits"], calibration)
            ops = binary_operating_points(y, prob, dict(recipe.targets))
            m8["ece_calibrated"] = metrics.expected_calibration_error(y, prob)
            if ops["suggested"]:
                s = ops["suggested"]
                pred, pos = prob >= s["threshold"], y == 1
                m8["sensitivity_at_suggested_ci95"] = metrics.bootstrap_ci(
                    lambda yy, pp: float((pp[yy == 1] >= s["threshold"]).mean()), y, prob)
                m8["specificity_at_suggested_ci95"] = metrics.bootstrap_ci(
                    lambda yy, pp: float((pp[yy == 0] < s["threshold"]).mean()), y, prob)
                m8["sensitivity_at_suggested"] = float(pred[pos].mean())
                m8["specificity_at_suggested"] = float((~pred[~pos]).mean())
        else:
            calibration = metrics.fit_temperature(out8["logits"], y)
            prob = calibrated_probabilities(out8["logits"], calibration)
            ops = router_operating_points(y, prob, recipe.labels)
        calibration["fitted_on"] = "validation split, INT8 model logits"

        cam_shape = list(out32["cam"].shape[1:])
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
                OUTPUT_NAMES[1]: {"shape": ["batch", recipe.num_outputs, *cam_shape[1:]],
                                  "meaning": "class activation map in logit units "
                                             "(its spatial mean equals the logits)"}},
            "preprocessing": {**recipe.preprocessing,
                              "module": "appliance.inference.preprocess",
                              "input_contract": "decoded image, float32 in [0,1]: greyscale "
                              "HxW (MONOCHROME1 already inverted) or RGB HxWx3"},
            "labels": recipe.labels,
            "serving": {"default": "model.int8.onnx", "fp32": "model.onnx",
                        "tensorrt": "compile model.int8.onnx with build/compile_tensorrt.py"},
            "calibration": calibration, "operating_points": ops,
            "validation": {"fp32": m32, "int8": m8, "gate_metric": gate_metric,
                           "int8_minus_fp32": delta, "gate_tolerance": args.tolerance,
                           "parity_max_abs_diff": parity, "counts": prepared.counts,
                           "pytorch_vs_fp32_auc": evaluate(y, torch_logits, recipe.num_outputs,
                                                           with_ci=False)},
            "targets": dict(recipe.targets),
            "training": {"command": command, "seed": args.seed, "threads": args.threads,
                         "config": cfg.__dict__, "opset": OPSET, "versions": _versions()},
            "provenance": dict(recipe.provenance),
            "licence": {"model": "Apache-2.0",
                        "data": sorted({d["licence"] for d in
                                        recipe.provenance["training_data"]})},
            "intended_use": INTENDED_USE,
            "limitations": list(recipe.limitations),
        }
        if prepared.val_sources:
            manifest["validation"]["notes"] = _source_breakdown(prepared.val_sources, y,
                                                                prob, recipe.labels)
        card = render_card(manifest, list(recipe.limitations))
        dest = Path(args.models_dir) / recipe.name / recipe.version
        write_bundle(dest, manifest, {"model.onnx": fp32, "model.int8.onnx": int8}, card)
    log(f"[{recipe.name}] bundle written to {dest} in {time.perf_counter() - t0:.0f}s")
    return {"bundle": str(dest), "fp32": m32, "int8": m8, "gate_delta": delta,
            "operating_point": ops.get("suggested")}


def _source_breakdown(sources: list[str], y: np.ndarray, prob: np.ndarray,
                      labels: list[str]) -> list[str]:
    """Per-source accuracy lines for the router's card (which held-out sets it got)."""
    src = np.array(sources)
    notes = []
    for s in sorted(set(sources)):
        sel = src == s
        ok = int((prob[sel].argmax(1) == y[sel]).sum())
        notes.append(f"held-out {s} ({labels[int(y[sel][0])]}): {ok}/{int(sel.sum())} correct")
    return notes


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
    args = p.parse_args(argv)
    keys = list(RECIPES) if args.model == "all" else [args.model]
    results = {k: build(k, args) for k in keys}
    print(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
