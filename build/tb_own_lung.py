"""Can more detail find TB without the hospital? A trial at 256 px, measured and not shipped.

    python build/tb_own_lung.py [--nih-share 0.3] [--folds 0,1] \
        [--append models/loso/cxr-adult.json]

Every adult negative here exists at 64 px only (NIH), so a model with a larger input
learns "sharp = TB" (session 8). This trial takes the other hospital out of training
altogether: a small fully convolutional net sees TBX11K films at 256 px (half of them
softened to a random detail between 64 and 256 px) and learns, cell by cell of a 16x16
map, a radiologist's box against **the same film's lung outside any box**. No hospital
can answer a cell, and every positive and negative comes from one source.
``--nih-share`` adds NIH normals (every cell negative) at that share of each batch.

Each fold's model is measured by ``build/tb_shortcuts.measure`` on the same held-out
sets as every variant in ``models/training/cxr_adult.VARIANTS`` (films of the fold it
never saw), so its row sits beside theirs in the card's shortcut table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # why: run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from models.training.data import DEFAULT_DATA_ROOT  # noqa: E402

SIZE = 256
WIDTHS = (16, 32, 64, 128)
STEM_STRIDE = 2
GRID = SIZE // STEM_STRIDE // 2 ** (len(WIDTHS) - 1)  # 16x16 cells of 16 px
BATCH = 16


def augment(film: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            degrade: float) -> tuple[np.ndarray, np.ndarray]:
    """The same small rotation, zoom, shift and flip for the film and its box mask;
    with probability ``degrade`` the film is softened to a random detail (64 px to its
    own), so detail is not what tells a lesion from lung."""
    from models.training.tb import soften

    side = film.shape[0]
    m = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-10, 10),
                                rng.uniform(0.88, 1.12))
    m[:, 2] += rng.uniform(-0.07, 0.07, 2) * side
    f = cv2.warpAffine(film, m, (side, side), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    k = cv2.warpAffine(mask, m, (side, side), flags=cv2.INTER_NEAREST, borderValue=0)
    if rng.random() < 0.5:
        f, k = f[:, ::-1], k[:, ::-1]
    f = np.ascontiguousarray(f, np.float32)
    if rng.random() < degrade:
        f = soften(f, int(rng.integers(64, side)))
    if rng.random() < 0.3:  # sensor noise
        f = f + rng.normal(0, rng.uniform(0, 0.03), f.shape).astype(np.float32)
    return f, np.ascontiguousarray(k)


def make_batch(tb_films, tb_masks, tb_train, nih_films, nih_train, nih_share: float,
               prep, rng: np.random.Generator, degrade: float = 0.5):
    """(x, cell targets): TB films with their boxes' cells 1, the rest of the film 0
    (a box's edge not judged); NIH normals, if any, all 0."""
    from models.training.tb import cell_targets

    n_nih = int(round(BATCH * nih_share))
    xs, targets = [], []
    for i in rng.choice(tb_train, BATCH - n_nih):
        f, k = augment(tb_films[i], tb_masks[i], rng, degrade)
        xs.append(prep(f))
        targets.append(cell_targets(k, GRID))
    for i in (rng.choice(nih_train, n_nih) if n_nih else []):
        f, _ = augment(nih_films[i], np.zeros((SIZE, SIZE), np.float32), rng, degrade)
        xs.append(prep(f))
        targets.append(np.zeros((GRID, GRID), np.float32))
    return np.stack(xs).astype(np.float32), np.stack(targets).astype(np.float32)


def train_fold(data, films, fold: int, nih_share: float, epochs: int, seed: int, log):
    import torch

    from models.training.cxr_adult import Choice, CxrAdultRecipe
    from models.training.nets import CamNet
    from models.training.tb import box_mask, cell_targets
    from models.training.train import cell_loss

    recipe = CxrAdultRecipe(Choice(size=SIZE, peak=True))
    sp = recipe.splits(data)
    tb_films, nih_films, _ = films
    masks = np.stack([box_mask(b, SIZE) for b in data.tb.boxes])
    tb_train = np.flatnonzero(~sp["tb_report"] & (sp["tb_folds"] != fold))
    nih_train = np.flatnonzero(~sp["nih_report"] & (sp["nih_folds"] != fold)
                               & (data.nih_y == 0))
    torch.manual_seed(seed + fold)
    rng = np.random.default_rng(seed + fold)
    model = CamNet(1, widths=WIDTHS, num_outputs=2, stem_stride=STEM_STRIDE, peak=GRID)
    per_epoch = len(tb_train) // BATCH
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * per_epoch,
                                                pct_start=0.2)
    share = float(np.mean([(cell_targets(masks[i], GRID) == 1).mean() for i in tb_train]))
    pos_weight = min(10.0, (1 - share) / share)  # lesion cells are ~10 % of a TB film's
    for epoch in range(epochs):
        model.train()
        for _ in range(per_epoch):
            x, t = make_batch(tb_films, masks, tb_train, nih_films, nih_train, nih_share,
                              recipe._prep, rng)
            _, cam = model(torch.from_numpy(x))
            loss = cell_loss(cam[:, 0], torch.from_numpy(t), pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 10 == 9:
            log(f"  fold {fold} epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
    model.eval()
    return model, recipe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    ap.add_argument("--nih-share", type=float, default=0.0,
                    help="share of each batch: NIH normals, every cell negative")
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--append", default=None, help="append the row to this shortcut table")
    args = ap.parse_args(argv)
    import torch

    from build.tb_shortcuts import measure
    from models.training.tb import films_at, load_sources

    torch.set_num_threads(args.threads)
    data = load_sources(Path(args.data_root), print)
    films = films_at(data, SIZE)
    folds = [int(f) for f in args.folds.split(",")]
    per_fold, t0 = [], time.perf_counter()
    for fold in folds:
        model, recipe = train_fold(data, films, fold, args.nih_share, args.epochs,
                                   args.seed, print)
        per_fold.append(measure(model, recipe.shortcut_sets(data, fold=fold, seed=args.seed)))
        print(f"  fold {fold}: {json.dumps(per_fold[-1])}")
    row = {k: round(float(np.mean([r[k] for r in per_fold])), 3) for k in per_fold[0]}
    print(json.dumps({"nih_share": args.nih_share, "folds": folds,
                      "seconds": round(time.perf_counter() - t0), **row}))
    if args.append:
        table = json.loads(Path(args.append).read_text())
        # no "_sum" columns: the second output is never trained here
        table["rows"].append({"choice": choice_text(args.nih_share, folds), **{
            k: row[k] for k in table["rows"][0] if k in row and not k.endswith("_sum")}, **{
            k: row[k] for k in ("nih_other_disease_flagged", "nih_tb_like_flagged",
                                "tb_soft_flagged", "sharp_film_flagged",
                                "sharp_film_above_nih_normals")}})
        Path(args.append).write_text(json.dumps(table, indent=1) + "\n")
    return 0


def choice_text(nih_share: float, folds: list[int]) -> str:
    what = ("TBX11K only" if not nih_share else
            f"TBX11K + NIH normals as {nih_share:.0%} of each batch (every cell negative)")
    return (f"not shipped (build/tb_own_lung.py): 256 px, {what}; a 16x16 map learns a "
            f"box's lesion against the same film's lung outside any box; half the films "
            f"softened to 64-256-px detail [folds {','.join(map(str, folds))}]")


if __name__ == "__main__":
    raise SystemExit(main())
