"""Leave-one-source-out checks of the recipes' choices (single models, shorter runs).

    python build/loso.py --model cxr      # or fundus, router; --json for one object

Each row trains one model on some sources and scores a source it never saw, for each
alternative a recipe chose between (augmentation, training scheme, data). The results
are written to ``models/loso/<model>.json`` and the build pipeline copies them into the
model cards, so every choice in a card has its out-of-source figure beside it.

- cxr: children's films only -> adult films (NIH), and adult films only -> children's
  films (Kermany); 1.0.0's augmentation vs the new one; adults alone, adults after the
  children (fine-tuned), and both together, each scored on the NIH report split.
- fundus: IDRiD only -> photos from other cameras and IDRiD photos through fixed camera
  profiles; 1.0.0's augmentation vs the camera augmentation.
- router: 1.0.0's sources and augmentation vs every source and the new augmentation,
  each trained without NIH's adult films and without HRF/CHASE/Wikimedia's cameras, and
  scored on them; 1.2.0's retina augmentation also without IDRiD, and scored on the
  held-out retina photos shifted (dark, grey, casts, vignette, 35 degree field).
  ``--choice`` runs one choice and keeps the other choices' rows already in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # why: run as a script from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from build.evaluate import ThresholdRule, sens_spec  # noqa: E402
from build.metrics import roc_auc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "models" / "loso"
# What a reader must know to weigh the rows (measured, not assumed; see the notes' sources).
NOTES = {
    "cxr": [
        "The NIH report split is 98 films from 22 patients: one AUC's 95 % CI there is about "
        "±0.11. Re-running two of these rows with seeds 0 and 1 (one thread) gave NIH only "
        "0.584 / 0.623 and two heads 0.615 / 0.572: differences between the adult choices "
        "below ~0.05 are noise, not evidence. No choice reached an adult AUC near 0.80.",
        "Each model's own threshold rule moves badly across sources: trained on children, "
        "it passes half the adult normals; trained on adults, it misses most children's "
        "pneumonia. Hence one model per population, chosen by age or by staff.",
    ],
    "fundus": [
        "The camera profiles are IDRiD's report photos re-rendered (augment.py as_camera), "
        "not other cameras; the 15 photos of other cameras hold one with DR only.",
    ],
    "router": [
        "Rows use a fixed 0.6 rule to compare choices; the shipped threshold comes from "
        "build/routing.py on held-out sources, grades and shifts, and is reported in the "
        "card's evaluation.",
        "One member's shifted figures move a lot between seeds (session 16, the rows marked "
        "seed 1): photos filling the frame routed 0.20 and 1.00 of the 15 other cameras' "
        "with one choice, 0.87 and 0.31 of IDRiD's (whose member saw only the other cameras' "
        "photos). Choices are compared by their mean over seeds; 1.2.0's rows reproduce "
        "exactly at seed 0.",
    ],
}


def _fit(build_model, n: int, make_batch, epochs: int, seed: int, weights=None,
         samples_per_epoch: int | None = None, batch_size: int = 64, lr: float = 3e-3,
         weight_decay: float = 1e-4):
    from models.training.train import TrainConfig, fit

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      samples_per_epoch=samples_per_epoch)
    return fit(build_model(), n, make_batch, cfg, seed=seed, num_outputs=1,
               sample_weights=None if weights is None else weights / weights.sum(),
               log=lambda _m: None)


def _scores(model, x: np.ndarray, head: int = 0) -> np.ndarray:
    from models.training.nets import HeadsEnsemble
    from models.training.train import predict

    return predict(HeadsEnsemble([model], [head]), x)[:, 0]


def _row(name: str, trained_on: str, scored_on: str, y: np.ndarray, s: np.ndarray,
         threshold_from: tuple[np.ndarray, np.ndarray] | None = None,
         rule: ThresholdRule | None = None) -> dict[str, Any]:
    row = {"choice": name, "trained_on": trained_on, "scored_on": scored_on,
           "n": int(len(y)), "auc": round(roc_auc(y, s), 4)}
    if threshold_from is not None and rule is not None:
        from appliance.inference.postprocess import sigmoid
        t = rule.choose(threshold_from[0], sigmoid(threshold_from[1]))
        sens, spec = sens_spec(y, sigmoid(s), t)
        row.update({"threshold": t, "sensitivity": round(sens, 4),
                    "specificity": round(spec, 4)})
    return row


def cxr_rows(data_root: Path, seed: int, epochs: int, log) -> list[dict[str, Any]]:
    from appliance.inference.preprocess import cxr_preprocess
    from models.training import cxr, cxr_adult
    from models.training.augment import augment_radiograph
    from models.training.data import balanced_weights, group_folds
    from models.training.nets import CamNet

    k_raw, k_y, k_groups, k_report = cxr.kermany(data_root)
    n_raw, n_y, n_groups, _ = cxr.nih_adults(data_root)
    n_report = group_folds(n_groups, 7, cxr_adult.NIH_REPORT_SALT) == 0
    kx_report, nx_all = cxr.preprocess_all(k_raw[k_report]), cxr.preprocess_all(n_raw)
    augs = {"1.0.0 augmentation (pose, gamma)": basic_radiograph,
            "site augmentation (augment.py)": augment_radiograph}
    # why: these rows check the abnormal-vs-normal choices of cxr-adult-abnormal 1.x, so
    # they keep its rule; 2.x (TB) is checked by build/tb_shortcuts.py
    child_rule, adult_rule = cxr.RECIPE.threshold_rule, ThresholdRule(min_specificity=0.65)
    rows = []

    def single(raw, y, aug, heads=None, weights=None):
        def make_batch(idx, rng):
            x = np.stack([cxr_preprocess(aug(raw[i], rng)) for i in idx])
            out = (x, y[idx].astype(np.float32))
            return out if heads is None else (*out, heads[idx])
        nout = 1 if heads is None else 2
        return _fit(lambda: CamNet(1, (16, 32, 64, 128), nout), len(raw), make_batch, epochs,
                    seed, weights=weights if weights is not None else balanced_weights(y),
                    samples_per_epoch=1920)

    for name, aug in augs.items():
        t0 = time.time()
        kp = ~k_report
        model = single(k_raw[kp], k_y[kp], aug)
        rows.append(_row(name, "Kermany children (pool)", "NIH adults, all 682",
                         n_y, _scores(model, nx_all),
                         (k_y[k_report], _scores(model, kx_report)), child_rule))
        log(f"  {rows[-1]} ({time.time() - t0:.0f}s)")
        t0 = time.time()
        npool = ~n_report
        model = single(n_raw[npool], n_y[npool], aug)
        rows.append(_row(name, "NIH adults (pool)", "Kermany children report split",
                         k_y[k_report], _scores(model, kx_report),
                         (n_y[n_report], _scores(model, nx_all[n_report])), adult_rule))
        rows.append(_row(name, "NIH adults (pool)", "NIH report split", n_y[n_report],
                         _scores(model, nx_all[n_report])))
        log(f"  {rows[-2]}\n  {rows[-1]} ({time.time() - t0:.0f}s)")
    # the adult scheme, site augmentation: together vs after the children
    t0 = time.time()
    kp, npool = np.flatnonzero(~k_report), np.flatnonzero(~n_report)
    raw = np.concatenate([k_raw[kp], n_raw[npool]])
    y = np.concatenate([k_y[kp], n_y[npool]])
    heads = np.concatenate([np.zeros(len(kp), int), np.ones(len(npool), int)])
    weights = np.concatenate([balanced_weights(k_y[kp]), balanced_weights(n_y[npool])])
    joint = single(raw, y, augment_radiograph, heads, weights)
    rows.append(_row("adults and children together (two heads)", "Kermany + NIH pools",
                     "NIH report split", n_y[n_report], _scores(joint, nx_all[n_report], 1)))
    log(f"  {rows[-1]} ({time.time() - t0:.0f}s)")
    t0 = time.time()
    child = single(k_raw[kp], k_y[kp], augment_radiograph)
    tuned = _finetune(child, n_raw[npool], n_y[npool], augment_radiograph, epochs, seed)
    rows.append(_row("adults after the children (fine-tuned)", "Kermany pool, then NIH pool",
                     "NIH report split", n_y[n_report], _scores(tuned, nx_all[n_report])))
    log(f"  {rows[-1]} ({time.time() - t0:.0f}s)")
    return rows


def _finetune(model, raw, y, aug, epochs, seed):
    import copy

    from appliance.inference.preprocess import cxr_preprocess
    from models.training.data import balanced_weights
    from models.training.train import TrainConfig, fit

    def make_batch(idx, rng):
        return (np.stack([cxr_preprocess(aug(raw[i], rng)) for i in idx]),
                y[idx].astype(np.float32))

    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=3e-4, samples_per_epoch=768)
    w = balanced_weights(y)
    return fit(copy.deepcopy(model), len(raw), make_batch, cfg, seed=seed, num_outputs=1,
               sample_weights=w / w.sum(), log=lambda _m: None)


def basic_radiograph(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1.0.0's augmentation: small pose changes and gamma."""
    import cv2

    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-8, 8), rng.uniform(0.92, 1.08))
    m[:, 2] += rng.uniform(-3, 3, size=2)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0, 1) ** rng.uniform(0.75, 1.33)


def fundus_rows(data_root: Path, seed: int, epochs: int, log) -> list[dict[str, Any]]:
    from appliance.inference.preprocess import enhance_fundus, fundus_disc, fundus_preprocess
    from models.training import fundus
    from models.training.augment import CAMERA_PROFILES, as_camera, augment_camera
    from models.training.data import (
        fundus_files,
        fundus_other_files,
        read_image01,
        split_by_group,
    )

    params = fundus.RECIPE.preprocessing["params"]
    files = fundus_files(data_root)
    report = split_by_group(files.groups, fundus.REPORT_FRACTION, fundus.REPORT_SALT)
    pool = np.flatnonzero(~report)
    crops = [fundus_disc(read_image01(files.paths[i]), 2 * params["size"], params["threshold"])
             for i in pool]
    y = files.labels[pool]
    enhanced = np.stack([enhance_fundus(c, **params) for c in crops])
    report_images = [read_image01(files.paths[i]) for i in np.flatnonzero(report)]
    ry = files.labels[report]
    sets = {"IDRiD report split": np.stack([fundus_preprocess(im, **params)
                                            for im in report_images])}
    for name, prof in CAMERA_PROFILES.items():
        sets[f"report split as {name}"] = np.stack(
            [fundus_preprocess(as_camera(im, prof), **params) for im in report_images])
    others = fundus_other_files(data_root)
    other_x = np.stack([fundus_preprocess(read_image01(p), **params) for _, p, _ in others])
    other_dr = np.array([d == "diabetic_retinopathy" for _, _, d in others])
    rule = fundus.RECIPE.threshold_rule

    def old(idx, rng):  # 1.0.0: rotation, flip, contrast on the normalised input
        return (np.stack([_old_fundus_aug(enhanced[i], rng) for i in idx]),
                y[idx].astype(np.float32))

    def cam(idx, rng):
        return (np.stack([fundus.augment_rotation(
            enhance_fundus(augment_camera(crops[i], rng), **params), rng) for i in idx]),
                y[idx].astype(np.float32))

    rows = []
    for name, make_batch in (("1.0.0 augmentation (rotation, flip, contrast)", old),
                             ("camera augmentation (augment.py)", cam)):
        t0 = time.time()
        model = _fit(fundus.RECIPE.build_model, len(pool), make_batch, epochs, seed,
                     batch_size=32, lr=2e-3, weight_decay=5e-4)
        report_scores = _scores(model, sets["IDRiD report split"])
        for set_name, x in sets.items():
            rows.append(_row(name, "IDRiD pool (Kowa)", set_name, ry, _scores(model, x),
                             (ry, report_scores), rule))
        from appliance.inference.postprocess import sigmoid
        t = rule.choose(ry, sigmoid(report_scores))
        flagged = sigmoid(_scores(model, other_x)) >= t
        rows.append({"choice": name, "trained_on": "IDRiD pool (Kowa)",
                     "scored_on": "other cameras: 14 photos without DR, 1 with",
                     "n": len(others), "threshold": t,
                     "no_dr_flagged": int(flagged[~other_dr].sum()),
                     "dr_flagged": int(flagged[other_dr].sum())})
        log(f"  {name}: {[r.get('auc') for r in rows[-6:-1]]} others {rows[-1]} "
            f"({time.time() - t0:.0f}s)")
    return rows


def _old_fundus_aug(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from models.training.fundus import augment_rotation

    out = augment_rotation(x, rng)
    return (out * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, size=3)[:, None, None]
            ).astype(np.float32)


ROUTER_CHOICES = {"1.0.0 augmentation": False, "new augmentation": True,
                  "1.2.0 retina augmentation (casts, grey, dark, pupil, field)": "retina",
                  "1.2.0 rebuilt: same colour modes on faces, photos and scans": "photos",
                  "a fifth of the retina photos fill the frame (no black)": "filling",
                  "two fifths of the retina photos fill the frame": "filling more",
                  "1.3.0: a fifth fill the frame, and small featureless patches of photos "
                  "are other": "filling, patches",
                  "not shipped: a fifth fill the frame, featureless patches are other, and "
                  "retinas get more exudates and haemorrhages": "filling, patches, lesions"}

# the retina augmentation's choices: the shares of retina photos filling the frame, of
# "other" pictures cut to small patches, and of retina photos given more lesions
RETINA_CHOICES = {"retina": (0.0, 0.0, 0.0), "photos": (0.0, 0.0, 0.0),
                  "filling": (0.2, 0.0, 0.0), "filling more": (0.4, 0.0, 0.0),
                  "filling, patches": (0.2, 0.2, 0.0), "filling, patches, lesions": (0.2, 0.2, 0.3)}


def _shifted(model, images: list, test: np.ndarray) -> dict[str, float]:
    """Held-out retina photos through each fixed shift: share routed to fundus, p>=0.6."""
    from appliance.inference.postprocess import softmax
    from appliance.inference.preprocess import router_preprocess, to_rgb
    from models.training import router
    from models.training.train import predict

    out = {}
    for name, shift in router.RETINA_SHIFTS.items():
        x = np.stack([router_preprocess(np.clip(shift(to_rgb(images[i])), 0, 1)
                                        .astype(np.float32)) for i in np.flatnonzero(test)])
        prob = softmax(predict(model, x), axis=1)
        ok = (prob.argmax(1) == router.FUNDUS) & (prob.max(1) >= 0.6)
        out[name] = round(float(ok.mean()), 4)
    return out


def _faces_to_fundus(model) -> float:
    """Share of scikit-image's 200 LFW faces (never trained on) routed to fundus, p>=0.6."""
    from appliance.inference.postprocess import softmax
    from appliance.inference.preprocess import router_preprocess
    from models.training import router
    from models.training.train import predict

    x = np.stack([router_preprocess(im) for _, im in router.held_out_faces()])
    prob = softmax(predict(model, x), axis=1)
    return round(float(((prob.argmax(1) == router.FUNDUS) & (prob.max(1) >= 0.6)).mean()), 4)


def router_rows(data_root: Path, seed: int, epochs: int, log,
                only: str | None = None) -> list[dict[str, Any]]:
    from appliance.inference.postprocess import softmax
    from appliance.inference.preprocess import router_preprocess
    from models.training import router
    from models.training.augment import augment_radiograph

    recipe = router.RECIPE
    items = recipe.collect(Path(data_root), log)
    sources = np.array([s for s, _, _ in items])
    y = np.array([label for _, label, _ in items])
    images = [img for _, _, img in items]
    x = np.stack([router_preprocess(im) for im in images])
    held = {"NIH adults (AP and PA)": {"nih"},
            "fundus cameras other than IDRiD's": {"hrf", "chase", "wikimedia"},
            "IDRiD (Kowa, all DR grades)": {"idrid"}}
    rows = []
    for choice, new in ROUTER_CHOICES.items():
        if only and choice != only:
            continue
        for held_name, held_sources in held.items():
            if new not in RETINA_CHOICES and "IDRiD" in held_name:
                continue  # why: 1.0.0/1.1.0 rows predate this held-out set
            t0 = time.time()
            train = np.flatnonzero(~np.isin(sources, list(held_sources)))
            weights = np.zeros(len(train))
            for k in range(3):
                groups = np.unique(sources[train][y[train] == k])
                for g in groups:
                    sel = (y[train] == k) & (sources[train] == g)
                    weights[sel] = 1.0 / len(groups) / sel.sum()

            def make_batch(idx, rng, train=train, new=new):
                out = []
                for i in train[idx]:
                    img = images[i]
                    if y[i] == router.CHEST:
                        img = augment_radiograph(img, rng) if new else basic_radiograph(img, rng)
                        img = router.augment_any(img, rng, 0.6, False)
                    elif y[i] == router.FUNDUS and new in RETINA_CHOICES:
                        filling, _, lesions = RETINA_CHOICES[new]
                        img = router.augment_retina(img, rng, filling, lesions)
                    elif y[i] == router.FUNDUS:
                        img = router.augment_fundus_frame(img, rng) if new else \
                            router.augment_any(img, rng, 0.6, False)
                    elif new in RETINA_CHOICES and new != "retina":
                        img = router.augment_other(img, rng, RETINA_CHOICES[new][1])
                    else:
                        img = router.augment_any(img, rng, 0.2, True)
                    out.append(router_preprocess(img))
                return np.stack(out), y[train[idx]]

            from models.training.train import TrainConfig, fit
            cfg = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, samples_per_epoch=3072,
                              label_smoothing=0.05)
            model = fit(recipe.build_model(), len(train), make_batch, cfg, seed=seed,
                        num_outputs=3, sample_weights=weights / weights.sum(),
                        log=lambda _m: None)
            from models.training.train import predict
            test = np.isin(sources, list(held_sources))
            prob = softmax(predict(model, x[test]), axis=1)
            ok = prob.argmax(1) == y[test]
            rows.append({"choice": choice, "trained_on": "every source but the held-out ones",
                         "scored_on": held_name, "n": int(test.sum()),
                         "routed_correctly_argmax": round(float(ok.mean()), 4),
                         "routed_correctly_p>=0.6": round(float((ok & (prob.max(1) >= 0.6))
                                                                .mean()), 4)})
            if y[test][0] == router.FUNDUS and new in RETINA_CHOICES:
                rows[-1]["shifted_routed_correctly_p>=0.6"] = _shifted(model, images, test)
            rows[-1]["faces_to_fundus_p>=0.6"] = _faces_to_fundus(model)
            log(f"  {rows[-1]} ({time.time() - t0:.0f}s)")
    return rows


def main(argv: list[str] | None = None) -> int:
    from models.training.data import DEFAULT_DATA_ROOT
    from models.training.train import seed_everything

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=["cxr", "fundus", "router"])
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--choice", default=None,
                   help="router only: run this choice; other choices' rows are kept")
    args = p.parse_args(argv)
    seed_everything(args.seed, args.threads)
    run = {"cxr": (cxr_rows, 15), "fundus": (fundus_rows, 30), "router": (router_rows, 12)}
    fn, default_epochs = run[args.model]
    epochs = args.epochs or default_epochs
    say = lambda m: print(m, flush=True)  # noqa: E731
    if args.choice:
        rows = [dict(r, epochs=epochs) for r in
                fn(Path(args.data_root), args.seed, epochs, say, only=args.choice)]
        kept = json.loads((OUT / f"{args.model}.json").read_text())
        epochs = kept["epochs"]  # why: the file's other rows keep their own run's epochs
        rows = [r for r in kept["rows"] if r["choice"] != args.choice] + rows
    else:
        rows = fn(Path(args.data_root), args.seed, epochs, say)
    result = {"model": args.model, "epochs": epochs, "seed": args.seed,
              "command": f"python build/loso.py --model {args.model}", "rows": rows,
              "notes": NOTES.get(args.model, [])}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.model}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        for r in rows:
            print(" | ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
