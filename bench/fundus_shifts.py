"""Where the retina door refuses (issue 26): IDRiD photos as they are, and shifted as
other cameras and patients shift them, screened by ``appliance screen``; refusals by
variant, by referable / non-referable, and by reason.

    python bench/fundus_shifts.py [--json] [--every 4] [--data-root ../shared/data]

Variants of every ``--every``-th photo of IDRiD's labelled set (written to a temporary
folder, never kept): ``as is``; ``dark`` (x0.45, a heavily pigmented or under-exposed
fundus); ``green cast``; ``grey`` (one channel, as a red-free or monochrome camera);
``vignette`` (a small pupil); ``narrow field`` (a 30-35 degree camera or a phone
adapter: a centred crop of 3/4 of the frame, the circle clipped on every side); ``small
field`` (a phone adapter or hand-held camera whose field is small in a large frame: the
photo at 0.45 of a black 4:3 frame's width); ``narrow field, small pupil`` (the narrow
field's corners dimmed by the vignette); ``filling the frame`` (a camera or adapter that
crops to a rectangle inside the field: no black at all). Goals (issue 26): refused
<= 10 %, referable eyes refused at most 1.5x as often as the others, and the referable
AUC with every refused photo counted as the lowest score >= 0.85.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # why: run as a script from a checkout

from build.metrics import roc_auc  # noqa: E402

VARIANTS = ("as is", "dark", "green cast", "grey", "vignette", "narrow field", "small field",
            "narrow field, small pupil", "filling the frame")


def shifted(image: np.ndarray, variant: str) -> np.ndarray:
    if variant == "narrow field, small pupil":
        return shifted(shifted(image, "narrow field"), "vignette")
    pixels = image.astype(np.float32)
    if variant == "filling the frame":
        from models.training.router import inside_field  # the router's own check shift

        pixels = inside_field(pixels)
    elif variant == "dark":
        pixels = pixels * 0.45
    elif variant == "green cast":
        pixels = pixels * np.array([0.7, 1.15, 0.6], np.float32)  # BGR
    elif variant == "grey":
        pixels = np.repeat(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[..., None], 3, 2)
    elif variant == "vignette":
        h, w = image.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        radius = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
        pixels = pixels * np.clip(1.25 - 0.9 * radius, 0.15, 1)[..., None]
    elif variant == "narrow field":
        h, w = image.shape[:2]
        ch, cw = int(h * 0.75), int(w * 0.75)
        pixels = pixels[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    elif variant == "small field":
        h, w = image.shape[:2]
        small = cv2.resize(pixels, (round(w * 0.45), round(h * 0.45)), interpolation=cv2.INTER_AREA)
        pixels = np.zeros((w * 3 // 4, w, 3), np.float32)
        y0, x0 = (pixels.shape[0] - small.shape[0]) // 2, (w - small.shape[1]) // 2
        pixels[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return np.clip(pixels, 0, 255).astype(np.uint8)


def screen(files: list[Path], data_dir: Path) -> list[dict]:
    command = [sys.executable, "-m", "appliance", "screen", *map(str, files), "--json",
               "--data-dir", str(data_dir)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    idrid = args.data_root / "fundus" / "idrid"
    rows = list(csv.DictReader(open(idrid / "labels.csv", encoding="utf-8")))[:: args.every]
    referable = {Path(r["file"]).name: r["referable_dr"] == "1" for r in rows}
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            folder = Path(tmp) / variant.replace(" ", "_")
            folder.mkdir()
            for row in rows:
                image = cv2.imread(str(idrid / row["file"]), cv2.IMREAD_COLOR)
                cv2.imwrite(str(folder / Path(row["file"]).name), shifted(image, variant),
                            [cv2.IMWRITE_JPEG_QUALITY, 92])
            lines = screen(sorted(folder.glob("*.jpg")), Path(tmp) / "box")
            counts = collections.Counter()
            reasons = collections.Counter()
            labels, scores = [], []
            for line in lines:
                sick = referable[Path(line["file"]).name]
                refused = line["route"] == "refused"
                counts[("n", sick)] += 1
                counts[("refused", sick)] += refused
                if refused:
                    reasons[(line.get("reason") or "").split(":")[0]] += 1
                labels.append(int(sick))  # why: a refused photo is counted as the lowest score
                scores.append(-1.0 if refused else float(line.get("probability") or 0.0))
            n = counts[("n", True)] + counts[("n", False)]
            refused = counts[("refused", True)] + counts[("refused", False)]
            rate = {s: counts[("refused", s)] / max(1, counts[("n", s)]) for s in (True, False)}
            table.append({
                "variant": variant, "photos": n, "refused": refused,
                "refused_fraction": refused / max(1, n),
                "referable_refused": rate[True], "non_referable_refused": rate[False],
                "auc_refused_lowest": round(roc_auc(np.array(labels), np.array(scores)), 4),
                "reasons": dict(reasons.most_common()),
            })
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"IDRiD, every {args.every}th photo ({len(rows)}), screened by appliance screen")
    print(f"{'variant':<26} {'refused':>8} {'referable':>10} {'others':>7} {'AUC':>6}  reasons")
    for row in table:
        print(f"{row['variant']:<26} {row['refused_fraction']:>8.1%} "
              f"{row['referable_refused']:>10.1%} {row['non_referable_refused']:>7.1%} "
              f"{row['auc_refused_lowest']:>6.3f}  "
              + "; ".join(f"{k} {v}" for k, v in row["reasons"].items()))


if __name__ == "__main__":
    main()
