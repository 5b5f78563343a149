"""bench/models.py runs and reports every bundle at batch 1 and 8."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_json_reports_each_model_and_batch() -> None:
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "models.py"), "--json", "--repeats", "2"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    rows = json.loads(out.stdout)
    assert {(r["model"], r["batch"]) for r in rows} >= {("cxr-pneumonia", 1), ("cxr-pneumonia", 8)}
    assert all(r["ort_int8_ms"] > 0 and "torch_fp32_ms" in r for r in rows)
    # both PyTorch baselines: the members in sequence and the same members fused
    assert all(r["torch_fused_fp32_ms"] > 0 and "int8_speedup_vs_torch_fused" in r
               for r in rows)
    fused = {r["model"] for r in rows if r["fused"]}
    assert fused >= {"cxr-pneumonia", "cxr-adult-abnormal", "fundus-referable-dr"}
