"""Does a chest bundle's shipped threshold hold when the films look like another site's?

    python build/site_shift.py models/cxr-pneumonia/1.0.0 models/cxr-pneumonia/1.1.0

Scores the children's report split (the patients every cxr-pneumonia version held out)
through fixed "other site" profiles — exposure curve, contrast, sharpening, blur, noise,
tubes and letters on the film — and prints sensitivity and specificity at each bundle's
own threshold. No profile is used in training (the training augmentation draws random
values from wider ranges). Inference only: a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # why: run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from appliance.inference.bundle import load_bundle  # noqa: E402
from appliance.inference.onnx_runner import run_batched  # noqa: E402
from appliance.inference.postprocess import calibrated_probabilities  # noqa: E402
from appliance.inference.preprocess import preprocess_batch  # noqa: E402
from build.evaluate import sens_spec  # noqa: E402
from build.metrics import roc_auc  # noqa: E402


def _wires(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    h, w = out.shape
    cv2.line(out, (w // 5, 0), (w // 2, h - 1), 0.95, 1, cv2.LINE_AA)
    cv2.circle(out, (w // 3, h // 4), 2, 1.0, -1)
    mask = np.zeros((h, w), np.uint8)
    cv2.putText(mask, "AP", (2, 9), cv2.FONT_HERSHEY_PLAIN, 0.6, 255, 1)
    out[mask > 0] = 1.0
    return out


PROFILES = {
    "as taken": lambda im: im,
    "brighter curve (gamma 0.7)": lambda im: im ** 0.7,
    "darker curve (gamma 1.5)": lambda im: im ** 1.5,
    "flat film (contrast x0.7)": lambda im: 0.15 + 0.7 * im,
    "hard window (5-95%)": lambda im: np.clip((im - 0.05) / 0.9, 0, 1),
    "edge-enhanced": lambda im: np.clip(im + 0.6 * (im - cv2.GaussianBlur(im, (0, 0), 2.0)),
                                        0, 1),
    "soft (blur 0.8 px)": lambda im: cv2.GaussianBlur(im, (0, 0), 0.8),
    "noisy (sd 0.02)": lambda im: np.clip(
        im + np.random.default_rng(0).normal(0, 0.02, im.shape), 0, 1).astype(np.float32),
    "tubes, electrode, letters": _wires,
}


def report_split(data_root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    from models.training.cxr import kermany

    raw, y, _, report = kermany(data_root)
    return list(raw[report]), y[report]


def evaluate(bundle_path: Path, images: list[np.ndarray], y: np.ndarray) -> list[dict]:
    bundle = load_bundle(bundle_path)
    m = bundle.manifest
    threshold = float(m["operating_points"]["suggested"]["threshold"])
    rows = []
    for name, profile in PROFILES.items():
        x = preprocess_batch(m["preprocessing"],
                             [profile(im).astype(np.float32) for im in images])
        logits = run_batched(bundle.file("model.int8.onnx"), x)["logits"]
        prob = calibrated_probabilities(logits, m["calibration"])
        sens, spec = sens_spec(y, prob, threshold)
        rows.append({"bundle": f"{m['name']} {m['version']}", "profile": name,
                     "threshold": threshold, "auc": round(roc_auc(y, prob), 4),
                     "sensitivity": round(sens, 4), "specificity": round(spec, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from models.training.data import DEFAULT_DATA_ROOT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    images, y = report_split(args.data_root)
    rows = [row for b in args.bundles for row in evaluate(b, images, y)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"children's report split: {len(y)} films, {int(y.sum())} pneumonia")
    print(f"{'bundle':<22}{'profile':<30}{'thr':>6}{'AUC':>7}{'sens':>7}{'spec':>7}")
    for r in rows:
        print(f"{r['bundle']:<22}{r['profile']:<30}{r['threshold']:>6.2f}{r['auc']:>7.3f}"
              f"{r['sensitivity']:>7.3f}{r['specificity']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
