"""The GPU self-test a technician runs first (``appliance doctor --gpu-selftest``).

For every installed bundle: build its engine from scratch into a temporary folder (never
the live ``engines/``, never its timing cache), run the check images through ONNX
Runtime and through the engine, compare them as the refresher does (``checks``), and
time both at batch 1, the way the box screens. One row per bundle; ``table`` prints them.

It needs TensorRT, pycuda and an NVIDIA GPU; where one is missing it raises
``SelftestUnavailableError`` naming it, before anything is built.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.inference.bundle import Bundle
from appliance.inference.engines.checks import check_batch, compare_outputs
from appliance.inference.engines.decide import probe_device
from appliance.inference.ort_runner import OnnxRuntimeRunner
from appliance.inference.runner import Runner
from appliance.inference.tensorrt_build import TensorRTUnavailableError, build_engine
from appliance.inference.tensorrt_runner import PRECISION_FILES, TensorRTRunner

TIMED_RUNS = 5  # per check image, after one warm-up


class SelftestUnavailableError(TensorRTUnavailableError):
    """The self-test cannot run here: TensorRT, pycuda or the GPU is missing."""


@dataclass(frozen=True)
class SelftestRow:
    model: str
    version: str
    precision: str
    build_s: float | None
    ort_ms: float | None
    trt_ms: float | None
    max_probability_diff: float | None
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_selftest(
    bundles: Iterable[Bundle],
    *,
    precision: str = "int8",
    trt: Any = None,
    cuda: Any = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build, compare and time every bundle's engine; ``{"tensorrt", "gpu", "rows"}``.

    ``trt``/``cuda`` inject TensorRT and pycuda (tests pass the stand-ins).
    """
    device = probe_device(trt, cuda)
    if not device.usable:
        raise SelftestUnavailableError(
            f"the GPU self-test needs TensorRT and an NVIDIA GPU: {device.reason}"
        )
    if trt is None or cuda is None:
        from appliance.inference.tensorrt_build import import_tensorrt
        from appliance.inference.tensorrt_runner import import_pycuda_driver

        trt, cuda = trt or import_tensorrt(), cuda or import_pycuda_driver()
    assert device.compute_capability is not None
    major, minor = device.compute_capability
    rows = []
    with tempfile.TemporaryDirectory(prefix="appliance-selftest-") as tmp:
        for bundle in bundles:
            log(f"[selftest] {bundle.name} {bundle.version}: building the engine")
            rows.append(
                _one(bundle, Path(tmp), precision, device.compute_capability, trt, cuda, log)
            )
    return {
        "tensorrt": device.trt_version,
        "gpu": f"sm{major}{minor}",
        "precision": precision,
        "rows": [r.as_dict() for r in rows],
        "ok": bool(rows) and all(r.passed for r in rows),
    }


def _one(
    bundle: Bundle,
    tmp: Path,
    precision: str,
    capability: tuple[int, int],
    trt: Any,
    cuda: Any,
    log: Callable[[str], None],
) -> SelftestRow:
    def row(passed: bool, detail: str, **measured: Any) -> SelftestRow:
        values = {"build_s": None, "ort_ms": None, "trt_ms": None, "max_probability_diff": None}
        values.update(measured)
        return SelftestRow(bundle.name, bundle.version, precision, passed=passed,
                           detail=detail, **values)

    if PRECISION_FILES[precision] not in bundle.manifest["files"]:
        return row(False, f"the bundle has no {precision} model")
    engine_dir = tmp / bundle.name
    onnx = PRECISION_FILES[precision]
    started = time.monotonic()
    try:
        build_engine(
            bundle.file(onnx), bundle.sha256(onnx), engine_dir, precision=precision,
            timing_cache=engine_dir / "timing.cache", compute_capability=capability,
            trt=trt, force=True, log=lambda line: log(f"  {line}"),
        )
    except Exception as exc:  # noqa: BLE001 — a failed build is this row's result
        return row(False, f"build failed: {exc}", build_s=round(time.monotonic() - started, 1))
    build_s = round(time.monotonic() - started, 1)
    batch = check_batch(bundle)
    try:
        with TensorRTRunner(
            bundle, engine_dir=engine_dir, precision=precision, build_if_missing=False,
            trt=trt, cuda=cuda, log=lambda line: None,
        ) as engine, OnnxRuntimeRunner(bundle, precision=precision, threads=1) as reference:
            feed = {reference.input_name: batch}
            result = compare_outputs(bundle, reference.infer(feed), engine.infer(feed))
            ort_ms, trt_ms = latency_ms(reference, batch), latency_ms(engine, batch)
    except Exception as exc:  # noqa: BLE001 — an engine that does not load or run fails
        return row(False, f"engine does not run: {exc}", build_s=build_s)
    return row(
        result.passed, result.reason, build_s=build_s, ort_ms=round(ort_ms, 2),
        trt_ms=round(trt_ms, 2), max_probability_diff=round(result.max_probability_diff, 6),
    )


def latency_ms(runner: Runner, batch: Any) -> float:
    """Median milliseconds for one image (batch 1, as the box screens), after a warm-up."""
    runner.infer({runner.input_name: batch[:1]})
    times = []
    for _ in range(TIMED_RUNS):
        for i in range(len(batch)):
            started = time.perf_counter()
            runner.infer({runner.input_name: batch[i : i + 1]})
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


COLUMNS = (  # header, key, format
    ("model", "model", "{}"),
    ("version", "version", "{}"),
    ("ORT ms", "ort_ms", "{:.2f}"),
    ("TRT ms", "trt_ms", "{:.2f}"),
    ("max |diff| p", "max_probability_diff", "{:.4f}"),
    ("result", "passed", "{}"),
    ("build s", "build_s", "{:.1f}"),
)


def table(report: dict[str, Any]) -> str:
    """One plain-text table, one line per model, then what failed and why."""
    cells = [[header for header, _, _ in COLUMNS]]
    for r in report["rows"]:
        cells.append([
            ("PASS" if r[key] else "FAIL") if key == "passed"
            else "-" if r[key] is None else fmt.format(r[key])
            for _, key, fmt in COLUMNS
        ])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{r['model']}: {r['detail']}" for r in report["rows"] if not r["passed"]]
    head = (f"GPU self-test: TensorRT {report['tensorrt']}, {report['gpu']}, "
            f"{report['precision']}, check images at batch 1")
    verdict = "all engines match ONNX Runtime" if report["ok"] else "FAILED (see above)"
    return "\n".join([head, *lines, verdict])
