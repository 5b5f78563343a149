"""Compile a model bundle for TensorRT on the target GPU (run on the Jetson itself).

    python build/compile_tensorrt.py models/cxr-pneumonia/1.0.0 --engine-dir DATA/engines

The bundle is verified (sha256 of every file) first; the INT8 QDQ model is compiled
as a strongly typed network, with an optimisation profile for batch 1..8 tuned for
batch 1 (the box screens one image at a time) and a timing cache kept beside the
engines. The logic lives in ``appliance.inference.tensorrt_build`` so the appliance can
build missing engines itself on first start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # why: run as a script from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.errors import BundleError  # noqa: E402
from appliance.inference.bundle import load_bundle  # noqa: E402
from appliance.inference.tensorrt_build import PRECISIONS, build_engine  # noqa: E402


def parse_capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def main(argv: list[str] | None = None, trt: object = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="models/<name>/<version>")
    p.add_argument("--engine-dir", type=Path, required=True)
    p.add_argument("--precision", choices=PRECISIONS, default="int8")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="default: <engine-dir>/timing.cache")
    p.add_argument("--compute-capability", type=parse_capability, default=None,
                   help="e.g. 8.7 (Orin); default: ask the GPU")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--force", action="store_true", help="rebuild even if the engine exists")
    args = p.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle)
        key = "model.int8.onnx" if args.precision == "int8" else "model.onnx"
        engine = build_engine(
            bundle.file(key), bundle.sha256(key), args.engine_dir,
            precision=args.precision, batch=(1, 1, args.max_batch),
            timing_cache=args.timing_cache or args.engine_dir / "timing.cache",
            compute_capability=args.compute_capability, trt=trt, force=args.force)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
