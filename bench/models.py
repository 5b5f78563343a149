"""Latency of every committed model: PyTorch eager FP32 vs ONNX Runtime FP32 vs INT8.

    python bench/models.py [--json] [--threads 1] [--models-dir models]

The PyTorch model is the recipe's own network — the whole ensemble, its members one
after another, with BatchNorm removed as ONNX folds it into the convolutions, so eager
PyTorch runs the same cheaper graph ONNX Runtime runs — and, beside it, the same
members fused into one grouped network (``models/training/fused.py``), the graph a fused
bundle ships. The speed-up is PyTorch (members in sequence) / ONNX Runtime INT8; the
other speed-up is against PyTorch running the fused network. Latency does not depend on
the weights' values, and an ensemble bundle ships only its INT8 file, so the eager
networks keep their initial weights. ONNX Runtime FP32 is timed where the bundle carries
``model.onnx``. Median wall time per call on random inputs of the bundle's input shape.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # why: run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from appliance.inference.bundle import find_bundles, load_bundle  # noqa: E402
from appliance.inference.onnx_runner import OnnxRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE_FOR = {
    "cxr-pneumonia": "models.training.cxr",
    "cxr-adult-abnormal": "models.training.cxr_adult",
    "fundus-referable-dr": "models.training.fundus",
    "modality-router": "models.training.router",
}


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def torch_network(name: str, members: int, *, fused: bool = False) -> Any:
    """The recipe's ensemble, BatchNorm removed (ONNX folds it away); ``fused``: the
    same members as one grouped network (BatchNorm folded into its convolutions)."""
    import torch

    from models.training.fused import FusedCamEnsemble
    from models.training.nets import HeadsEnsemble

    recipe = importlib.import_module(RECIPE_FOR[name]).RECIPE
    model = HeadsEnsemble([recipe.build_model() for _ in range(members)],
                          recipe.serving_heads)
    if fused:
        return FusedCamEnsemble.from_ensemble(model.eval(), recipe.input_shape)
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(module, child_name, torch.nn.Identity())
    return model.eval()


def bench_bundle(path: Path, threads: int, repeats: int) -> list[dict[str, Any]]:
    bundle = load_bundle(path)
    shape = bundle.manifest["input"]["shape"][1:]
    members = bundle.manifest["validation"].get("members", 1)
    int8 = bundle.file("model.int8.onnx")
    fp32 = bundle.path / "model.onnx" if "model.onnx" in bundle.manifest["files"] else None
    sizes = {"members": members, "fused": "fused" in bundle.manifest["validation"],
             "int8_kb": int8.stat().st_size // 1024,
             "fp32_kb": fp32.stat().st_size // 1024 if fp32 else None}
    try:
        import torch

        torch.set_num_threads(threads)
        net = torch_network(bundle.name, members)
        fused_net = torch_network(bundle.name, members, fused=True)
    except ImportError:
        torch = net = fused_net = None  # no [train] extra: ONNX Runtime columns only
    rows = []
    with contextlib.ExitStack() as stack:
        r8 = stack.enter_context(OnnxRunner(int8, threads=threads))
        r32 = stack.enter_context(OnnxRunner(fp32, threads=threads)) if fp32 else None
        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
            row: dict[str, Any] = {"model": bundle.name, "batch": batch, **sizes}
            if r32 is not None:
                row["ort_fp32_ms"] = median_ms(lambda: r32.infer({"input": x}), repeats)  # noqa: B023
            row["ort_int8_ms"] = median_ms(lambda: r8.infer({"input": x}), repeats)  # noqa: B023
            if net is not None:
                xt = torch.from_numpy(x)
                with torch.inference_mode():
                    row["torch_fp32_ms"] = median_ms(lambda: net(xt), repeats)  # noqa: B023
                    row["torch_fused_fp32_ms"] = median_ms(lambda: fused_net(xt),  # noqa: B023
                                                           repeats)
                row["int8_speedup_vs_torch"] = row["torch_fp32_ms"] / row["ort_int8_ms"]
                row["int8_speedup_vs_torch_fused"] = (row["torch_fused_fp32_ms"]
                                                      / row["ort_int8_ms"])
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], threads: int) -> None:
    print(f"median latency per call, ms ({threads} thread(s)); speed-up = PyTorch / ORT INT8"
          " (members in sequence | fused); graph: what the bundle ships")
    head = (
        f"{'model':<22}{'batch':>6}{'members':>8}{'graph':>8}{'torch fp32':>12}"
        f"{'fused':>8}{'ort fp32':>10}{'ort int8':>10}{'speed-up':>10}{'vs fused':>10}"
        f"{'fp32 KB':>9}{'int8 KB':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        torch_ms = f"{r['torch_fp32_ms']:.2f}" if "torch_fp32_ms" in r else "n/a"
        fused_ms = f"{r['torch_fused_fp32_ms']:.2f}" if "torch_fused_fp32_ms" in r else "n/a"
        speed = f"{r['int8_speedup_vs_torch']:.1f}x" if "int8_speedup_vs_torch" in r else "n/a"
        vs_fused = (f"{r['int8_speedup_vs_torch_fused']:.1f}x"
                    if "int8_speedup_vs_torch_fused" in r else "n/a")
        graph = "fused" if r["fused"] else f"{r['members']} seq" if r["members"] > 1 else "single"
        fp32_ms = f"{r['ort_fp32_ms']:.2f}" if "ort_fp32_ms" in r else "n/a"
        fp32_kb = r["fp32_kb"] if r["fp32_kb"] is not None else "n/a"
        print(
            f"{r['model']:<22}{r['batch']:>6}{r['members']:>8}{graph:>8}{torch_ms:>12}"
            f"{fused_ms:>8}{fp32_ms:>10}{r['ort_int8_ms']:>10.2f}{speed:>10}{vs_fused:>10}"
            f"{fp32_kb:>9}{r['int8_kb']:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = p.parse_args(argv)
    rows = [
        row
        for path in find_bundles(args.models_dir)
        for row in bench_bundle(path, args.threads, args.repeats)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
