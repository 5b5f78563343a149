"""How the adult TB test films were chosen (run once, off the box, by a developer with
the project's shared training data; the tests never read that data).

    python tests/data/tbx64/select_images.py --data-root ../shared/data

Every TBX11K film of the adult recipe's report split (``split_by_group(ids, 0.15,
"tbx11k-report-v1")``: no member of ``cxr-adult-abnormal`` trains on them), squashed to
64 px as the box does (``appliance.inference.preprocess.squash``: pixel averaging), as
8-bit PNG, with the radiologists' boxes in fractions of the film (``labels.csv``).
TBX11K: CC BY 4.0, Liu et al. (2020), "Rethinking Computer-aided Tuberculosis
Diagnosis", CVPR.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from appliance.inference.preprocess import squash  # noqa: E402
from models.training.cxr_adult import TB_REPORT_FRACTION, TB_REPORT_SALT  # noqa: E402
from models.training.data import DEFAULT_DATA_ROOT, read_image01, split_by_group  # noqa: E402
from models.training.tb import parse_boxes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    base = Path(ap.parse_args().data_root) / "cxr" / "tbx11k-tb600"
    with open(base / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    report = split_by_group([r["tbx11k_id"] for r in rows], TB_REPORT_FRACTION, TB_REPORT_SALT)
    out = []
    for row, held in zip(rows, report, strict=True):
        if not held:
            continue
        image = read_image01(base / row["file"])
        grey = image if image.ndim == 2 else image.mean(axis=2)
        small = squash(grey.astype(np.float32), 64)
        name = f"{row['tbx11k_id']}.png"
        cv2.imwrite(str(HERE / name), np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8))
        boxes = ";".join(",".join(f"{v:.4f}" for v in b) for b in parse_boxes(row["boxes_512px"]))
        out.append({"file": name, "tb_type": row["tb_type"], "boxes": boxes})
    with open(HERE / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "tb_type", "boxes"])
        writer.writeheader()
        writer.writerows(out)
    print(f"{len(out)} films written to {HERE}")


if __name__ == "__main__":
    main()
