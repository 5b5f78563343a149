"""Does the adult chest model learn TB or the hospital? Each training choice, measured.

    python build/tb_shortcuts.py [--variants all|NAME,...] [--out models/loso/cxr-adult.json]

The TB films (TBX11K, China) have no negatives from their own hospitals and the adult
negatives (NIH, USA) no TB, so an in-source AUC says little: a model that recognises the
hospital scores near 1 there. Each variant is one model trained on pool folds 1-4 and
measured on fold 0 (films it never saw) by what a shortcut would give away:

- ``auc_in_source``: held-out TB films vs held-out NIH normals (the shortcut's home);
- ``lesions_removed_flagged``: held-out TB films with their boxes filled with another
  held-out TB film's lesion-free tissue, flagged at the threshold that flags 90 % of the
  real held-out TB films — a model that looks at the lesion lets them go (low), one that
  recognises the hospital keeps flagging them (high);
- ``lesion_pasted_flagged`` / ``tissue_pasted_flagged``: held-out NIH normals with a
  held-out TB box's content (should be flagged) or TB tissue from outside any box
  (should not) pasted in;
- ``children_normal_flagged`` / ``children_pneumonia_flagged``: Kermany's report split, a
  third source never trained on (unless the variant says so);
- ``nih_abnormal_auc``: held-out NIH abnormal vs normal on the TB score;
- ``pointing_game``: share of held-out TB films whose map peak lies in a box;
- ``source_auc_negatives``: a logistic regression on the model's pooled features telling
  held-out NIH normals from lesion-removed TB films (both "no TB"): 0.5 = the features
  hold no hospital, 1.0 = they do.
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

from build import metrics  # noqa: E402
from models.training.data import DEFAULT_DATA_ROOT  # noqa: E402


def pointing_game(cams: np.ndarray, masks64: np.ndarray) -> float:
    """Share of films whose map peak (upsampled to 64 px) lies inside a box."""
    hits = []
    for cam, mask in zip(cams, masks64, strict=True):
        if not mask.any():
            continue
        up = cv2.resize(cam.astype(np.float32), mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
        y, x = np.unravel_index(int(np.argmax(up)), up.shape)
        hits.append(bool(mask[y, x]))
    return float(np.mean(hits)) if hits else float("nan")


def source_auc(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """5-fold cross-validated AUC of a ridge-logistic classifier telling ``a`` from ``b``."""
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    folds = np.random.default_rng(seed).permutation(len(x)) % 5
    scores = np.zeros(len(x))
    for k in range(5):
        tr, te = folds != k, folds == k
        w = _logistic(x[tr], y[tr])
        scores[te] = x[te] @ w[:-1] + w[-1]
    return float(metrics.roc_auc(y.astype(int), scores))


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 300) -> np.ndarray:
    w = np.zeros(x.shape[1] + 1)
    xb = np.hstack([x, np.ones((len(x), 1))])
    for _ in range(steps):  # plain gradient descent: small, dependency-free
        p = 1 / (1 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0] / len(y)
        w -= 0.5 * grad
    return w


def run_variant(name: str, data, seed: int, epochs: int | None, folds: list[int],
                log) -> dict:
    """One model per held-out fold; the figures are the mean over those folds."""
    import torch

    from models.training import cxr_adult
    from models.training.train import fit

    recipe = cxr_adult.variant(name)
    prepared = recipe.prepare_from(data, seed, log)
    cfg = recipe.train_config
    if epochs:
        cfg = type(cfg)(**{**cfg.__dict__, "epochs": epochs})
    per_fold, seconds = [], 0.0
    for fold in folds:
        train = np.flatnonzero(prepared.folds != fold)
        torch.manual_seed(seed + fold)
        t0 = time.perf_counter()
        model = fit(recipe.build_model(), len(train),
                    lambda idx, rng, train=train: prepared.make_batch(train[idx], rng), cfg,
                    seed=seed + fold, num_outputs=recipe.num_outputs,
                    sample_weights=prepared.sample_weights[train], log=log)
        seconds += time.perf_counter() - t0
        per_fold.append(measure(torch_run(model),
                                recipe.shortcut_sets(data, fold=fold, seed=seed)))
        log(f"  {name} fold {fold}: {json.dumps(per_fold[-1])}")
    out = {"variant": name, "folds": folds, "train_seconds": round(seconds),
           **recipe.describe_variant()}
    for key in per_fold[0]:
        out[key] = round(float(np.mean([r[key] for r in per_fold])), 3)
    log(f"  {json.dumps(out)}")
    return out


def torch_run(model):
    """``run(x) -> (pooled features, logits N x heads, CAMs N x heads x h x w)`` of a
    trained member (:func:`measure`'s input)."""
    import torch

    def run(x):
        with torch.no_grad():
            feats, logits, cams = [], [], []
            for i in range(0, len(x), 256):
                xb = torch.from_numpy(x[i:i + 256])
                f = model.features(xb)
                cam = model.classifier(f)
                feats.append(f.mean(dim=(2, 3)).numpy())
                logits.append(model.pool(cam).numpy())
                cams.append(cam.numpy())
        return np.concatenate(feats), np.concatenate(logits), np.concatenate(cams)
    return run


def measure(run, checks: dict) -> dict:
    """The shortcut figures of one model (``run``: :func:`torch_run` or
    :func:`build.tb_bundle_members.member_run`) on one held-out fold's ``checks``."""
    f_tb, l_tb, c_tb = run(checks["tb"])
    f_nn, l_nn, _ = run(checks["nih_normal"])
    _, l_na, _ = run(checks["nih_abnormal"])
    f_rm, l_rm, _ = run(checks["lesions_removed"])
    _, l_lp, _ = run(checks["lesion_pasted"])
    _, l_tp, _ = run(checks["tissue_pasted"])
    _, l_kn, _ = run(checks["children_normal"])
    _, l_kp, _ = run(checks["children_pneumonia"])
    _, l_ts, _ = run(checks["tb_soft"])
    _, l_od, _ = run(checks["nih_other_disease"])
    _, l_tl, _ = run(checks["nih_tb_like"])
    _, l_sh, _ = run(checks["sharp_film"])
    _, l_ss, _ = run(checks["sharp_film_soft"])
    _, l_tt, _ = run(checks["tb_tight"])
    _, l_nt, _ = run(checks["nih_normal_tight"])
    _, l_tpr, _ = run(checks["tb_processed"])
    _, l_npr, _ = run(checks["nih_normal_processed"])
    tb = 0
    extra_heads = {}
    if l_kp.shape[1] > 2:  # children's pneumonia head (a variant's, never served)
        extra_heads["children_pneumonia_auc_third_head"] = _auc(l_kp[:, 2], l_kn[:, 2])
    t90 = float(np.quantile(l_tb[:, tb], 0.10))
    flagged = lambda s: round(float(np.mean(s[:, tb] >= t90)), 3)  # noqa: E731
    y = np.r_[np.ones(len(l_tb)), np.zeros(len(l_nn))].astype(int)
    if l_na.shape[1] > 1:  # the NIH-abnormal head a trained member has (never served)
        extra_heads.update({
            "nih_abnormal_auc_second_head": round(metrics.roc_auc(
                np.r_[np.ones(len(l_na)), np.zeros(len(l_nn))].astype(int),
                np.r_[l_na[:, 1], l_nn[:, 1]]), 3),
            # both heads summed ("TB, or any other finding"): what serving the sum would give
            "nih_abnormal_auc_sum": _auc(_tb_and_nih(l_na), _tb_and_nih(l_nn)),
            "lesion_auc_nih_films_sum": _auc(_tb_and_nih(l_lp), _tb_and_nih(l_tp)),
            "lesion_auc_tb_films_sum": _auc(_tb_and_nih(l_tb), _tb_and_nih(l_rm)),
            "auc_in_source_sum": _auc(_tb_and_nih(l_tb), _tb_and_nih(l_nn)),
            "pointing_game_sum": round(pointing_game(_tb_and_nih(c_tb), checks["tb_masks"]), 3),
        })
    return {
        "n_tb": len(l_tb), "n_nih_normal": len(l_nn),
        "auc_in_source": round(metrics.roc_auc(y, np.r_[l_tb[:, tb], l_nn[:, tb]]), 3),
        "nih_normal_flagged": flagged(l_nn),
        "lesions_removed_flagged": flagged(l_rm),
        # one background, with and without a lesion: the within-hospital question the
        # maintainers' unseen source asks, on each of the two hospitals' films
        "lesion_auc_nih_films": _auc(l_lp[:, tb], l_tp[:, tb]),
        "lesion_auc_tb_films": _auc(l_tb[:, tb], l_rm[:, tb]),
        "lesion_pasted_flagged": flagged(l_lp),
        "tissue_pasted_flagged": flagged(l_tp),
        "children_normal_flagged": flagged(l_kn),
        "children_pneumonia_flagged": flagged(l_kp),
        "nih_abnormal_auc": round(metrics.roc_auc(
            np.r_[np.ones(len(l_na)), np.zeros(len(l_nn))].astype(int),
            np.r_[l_na[:, tb], l_nn[:, tb]]), 3),
        # detail as an answer: held-out TB films at NIH's 64-px detail should stay flagged,
        # and RG1 (a sharp normal-looking CR from a third hospital) should not be
        "tb_soft_flagged": flagged(l_ts),
        # NIH films with findings TB does not explain alone vs those that may be TB
        "nih_other_disease_flagged": flagged(l_od),
        "nih_tb_like_flagged": flagged(l_tl),
        "sharp_film_flagged": flagged(l_sh),
        "sharp_film_above_nih_normals": round(float(np.mean(l_nn[:, tb] < l_sh[0, tb])), 3),
        "sharp_film_detail_gap": round(float(l_sh[0, tb] - l_ss[0, tb]), 3),
        "pointing_game": round(pointing_game(c_tb[:, tb], checks["tb_masks"]), 3),
        "source_auc_negatives": round(source_auc(f_nn, f_rm), 3),
        # framing: the held-out films with 10 % of each side cut away (tight collimation)
        "tb_tight_flagged": flagged(l_tt),
        "nih_normal_tight_flagged": flagged(l_nt),
        # a vendor's multiscale processing (augment.vendor_processing, flatten 0.5 and
        # enhance 0.5) on the held-out films: a hospital's look, not TB
        "tb_processed_flagged": flagged(l_tpr),
        "nih_normal_processed_flagged": flagged(l_npr),
        **extra_heads,
    }


# the figures the model card's shortcut table shows, in its column order
CARD_COLUMNS = (
    "auc_in_source", "lesion_auc_nih_films", "lesion_auc_tb_films",
    "lesion_auc_nih_films_sum", "lesion_auc_tb_films_sum", "lesions_removed_flagged",
    "lesion_pasted_flagged", "tissue_pasted_flagged", "nih_normal_flagged",
    "children_normal_flagged", "children_pneumonia_flagged", "nih_other_disease_flagged",
    "nih_tb_like_flagged", "tb_soft_flagged", "sharp_film_flagged",
    "sharp_film_above_nih_normals", "nih_abnormal_auc", "nih_abnormal_auc_sum",
    "pointing_game", "pointing_game_sum", "source_auc_negatives", "tb_tight_flagged",
    "nih_normal_tight_flagged", "tb_processed_flagged", "nih_normal_processed_flagged")


def card_table(rows: list[dict], args: argparse.Namespace) -> dict:
    """The table as the model card shows it (build/bundle_writer.py)."""
    return {
        "model": "cxr-adult", "seed": args.seed, "folds": args.folds,
        "epochs": args.epochs or "recipe",
        "command": f"python build/tb_shortcuts.py --variants {args.variants} --folds "
                   f"{args.folds} --out models/loso/cxr-adult.json",
        "title": "Shortcut checks of each choice (does it learn TB or the hospital?)",
        "intro": "One model per choice, trained on four pool folds and measured on the "
                 "fifth (mean of the folds named), on films it never saw; flagged = at the "
                 "threshold that flags 90 % of those held-out real TB films. Children's "
                 "films: Kermany's report split, patients never trained on (up to the "
                 "'children' row their hospital is not in training at all; from it on, "
                 "its other children's normals are negatives)",
        "rows": [card_row(_note(r), r) for r in rows],
        "notes": [
            "lesion AUC on NIH films: NIH normals with a held-out TB box pasted in vs the "
            "same with lesion-free TB lung pasted in; on TB films: held-out TB films vs "
            "the same films with their boxes filled with lesion-free lung. One hospital's "
            "films with and without a lesion: the question an unseen hospital asks. 'sum': "
            "the TB head and the NIH-abnormal head summed, an option measured and not "
            "served (the bundle serves the TB head).",
            "lesions removed flagged: TB films whose boxes were filled with another TB "
            "film's lesion-free lung. A model that recognises the hospital keeps flagging "
            "them; one that looks at the lesion lets them go.",
            "lesion pasted flagged: NIH normals with a TB box pasted in (should be "
            "flagged); tissue pasted: NIH normals with TB lung from outside any box "
            "(should not).",
            "source AUC: a logistic regression on the model's pooled features telling NIH "
            "normals from lesion-removed TB films, both 'no TB': 0.5 = no hospital in the "
            "features.",
            "sharp film: NEMA's RG1, an adult PA CR from a third hospital at full "
            "detail (no TB reported): flagged or not, and the share of held-out NIH "
            "normals scoring below it. TB soft: the held-out TB films brought to NIH's "
            "64-px detail. Every adult negative in training is soft; a model that learned "
            "'sharp = TB' flags RG1 and lets the soft TB films go.",
            "The mixed films of the checks are made from held-out films only; training "
            "mixes its own batches, never these.",
        ],
    }


def card_row(choice: str, figures: dict) -> dict:
    """One row of the card's table: what was measured, then its figures in column order."""
    return {"choice": choice, **{k: figures[k] for k in CARD_COLUMNS if k in figures}}


def _note(row: dict) -> str:
    from models.training.cxr_adult import VARIANTS
    choice = VARIANTS.get(row["variant"])
    return choice.note if choice else row["note"]


def _tb_and_nih(out: np.ndarray) -> np.ndarray:
    """The TB head and the NIH-abnormal head summed (a variant's third head left out)."""
    return out[:, :2].sum(1)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(int)
    return round(metrics.roc_auc(y, np.r_[pos, neg]), 3)


def main(argv: list[str] | None = None) -> int:
    from models.training import cxr_adult

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    ap.add_argument("--variants", default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="quick trial runs only")
    ap.add_argument("--folds", default="0,1", help="held-out pool folds, one model each")
    ap.add_argument("--out", default=None, help="write the table here as JSON")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if args.variants == "all":
        names = list(cxr_adult.VARIANTS)
    elif args.variants in cxr_adult.VARIANTS:  # one name, which may hold a comma
        names = [args.variants]
    else:
        names = args.variants.split(",")
    data = cxr_adult.load_sources(Path(args.data_root), print)
    folds = [int(f) for f in args.folds.split(",")]
    rows = [run_variant(n, data, args.seed, args.epochs, folds, print) for n in names]
    keys = [k for k in rows[0] if k not in ("variant", "folds", "note")]
    print("| variant | " + " | ".join(keys) + " |")
    for r in rows:
        print(f"| {r['variant']} | " + " | ".join(str(r.get(k)) for k in keys) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(card_table(rows, args), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
