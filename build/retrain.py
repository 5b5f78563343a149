"""Fine-tune a shipped model on a programme's own confirmed cases, then gate it.

    python build/retrain.py fundus-referable-dr --data SET [--data SET2 ...] \\
        --locked-test SET --out OUT [--json] [--epochs N]

SET is a folder written by ``appliance hub training-set`` (its ``train/`` images are
trained on; the ``--locked-test`` folder's ``locked_test/`` images only measure). The
start is the shipped bundle's own five members, recovered from its INT8 file (weights
dequantized, the fused graph's grouped convolutions split back into members): nothing
beside the bundle is needed, and the recovered float graph is the served model up to
activation rounding (checked here, to 1e-4 logit). Then:

leave-one-site-out (fewer epochs, one fine-tune per site, scored on that site) -> the
fine-tune on every site -> fused graph -> ONNX -> parity -> INT8 (as build/pipeline.py)
-> the gate (build/retrain_gate.py) -> a bundle in OUT/<model>/<version> only if it
passes. The calibration and the threshold stay the shipped ones. Exit 0: passed, 1: the
gate refused, 2: the data or the command is wrong. See docs/learning.md, section 3.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # why: run as a script from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from appliance.errors import BundleError  # noqa: E402
from appliance.inference.bundle import file_sha256, load_bundle  # noqa: E402
from appliance.inference.onnx_runner import run_batched  # noqa: E402
from appliance.inference.postprocess import calibrated_probabilities  # noqa: E402
from build import retrain_gate as gate  # noqa: E402
from build.retrain_data import (  # noqa: E402
    Example,
    Inputs,
    RetrainError,
    decode01,
    describe,
    fingerprint,
    model_inputs,
    read_sets,
    report_sets,
)

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"cxr-pneumonia": "models.training.cxr",
           "cxr-adult-abnormal": "models.training.cxr_adult",
           "fundus-referable-dr": "models.training.fundus"}
MEMBERS_TOLERANCE = 1e-4  # recovered members vs the dequantized graph, FP32
MAX_THREADS = 2           # a shared workstation: never more


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the shipped members, recovered from the bundle -----------------------------------


def _conv_chain(graph: Any, input_name: str = "input") -> list[Any]:
    """The convolutions from the input to the classifier, in forward order."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chain, todo = [], [input_name]
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.op_type == "Conv":
                chain.append(node)
                todo = list(node.output)
                break
            todo.extend(node.output)
    return chain


def member_chains(float_onnx: Path) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Each member's (weight, bias) per conv. A fused graph (models/training/fused.py)
    holds member m's output channels as the m-th of ``members`` equal slices of every
    conv; a bundle from before fusion is read as build/fuse_ensemble.py reads it."""
    import onnx
    from onnx import numpy_helper

    from build.fuse_ensemble import member_chains as unfused_chains

    graph = onnx.load(str(float_onnx)).graph
    chain = _conv_chain(graph)
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in chain]
    if len(chain) < 2 or groups[1] == 1:
        return unfused_chains(float_onnx)
    members = groups[1]
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    chains: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(members)]
    for node in chain:
        weights = np.split(inits[node.input[1]], members)
        biases = np.split(inits[node.input[2]], members)
        for m in range(members):
            chains[m].append((weights[m], biases[m]))
    return chains


def recover_start(recipe: Any, bundle: Any, work: Path, check_x: np.ndarray) -> Any:
    """The shipped version as a trainable FusedCamEnsemble, checked against the float
    graph its INT8 file stands for."""
    from build.dequantize import float_model_from_qdq
    from build.fuse_ensemble import max_abs_diff, torch_outputs
    from models.training.fused import FusedCamEnsemble

    float_onnx = float_model_from_qdq(bundle.file("model.int8.onnx"), work / "members.onnx")
    model = FusedCamEnsemble(recipe.build_model(), member_chains(float_onnx), None,
                             recipe.input_shape).eval()
    diff = max_abs_diff(torch_outputs(model, check_x), run_batched(float_onnx, check_x))
    if max(diff.values()) > MEMBERS_TOLERANCE:
        raise RetrainError(f"the members recovered from {bundle.path} differ from its "
                           f"float graph by {diff}")
    log(f"[retrain] {model.members} members recovered from {bundle.path} "
        f"(max |diff| {max(diff.values()):.1e})")
    return model


# -- fine-tuning ------------------------------------------------------------------------


def member_logits(model: Any, x: Any) -> Any:
    """B x members x outputs: each member's logit, before the ensemble's mean, so each
    member learns on its own (as it was trained) rather than only their average."""
    import torch.nn.functional as F

    cams = model.classifier(model.features(x))
    if model.peak:
        local = F.avg_pool2d(cams, 3, stride=1, padding=1, count_include_pad=False)
        logits = F.max_pool2d(local, model.peak).flatten(1)
    else:
        logits = cams.mean(dim=(2, 3))
    return logits.reshape(-1, model.members, model.outputs)


def fine_tune(start: Any, held: list[np.ndarray], y: np.ndarray, inputs: Inputs, *,
              epochs: int, batch: int, lr: float, seed: int) -> Any:
    """A copy of ``start`` trained ``epochs`` passes over ``held`` (augmented as the
    recipe does): AdamW, one-cycle, gradients clipped, no weight decay (it would pull the
    shipped weights toward zero, not toward the data), the final weights kept."""
    import torch
    import torch.nn.functional as F

    model = copy.deepcopy(start).train()
    # why: the first conv's edge and colour filters need no new data to stay good, and
    # its gradient at full resolution is a quarter of a step's time on a CPU
    for param in model.features[0].parameters():
        param.requires_grad_(False)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    steps = epochs * math.ceil(len(held) / batch)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.2)
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        order = rng.permutation(len(held))
        for start_at in range(0, len(order), batch):
            idx = order[start_at:start_at + batch]
            x = torch.from_numpy(np.stack([inputs.augmented(held[i], rng) for i in idx]))
            target = torch.from_numpy(y[idx].astype(np.float32))[:, None, None]
            logits = member_logits(model, x)
            loss = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # why: BatchNorm is folded into the convs, so nothing else keeps one bad
            # batch from throwing the shipped weights far off
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log(f"  epoch {epoch + 1}/{epochs} loss {total / len(held):.4f} "
            f"({time.perf_counter() - t0:.0f}s)")
    return model.eval()


def torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    from build.fuse_ensemble import torch_outputs

    return torch_outputs(model, x, batch=32)["logits"]


# -- leave one site out -----------------------------------------------------------------


def per_site(start: Any, train: list[Example], held: list[np.ndarray], served: np.ndarray,
             active_logits: np.ndarray, inputs: Inputs, manifest: dict, args: Any
             ) -> dict[str, Any]:
    """Per site: fine-tuned without it (fewer epochs), scored on it (FP32), beside the
    active version (INT8) on the same images."""
    sites = np.array([e.site for e in train])
    y = np.array([e.label for e in train])
    calibration = manifest["calibration"]
    threshold = manifest["operating_points"]["suggested"]["threshold"]
    names = sorted(set(sites))
    if len(names) < 2:
        return {names[0]: {"skipped": "the only site: nothing to train on without it"}}
    out: dict[str, Any] = {}
    for site in names:
        inside = sites == site
        rest = np.flatnonzero(~inside)
        if len(set(y[rest])) < 2:
            out[site] = {"skipped": "without this site the training data has one class"}
            continue
        log(f"[retrain] leave-one-site-out: without {site} ({len(rest)} images, "
            f"{args.site_epochs} epochs)")
        model = fine_tune(start, [held[i] for i in rest], y[rest], inputs,
                          epochs=args.site_epochs, batch=args.batch, lr=args.lr,
                          seed=args.seed)
        new = calibrated_probabilities(torch_logits(model, served[inside]), calibration)
        old = calibrated_probabilities(active_logits[inside], calibration)
        out[site] = {"trained_on": len(rest),
                     "active": gate.figures(y[inside], old, threshold),
                     "new": gate.figures(y[inside], new, threshold)}
    return out


# -- the run ----------------------------------------------------------------------------


def load_images(examples: list[Example], inputs: Inputs, *, keep: bool
                ) -> tuple[list[np.ndarray], np.ndarray]:
    held, served = [], []
    for e in examples:
        try:
            image = decode01(e.path)
        except Exception as exc:  # why: any decoder failure is this file's fault
            raise RetrainError(f"{e.path}: cannot be read as an image ({exc})") from exc
        if keep:
            held.append(inputs.keep(image))
        served.append(inputs.served(image))
    return held, np.stack(served).astype(np.float32)


def retrain(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    import torch

    from build.export_onnx import INPUT_NAME, check_parity, export_onnx
    from build.gate import AccuracyGateError, check_accuracy_gate
    from build.metrics import roc_auc
    from build.quantize_int8 import quantize_int8
    from models.training.train import seed_everything

    t0 = time.perf_counter()
    if args.model not in RECIPES:
        raise RetrainError(f"no retraining for {args.model!r}: one of {sorted(RECIPES)}")
    recipe = importlib.import_module(RECIPES[args.model]).RECIPE
    bundle = load_bundle(args.start or REPO / "models" / recipe.name / recipe.version)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "schema_version")}
    if manifest["name"] != args.model or manifest["operating_points"]["kind"] != "binary":
        raise RetrainError(f"{bundle.path} is not a binary bundle of {args.model}")
    seed_everything(args.seed, min(args.threads, MAX_THREADS))
    torch.set_num_threads(min(args.threads, MAX_THREADS))
    train, test = read_sets(args.data, args.locked_test, args.model)
    log(f"[retrain] {args.model} from {manifest['version']}: {len(train)} training images, "
        f"{len(test)} in the locked test")
    if not args.site_epochs:  # the per-site runs together cost about half a fine-tune
        sites_n = len({e.site for e in train})
        args.site_epochs = max(1, round(args.epochs / (2 * max(sites_n, 2))))
    inputs = model_inputs(manifest["preprocessing"])
    held, train_x = load_images(train, inputs, keep=True)
    _, test_x = load_images(test, inputs, keep=False)
    log(f"[retrain] images read and preprocessed ({time.perf_counter() - t0:.0f}s)")
    y_train = np.array([e.label for e in train])
    y_test = np.array([e.label for e in test])
    calibration = manifest["calibration"]
    threshold = manifest["operating_points"]["suggested"]["threshold"]
    target = float(manifest["targets"]["sensitivity"])
    specificity_target = manifest["targets"].get("specificity")
    active_int8 = bundle.file("model.int8.onnx")

    def prob(logits: np.ndarray) -> np.ndarray:
        return calibrated_probabilities(logits, calibration)

    active_test = gate.figures(y_test, prob(run_batched(active_int8, test_x)["logits"]),
                               threshold)
    version = args.version or default_version(manifest["version"], bundle, train, test, args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = recover_start(recipe, bundle, work, test_x[:16])
        sites = per_site(start, train, held, train_x,
                         run_batched(active_int8, train_x)["logits"], inputs, manifest, args)
        log(f"[retrain] fine-tuning on {len(train)} images, {args.epochs} epochs")
        model = fine_tune(start, held, y_train, inputs, epochs=args.epochs, batch=args.batch,
                          lr=args.lr, seed=args.seed)
        fp32, int8 = work / "model.onnx", work / "model.int8.onnx"
        export_onnx(model, fp32, recipe.input_shape, doc=f"{recipe.name} {version}")
        parity = check_parity(model, fp32, test_x[:32])
        quantize_int8(fp32, int8, train_x[:128], INPUT_NAME)
        new_logits = run_batched(int8, test_x)["logits"]
        new_test = gate.figures(y_test, prob(new_logits), threshold)
        reasons = gate.locked_test_reasons(active_test, new_test, threshold=threshold,
                                           target_sensitivity=target,
                                           target_specificity=specificity_target)
        auc32 = roc_auc(y_test, run_batched(fp32, test_x)["logits"][:, 0])
        auc8 = roc_auc(y_test, new_logits[:, 0])
        try:
            delta = check_accuracy_gate(auc32, auc8, metric="AUC on the locked test")
        except AccuracyGateError as exc:
            delta = auc8 - auc32
            reasons.append(str(exc))
        trt = check_trt(int8)
        reasons += [f"TensorRT: {p}" for p in trt]
        log(f"[retrain] exported, quantized, locked test scored "
            f"({time.perf_counter() - t0:.0f}s)")
        rows, where = report_rows(args, manifest, active_int8, int8, threshold)
        report_table, report_reasons = gate.report_split_rows(*rows) if rows else ([], [])
        reasons += report_reasons
        result = {
            "model": args.model, "version": version, "from_version": manifest["version"],
            "gate": "fail" if reasons else "pass", "reasons": reasons,
            "locked_test": {"active": _three(active_test), "new": _three(new_test),
                            "n": new_test["n"], "positives": new_test["positives"],
                            "threshold": threshold, "target_sensitivity": target,
                            "target_specificity": specificity_target},
            "per_site": sites,
            "report_splits": {"from": where, "rows": report_table},
            "int8": {"fp32_auc": round(auc32, 4), "int8_auc": round(auc8, 4),
                     "delta": round(delta, 4)},
            "tensorrt": trt or "within TensorRT 10's documented ONNX support",
            "data": {"train": describe(train), "locked_test": describe(test),
                     "sets": _set_manifests([*args.data, args.locked_test])},
            "bundle": None,
        }
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if not reasons:
            result["bundle"] = str(write_retrained(
                args, recipe, manifest, bundle, result, int8, parity,
                new_probs=prob(new_logits), y_test=y_test))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _write_record(Path(args.out), result)
    return result, 0 if not reasons else 1


def default_version(shipped: str, bundle: Any, train: list[Example], test: list[Example],
                    args: Any) -> str:
    """``<shipped>+retrain.<digest>``: a local variant of the version it started from
    (the project's own next release keeps the next number), named by what made it."""
    import hashlib

    made_of = (f"{bundle.sha256('model.int8.onnx')}:{fingerprint(train)}:{fingerprint(test)}:"
               f"{args.epochs}:{args.site_epochs}:{args.batch}:{args.lr}:{args.seed}")
    return f"{shipped}+retrain.{hashlib.sha256(made_of.encode()).hexdigest()[:8]}"


def _three(figs: dict[str, Any]) -> dict[str, Any]:
    return {k: figs[k] for k in ("auc", "sensitivity", "specificity")}


def check_trt(int8: Path) -> list[str]:
    """What any bundle is held to: TensorRT 10's documented ONNX support, biases in
    float (never quantized), only INT8 into DequantizeLinear."""
    import onnx

    from appliance.inference.engines.trt_support import problems

    proto = onnx.load(str(int8))
    return problems(proto) + gate.quantized_biases(proto)


def report_rows(args: Any, manifest: dict, active: Path, new: Path, threshold: float
                ) -> tuple[tuple[list[dict], list[dict]] | None, str]:
    sets, where = report_sets(args.model, manifest["preprocessing"], Path(args.data_root),
                              REPO / "tests" / "data")
    if not sets:
        log(f"[retrain] no report splits: {where}")
        return None, where
    calibration = manifest["calibration"]
    both: tuple[list[dict], list[dict]] = ([], [])
    for s in sets:
        for out, path in zip(both, (active, new), strict=True):
            p = calibrated_probabilities(run_batched(path, s.x)["logits"], calibration)
            out.append({"set": s.name, **gate.figures(s.y, p, threshold)})
    return both, where


def _set_manifests(folders: list[Path]) -> list[dict[str, Any]]:
    """What each training set says of itself (``appliance hub training-set``)."""
    out = []
    for folder in folders:
        path = Path(folder) / "manifest.json"
        if path.is_file():
            m = json.loads(path.read_text(encoding="utf-8"))
            out.append({"folder": Path(folder).name, "created_at": m.get("created_at"),
                        "exports": m.get("exports"), "dates": m.get("dates"),
                        "locked_test_rule": (m.get("rules") or {}).get("locked_test")})
    return out


def _write_record(out: Path, result: dict[str, Any]) -> None:
    """Every run's figures, passed or not, beside the bundle: the change's record."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"retrain-{result['model']}-{result['version']}.json"
    (out / name).write_text(json.dumps(result, indent=2, default=float) + "\n",
                            encoding="utf-8")


def write_retrained(args: Any, recipe: Any, manifest: dict, bundle: Any,
                    result: dict[str, Any], int8: Path, parity: dict, **measured: Any
                    ) -> Path:
    from build.bundle_writer import render_card, write_bundle
    from build.heatmap_card import with_heatmaps
    from build.retrain_card import retrained_manifest

    new, story = retrained_manifest(args, recipe, manifest, bundle, result, parity,
                                    **measured)
    card = render_card(new, list(new["limitations"]), story)
    card = with_heatmaps(new, card, file_sha256(int8))
    dest = Path(args.out) / new["name"] / new["version"]
    write_bundle(dest, new, {"model.int8.onnx": int8}, card)
    log(f"[retrain] gate passed: bundle written to {dest}")
    return dest


def parse(argv: list[str] | None) -> argparse.Namespace:
    from models.training.data import DEFAULT_DATA_ROOT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help=f"one of {', '.join(RECIPES)}")
    p.add_argument("--data", type=Path, action="append", required=True,
                   help="a training set (appliance hub training-set); its train/ is used")
    p.add_argument("--locked-test", type=Path, required=True,
                   help="the programme's training set whose locked_test/ measures")
    p.add_argument("--out", type=Path, required=True, help="where the bundle is written")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--site-epochs", type=int, default=0,
                   help="epochs of each leave-one-site-out fine-tune (0: --epochs / (2 x sites), "
                        "at least 1: together about half a fine-tune)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=MAX_THREADS)
    p.add_argument("--start", type=Path, default=None,
                   help="bundle to start from and compare with (default: the shipped one)")
    p.add_argument("--version", default=None, help="default: <shipped>+retrain.<data digest>")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="the project's shared data, for its report splits where present")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    args.command = "python build/retrain.py " + " ".join(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        result, code = retrain(args)
    except (RetrainError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        lt = result["locked_test"]
        print(f"{result['model']} {result['version']}: gate {result['gate']}")
        print(f"locked test ({lt['n']} images): active {lt['active']}, new {lt['new']}")
        for reason in result["reasons"]:
            print(f"- {reason}")
        print(f"bundle: {result['bundle'] or 'none written'} ({result['seconds']}s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
