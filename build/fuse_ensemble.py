"""Re-write a built ensemble bundle as one fused graph: no retraining, same members.

    python build/fuse_ensemble.py --model cxr      # or cxr-adult, fundus, router

A bundle ships only ``model.int8.onnx``: five members run one after another. Its
float graph is rebuilt from the INT8 file (``build/dequantize.py``), each member's conv
chain is traced from the input, and the chains become one ``FusedCamEnsemble``
(``models/training/fused.py``: grouped convolutions). Then, as ``build/pipeline.py``:
parity (fused vs the five members, both FP32) -> ONNX export -> parity ORT vs PyTorch ->
static INT8 QDQ calibrated on training images (biases in float) -> accuracy gate. The
members, and so the calibration, threshold and out-of-fold figures, are unchanged; the
rows scored by the served model (report split, other sources) are scored again with the
fused INT8 graph, and every figure must lie inside the interval the card gave it.
The bundle keeps its version: the same members, calibration and threshold.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # why: run as a script from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from appliance.inference.bundle import file_sha256, load_bundle  # noqa: E402
from appliance.inference.onnx_runner import run_batched  # noqa: E402
from appliance.inference.postprocess import calibrated_probabilities  # noqa: E402
from build.bundle_writer import render_card, write_bundle  # noqa: E402
from build.evaluate import ThresholdRule, binary_report  # noqa: E402
from build.gate import DEFAULT_TOLERANCE, check_accuracy_gate  # noqa: E402
from build.heatmap_card import with_heatmaps  # noqa: E402
from build.metrics import roc_auc  # noqa: E402
from build.pipeline import RECIPES, gate_metric, log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEMBERS_TOLERANCE = 1e-4  # fused vs five members, FP32: float summation order only


class FusionError(RuntimeError):
    """The bundle cannot be fused, or the fused model does not match its members."""


def member_chains(float_onnx: Path, input_name: str = "input") -> list[list[tuple]]:
    """Each member's (weight, bias) per conv, in forward order, from a float ONNX graph
    of a sequential ensemble: every conv that reads the input starts one member, whose
    chain continues to the next conv reached without passing another."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(float_onnx)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def next_convs(node: Any) -> list[Any]:
        found, todo = [], list(node.output)
        while todo:
            for c in consumers.get(todo.pop(), []):
                (found.append(c) if c.op_type == "Conv" else todo.extend(c.output))
        return found

    if any(a.name == "group" and a.i != 1 for n in graph.node if n.op_type == "Conv"
           for a in n.attribute):
        raise FusionError(f"{float_onnx.name} already holds grouped convs: fused already?")
    stems = [n for n in graph.node if n.op_type == "Conv" and n.input[0] == input_name]
    # why: the graph's node order is not the members' (quantization re-sorts it), and
    # out-of-fold scoring needs member k; the exporter names nodes /members.<k>/...
    index = [re.match(r"/members\.(\d+)/", n.name) for n in stems]
    if not all(index) or sorted(int(m[1]) for m in index) != list(range(len(stems))):
        raise FusionError(f"{float_onnx.name}: members not named /members.<k>/ in the graph")
    stems = [s for _, s in sorted(zip((int(m[1]) for m in index), stems, strict=True),
                                  key=lambda pair: pair[0])]
    chains = []
    for stem in stems:
        chain = [stem]
        while nxt := next_convs(chain[-1]):
            if len(nxt) != 1:
                raise FusionError(f"{float_onnx.name}: a member's conv feeds {len(nxt)} convs")
            chain.append(nxt[0])
        chains.append([(inits[n.input[1]], inits[n.input[2]]) for n in chain])
    if len(chains) < 2 or len({len(c) for c in chains}) != 1:
        raise FusionError(f"{float_onnx.name}: not an ensemble of like members "
                          f"({[len(c) for c in chains]} convs per input conv)")
    return chains


def fused_from_bundle(recipe: Any, int8_path: Path, work: Path) -> tuple[Any, Path, list]:
    """(fused torch model, the five members' float ONNX, the member chains)."""
    from build.dequantize import float_model_from_qdq
    from models.training.fused import FusedCamEnsemble

    members = float_model_from_qdq(int8_path, work / "members.onnx")
    chains = member_chains(members)
    fused = FusedCamEnsemble(recipe.build_model(), chains, recipe.serving_heads,
                             recipe.input_shape).eval()
    return fused, members, chains


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.abs(a[k] - b[k]).max()) for k in ("logits", "cam")}


def torch_outputs(model: Any, x: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    import torch

    parts: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            lg, cam = model(torch.from_numpy(x[i:i + batch]))
            parts.append((lg.numpy(), cam.numpy()))
    return {"logits": np.concatenate([p[0] for p in parts]),
            "cam": np.concatenate([p[1] for p in parts])}


def out_of_fold(recipe: Any, chains: list, prepared: Any) -> np.ndarray:
    """Each pool image scored by the (dequantized) member that never trained on it
    (chain k is member k, which never saw fold k)."""
    from models.training.fused import FusedCamEnsemble

    fold_of = prepared.folds[prepared.oof_index]
    out = None
    for k, chain in enumerate(chains):
        rows = np.flatnonzero(fold_of == k)
        if not rows.size:
            continue
        single = FusedCamEnsemble(recipe.build_model(), [chain], recipe.serving_heads,
                                  recipe.input_shape).eval()
        logits = torch_outputs(single, prepared.oof_x[rows])["logits"]
        out = np.zeros((len(fold_of), logits.shape[1]), np.float32) if out is None else out
        out[rows] = logits
    return out


def rescored_rows(recipe: Any, manifest: dict, prepared: Any, chains: list,
                  score: Any) -> list[dict[str, Any]]:
    """The card's rows with those the served model scores (report, other sources)
    scored again; the out-of-fold rows are the members' and stay as they are."""
    calibration = manifest["calibration"]
    threshold = manifest["operating_points"]["suggested"]["threshold"]
    oof = out_of_fold(recipe, chains, prepared)
    keep = (np.ones(len(prepared.oof_y), bool) if prepared.oof_reference is None
            else np.asarray(prepared.oof_reference, bool))
    choose = (prepared.oof_y[keep], calibrated_probabilities(oof, calibration)[keep])
    log(f"[{recipe.name}] out-of-fold AUC of the dequantized members "
        f"{roc_auc(*choose):.4f} (card: {manifest['evaluation'][0].get('auc')})")
    rule: ThresholdRule = recipe.threshold_rule
    served = {s.name: s for s in [prepared.report, *prepared.external]}
    rows = []
    for row in manifest["evaluation"]:
        eval_set = served.get(row["set"])
        if eval_set is None:
            rows.append(row)
            continue
        prob = calibrated_probabilities(score(eval_set.x), calibration)
        rows.append(binary_report(eval_set.name, eval_set.y, prob, threshold, rule=rule,
                                  choose=choose, note=eval_set.note))
    missing = set(served) - {r["set"] for r in manifest["evaluation"]}
    if missing:
        raise FusionError(f"the card has no row for {sorted(missing)}: rebuild instead")
    return rows


def outside_intervals(old: list[dict], new: list[dict]) -> list[str]:
    """Every new figure that falls outside the interval the old card gave it."""
    bad = []
    for before, after in zip(old, new, strict=True):
        ci = before.get("ci95_with_threshold_choice", {})
        bands = {"auc": before.get("auc_ci95"), "sensitivity": ci.get("sensitivity"),
                 "specificity": ci.get("specificity")}
        for key, band in bands.items():
            value = after.get(key)
            if band and value is not None and not band[0] <= value <= band[1]:
                bad.append(f"{after['set']}: {key} {value} outside {band}")
    return bad


def fuse(model_key: str, args: argparse.Namespace) -> dict[str, Any]:
    from build.export_onnx import INPUT_NAME, check_parity, export_onnx
    from build.quantize_int8 import quantize_int8
    from models.training.train import seed_everything

    recipe = importlib.import_module(RECIPES[model_key]).RECIPE
    if recipe.num_outputs != 1:
        raise FusionError(f"{recipe.name}: only binary bundles keep their threshold here; "
                          "a multi-class bundle is fused by rebuilding it "
                          "(build/pipeline.py exports the fused graph)")
    dest = Path(args.models_dir) / recipe.name / recipe.version
    bundle = load_bundle(dest)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "schema_version")}
    seed = manifest["training"]["seed"]
    seed_everything(seed, args.threads)
    t0 = time.perf_counter()
    log(f"[{recipe.name}] preparing data from {args.data_root}")
    prepared = recipe.prepare(Path(args.data_root), seed, log)
    report = prepared.report
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fused, members_onnx, chains = fused_from_bundle(recipe, bundle.file("model.int8.onnx"),
                                                        work)
        vs_members = max_abs_diff(torch_outputs(fused, report.x),
                                  run_batched(members_onnx, report.x))
        log(f"[{recipe.name}] fused vs {len(chains)} members, FP32: max|diff| {vs_members}")
        if max(vs_members.values()) > MEMBERS_TOLERANCE:
            raise FusionError(f"fused graph differs from its members: {vs_members}")
        fp32, int8 = work / "model.onnx", work / "model.int8.onnx"
        export_onnx(fused, fp32, recipe.input_shape,
                    doc=f"{recipe.name} {recipe.version}, {len(chains)} members fused")
        parity = check_parity(fused, fp32, report.x)
        quantize_int8(fp32, int8, prepared.calibration_x, INPUT_NAME)
        g32 = gate_metric(report.y, run_batched(fp32, report.x)["logits"], 1)
        g8 = gate_metric(report.y, run_batched(int8, report.x)["logits"], 1)
        metric = manifest["validation"]["gate_metric"]
        delta = check_accuracy_gate(g32, g8, tolerance=args.tolerance, metric=metric)
        log(f"[{recipe.name}] accuracy gate passed: INT8 {g8:.4f} FP32 {g32:.4f} "
            f"({delta:+.4f}); before fusion INT8 {manifest['validation']['int8'][metric]}")

        def score_int8(x: np.ndarray) -> np.ndarray:
            return run_batched(int8, x)["logits"]

        rows = rescored_rows(recipe, manifest, prepared, chains, score_int8)
        outside = outside_intervals(manifest["evaluation"], rows)
        for before, after in zip(manifest["evaluation"], rows, strict=True):
            log(f"[{recipe.name}] {after['set']}: " + ", ".join(
                f"{k} {before.get(k)} -> {after.get(k)}"
                for k in ("auc", "sensitivity", "specificity", "flagged")))
        if outside:
            raise FusionError("fused INT8 moves card figures out of their CI: "
                              + "; ".join(outside))
        manifest["evaluation"] = rows
        manifest["validation"].update(
            fp32={metric: round(g32, 4)}, int8={metric: round(g8, 4)}, int8_minus_fp32=delta,
            parity_max_abs_diff=parity,
            fused={"graph": "one graph: the members' convolutions grouped "
                            "(models/training/fused.py)",
                   "fp32_vs_members_max_abs_diff": vs_members,
                   "fp32_means": "the members dequantized from the unfused INT8 bundle",
                   "int8_before": manifest["validation"]["int8"],
                   "command": f"python build/fuse_ensemble.py --model {model_key}"})
        card = render_card(manifest, list(manifest["limitations"]), getattr(recipe, "card", ""))
        card = with_heatmaps(manifest, card, file_sha256(int8))
        if not args.no_write:
            write_bundle(dest, manifest, {"model.int8.onnx": int8}, card)
    log(f"[{recipe.name}] fused in {time.perf_counter() - t0:.0f}s"
        + ("" if args.no_write else f", bundle re-written in {dest}"))
    return {"bundle": str(dest), "members_vs_fused": vs_members,
            "gate": {"fp32": g32, "int8": g8, "delta": delta}}


def main(argv: list[str] | None = None) -> int:
    from models.training.data import DEFAULT_DATA_ROOT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=[*RECIPES, "all"])
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    p.add_argument("--no-write", action="store_true", help="check only, write nothing")
    args = p.parse_args(argv)
    keys = [k for k in RECIPES if k != "router"] if args.model == "all" else [args.model]
    results = {k: fuse(k, args) for k in keys}
    print(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
