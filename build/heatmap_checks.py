"""Do a bundle's heatmaps point at findings? Box-free checks on held-out images.

    python build/heatmap_checks.py --model all      # or cxr, cxr-adult, fundus

Runs each installed bundle (its INT8 ONNX, as the box serves it) on the recipe's own
report split — images no member trained on and no choice used — and measures the map
the box shows (``appliance.inference.postprocess.evidence_map``: the CAM, negative
values clipped, upsampled linearly). Criteria are fixed below, before any figure was
seen. Writes ``models/heatmaps/<bundle>.json`` (committed; ``build/pipeline.py`` copies
it into the manifest and card on every build or ``--recard``) and patches the installed
bundle's manifest and card in place (``build/heatmap_card.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # why: run as a script from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from appliance.inference.bundle import load_bundle  # noqa: E402
from appliance.inference.onnx_runner import OnnxRunner  # noqa: E402
from appliance.inference.postprocess import evidence_map, map_shifts, shift_input  # noqa: E402
from appliance.inference.preprocess import cxr_preprocess, fundus_preprocess  # noqa: E402
from appliance.screening.heatmaps import MapInput, shift_averaged_source  # noqa: E402
from build import heatmap_metrics as hm  # noqa: E402
from build.heatmap_card import HEATMAPS_DIR, patch_bundle  # noqa: E402
from build.metrics import roc_auc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHOD = ("class activation map of the served ensemble (mean of 5 members' 1x1-conv maps "
          "on the last conv block, {side}x{side}), negative evidence clipped, upsampled "
          "linearly to the image; {averaging}")
# The map each bundle shows: shift-averaged over copies of the input moved by this many
# pixels (``map_shifts``: right, down, both) where named, else the plain CAM. The adult
# model's 8 x 8 map on a 64-px input: half a cell, so the map no longer jumps with the
# network's grid (its plain map failed the shift check, r 0.79, in 2.2.0). Written into
# the manifest; the box runs the copies as one batch.
SHIFT_AVERAGE_PX = {"cxr-adult": 4}


@dataclass(frozen=True)
class Criteria:
    """What a map must reach to be shown. Fixed before measuring; each is a minimum a
    map that "points at the finding" cannot miss, set with room for noise in ~100
    images, and conservative because a wrong map misleads (issue 16: one at chance
    level is worse than none)."""

    # the score it explains must mean something: below 0.80 the report-split AUC is too
    # weak for its map to be read as "the finding is here" (the adult model: 0.63)
    min_report_auc: float = 0.80
    # most evidence where findings can be: in the lung fields (template ~30-35% of the
    # film, so chance is about that) or inside the fundus model's field of view
    min_mass_inside: float = 0.60
    # a 1/16-width shift is the same image: its map, shifted back, must nearly agree
    min_shift_correlation: float = 0.80
    # a mirrored image, its map mirrored back: anatomy moved, the map should follow
    min_flip_correlation: float = 0.50
    # deleting the map's top 10% must cost the score clearly more than deleting as many
    # pixels of a smooth random map (ratio 1 = the map knows nothing); 1.5, not just > 1
    min_deletion_ratio_10: float = 1.5
    min_deletion_ratio_20: float = 1.25
    # added after the first run showed random blurring can RAISE a chest score (blur
    # reads as haze), leaving the ratio undefined: then the map's deletion must lower
    # the score and, on each image, more than random deletion does, on 3 images in 4
    min_deletion_win_rate: float = 0.75
    # normal images' maps at most half as strong (median peak) as abnormal images'
    max_normal_to_abnormal_peak: float = 0.5
    # where radiologists drew boxes, evidence inside the lung fields is asked only up to
    # what their own boxes reach there: added when the adult TB films' boxes (upper zones
    # and apices, as rectangles over the chest wall) held 0.54 of their area inside the
    # template, so a map drawn exactly on them would have failed min_mass_inside
    mass_inside_at_most_boxes: bool = True
    # where radiologists drew boxes (adult TB films, issue 23): the map's peak inside a
    # box on at least half of the held-out boxed films (chance: the boxes' share of the
    # film, about 0.1)
    min_pointing_game: float = 0.50


CRITERIA = Criteria()
DELETION_RULE = {0.10: (CRITERIA.min_deletion_ratio_10, CRITERIA.min_deletion_win_rate),
                 0.20: (CRITERIA.min_deletion_ratio_20, CRITERIA.min_deletion_win_rate)}


@dataclass(frozen=True)
class HeldOut:
    name: str
    model_inputs: np.ndarray   # N x C x H x W, exactly what the model is fed
    labels: np.ndarray
    regions: np.ndarray        # N x H x W boolean: where evidence may lie
    region: str
    boxes: np.ndarray | None = None   # N x S x S: radiologists' boxes (positives only)


def _sample(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in (0, 1)]
    return np.sort(np.concatenate(picks))


def held_out(key: str, data_root: Path, per_class: int, seed: int) -> HeldOut:
    """The recipe's report split, re-derived by the recipe's own functions."""
    from models.training.data import group_folds

    if key == "cxr-adult":
        return _adult_held_out(data_root, per_class, seed)
    if key in ("cxr", "cxr-adult"):
        if key == "cxr":
            from models.training.cxr import kermany
            raw, y, _, report = kermany(data_root)
            name = "Kermany report split (children, patients held out since 1.0.0)"
        else:
            from models.training.cxr import nih_adults
            from models.training.cxr_adult import NIH_REPORT_SALT
            raw, y, groups, _ = nih_adults(data_root)
            report = group_folds(groups, 7, NIH_REPORT_SALT) == 0
            name = "NIH report split (adult patients never trained on)"
        raw, y = raw[report], y[report]
        idx = _sample(y, per_class, seed)
        films = [raw[i] for i in idx]
        return HeldOut(f"{name}, {len(idx)} films", np.stack([cxr_preprocess(f) for f in films]),
                       y[idx], np.stack([hm.lung_fields(f) for f in films]),
                       "lung fields (two-ellipse template in the body box)")
    from models.training.data import fundus_files, read_image01, split_by_group
    from models.training.fundus import RECIPE, REPORT_FRACTION, REPORT_SALT
    params = RECIPE.preprocessing["params"]
    files = fundus_files(data_root)
    report = np.flatnonzero(split_by_group(files.groups, REPORT_FRACTION, REPORT_SALT))
    idx = report[_sample(files.labels[report], per_class, seed)]
    x = np.stack([fundus_preprocess(read_image01(files.paths[i]), **params) for i in idx])
    disc = hm.disc_field(params["size"], params["mask_fraction"])
    return HeldOut(f"IDRiD report split (photos never trained on), {len(idx)} photos", x,
                   files.labels[idx], np.repeat(disc[None], len(idx), 0),
                   "the model's field of view (disc crop, 0.92 of the radius)")


def _adult_held_out(data_root: Path, per_class: int, seed: int) -> HeldOut:
    """TBX11K's report-split TB films (with boxes) and NIH's report-split normals."""
    from appliance.inference.preprocess import squash
    from models.training.cxr_adult import RECIPE, load_sources
    from models.training.data import read_image01
    from models.training.tb import _grey, box_mask

    s = load_sources(data_root, lambda _: None)
    split = RECIPE.splits(s)
    rng = np.random.default_rng(seed)
    tb = rng.permutation(np.flatnonzero(split["tb_report"]))[:per_class]
    nn = rng.permutation(np.flatnonzero(split["nih_report"] & (s.nih_y == 0)))[:per_class]
    size = RECIPE.input_shape[-1]
    # TB films from their 512-px files at the model's input, as the box squashes them;
    # NIH's exist at 64 px only (upsampled, as in training)
    base = data_root / "cxr" / "tbx11k-tb600" / "images"
    films = ([squash(_grey(read_image01(base / f"{s.tb.ids[i]}.jpg")), size) for i in tb]
             + [squash(s.nih_raw[i], size) for i in nn])
    x = np.stack([RECIPE._prep(f) for f in films])
    boxes = np.stack([box_mask(s.tb.boxes[i], BOX_GRID) for i in tb]
                     + [np.zeros((BOX_GRID, BOX_GRID), np.float32)] * len(nn))
    return HeldOut(f"TBX11K report split ({len(tb)} TB films, never trained on) and NIH "
                   f"report-split normals ({len(nn)})", x,
                   np.r_[np.ones(len(tb)), np.zeros(len(nn))].astype(int),
                   np.stack([hm.lung_fields(f) for f in films]),
                   "lung fields (two-ellipse template in the body box)", boxes)


BOX_GRID = 256  # the pointing game's resolution (boxes and the map at 256 x 256)


def pointing_game(sources: np.ndarray, boxes: np.ndarray) -> float | None:
    """Share of boxed films whose map peak (as the box draws it) lies inside a box."""
    hits = []
    for source, box in zip(sources, boxes, strict=True):
        if box.any():
            heat = evidence_map(source, *box.shape)
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hits.append(bool(box[y, x] > 0))
    return float(np.mean(hits)) if hits else None


def _infer(runner: OnnxRunner, x: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    logits, cams = [], []
    for i in range(0, len(x), batch):
        out = runner.infer({"input": x[i:i + batch]})
        logits.append(out["logits"][:, 0])
        cams.append(out["cam"][:, 0])
    return np.concatenate(logits), np.concatenate(cams)


def _map_sources(runner: OnnxRunner, x: np.ndarray, shifts: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Logits and what the box draws each map from (``heat_source``'s input): the CAM,
    or its shift average, by the box's own function (``heatmaps.shift_averaged_source``)."""
    logits, cams = _infer(runner, x)
    if len(shifts) == 1:
        return logits, cams

    def copies(batch: np.ndarray) -> np.ndarray:
        return _infer(runner, batch)[1]

    return logits, np.stack([shift_averaged_source(cam, MapInput(xi, shifts, copies))
                             for xi, cam in zip(x, cams, strict=True)])


def _maps(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([evidence_map(c, *size) for c in cams])


def measure(runner: OnnxRunner, data: HeldOut, seed: int,
            shifts: tuple = ((0, 0),)) -> dict[str, Any]:
    """Every figure the criteria need (means over images; deletion on abnormal ones)."""
    x, y = data.model_inputs, data.labels
    h, w = x.shape[2:]
    grid = _infer(runner, x[:1])[1].shape[1:]
    logits, sources = _map_sources(runner, x, shifts)
    maps = _maps(sources, (h, w))

    inside = [hm.mass_inside(m, r) for m, r in zip(maps[y == 1], data.regions[y == 1],
                                                   strict=True)]
    inside = [v for v in inside if v is not None]
    area = float(data.regions.mean())
    boxes_inside = None
    if data.boxes is not None:  # the radiologists' own marks, as a map, on the same films
        marks = [hm.mass_inside(_maps(b[None], (h, w))[0], r)
                 for b, r in zip(data.boxes[y == 1], data.regions[y == 1], strict=True)]
        boxes_inside = float(np.mean([v for v in marks if v is not None]))

    def shift_r(step: int) -> float:
        _, moved = _map_sources(runner, np.stack([shift_input(xi, step, step) for xi in x]),
                                shifts)
        rs = [hm.shifted_back_correlation(m, s, step, step)
              for m, s in zip(maps, _maps(moved, (h, w)), strict=True)]
        return round(float(np.nanmean([r for r in rs if r is not None])), 4)

    dx = max(1, w // 16)
    _, flipped = _map_sources(runner, np.ascontiguousarray(x[:, :, :, ::-1]), shifts)
    flip_r = [hm.correlation(m, s[:, ::-1]) for m, s in zip(maps, _maps(flipped, (h, w)),
                                                            strict=True)]

    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y == 1)
    deletion = {}
    for fraction in (0.10, 0.20):
        top = np.stack([hm.delete(x[i], hm.top_fraction(maps[i], fraction), w / 8)
                        for i in pos])
        drop_map = logits[pos] - _infer(runner, top)[0]
        drops_random = []
        for _ in range(3):
            rand = np.stack([hm.delete(x[i], hm.top_fraction(
                hm.smooth_random_map((h, w), grid, rng), fraction), w / 8) for i in pos])
            drops_random.append(logits[pos] - _infer(runner, rand)[0])
        random_each = np.mean(drops_random, axis=0)
        deletion[fraction] = hm.DeletionResult(fraction, float(drop_map.mean()),
                                               float(random_each.mean()),
                                               float((drop_map > random_each).mean()))

    peaks = maps.reshape(len(maps), -1).max(axis=1)  # the served map's strongest evidence
    pointing = None if data.boxes is None else pointing_game(sources, data.boxes)
    return {
        "pointing_game": _round(pointing, 3),
        "boxes_area": (None if data.boxes is None else
                       round(float(data.boxes[data.boxes.reshape(len(y), -1).any(1)].mean()), 4)),
        "map_side": int(grid[-1]),
        "n_images": int(len(y)), "n_abnormal": int((y == 1).sum()),
        "n_normal": int((y == 0).sum()),
        "auc_on_sample": round(roc_auc(y, logits), 4),
        "mass_inside": round(float(np.mean(inside)), 4), "region_area": round(area, 4),
        "boxes_mass_inside": _round(boxes_inside),
        "region": data.region,
        "shift_correlation": shift_r(dx),
        # reported, not judged: a shift off the averaged map's own step (it is no echo of it)
        "shift_correlation_odd": shift_r(dx - 1) if dx > 1 else None,
        "shift_px": f"{dx} of {w}",
        "flip_correlation": round(float(np.nanmean([r for r in flip_r if r is not None])), 4),
        **{f"deletion_{int(f * 100)}": {"drop_map": round(d.drop_map, 4),
                                        "drop_random": round(d.drop_random, 4),
                                        "ratio": _round(d.ratio, 3),
                                        "win_rate": round(d.win_rate, 3),
                                        "passes": d.passes(*DELETION_RULE[f])}
           for f, d in deletion.items()},
        "peak_median_abnormal": round(float(np.median(peaks[y == 1])), 4),
        "peak_median_normal": round(float(np.median(peaks[y == 0])), 4),
        "normal_to_abnormal_peak": _round(hm.faintness_ratio(peaks[y == 0], peaks[y == 1])),
        # 255 in the grey map: the 99th percentile of abnormal images' peak evidence
        "scale_logits": round(float(np.percentile(peaks[y == 1], 99)), 4),
    }


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


def report_auc(manifest: dict[str, Any]) -> float:
    """The AUC the card reports on the report split (the evaluation row for it)."""
    on = manifest["validation"]["on"]
    row = next(r for r in manifest["evaluation"] if r["set"] == on)
    return float(row["auc"])


def judge(figures: dict[str, Any], auc: float, c: Criteria = CRITERIA) -> dict[str, bool]:
    """Each criterion passed or not (None figures fail)."""
    def at_least(v: float | None, floor: float) -> bool:
        return v is not None and v >= floor

    return {
        "report_auc": auc >= c.min_report_auc,
        "mass_inside": at_least(figures["mass_inside"], mass_inside_floor(figures, c)),
        "shift_stability": at_least(figures["shift_correlation"], c.min_shift_correlation),
        "flip_stability": at_least(figures["flip_correlation"], c.min_flip_correlation),
        "deletion_10": bool(figures["deletion_10"]["passes"]),
        "deletion_20": bool(figures["deletion_20"]["passes"]),
        "normal_faint": (figures["normal_to_abnormal_peak"] is not None
                         and figures["normal_to_abnormal_peak"] <= c.max_normal_to_abnormal_peak),
        **({} if figures.get("boxes_area") is None  # no boxes: no pointing game
           else {"pointing_game": at_least(figures["pointing_game"], c.min_pointing_game)}),
    }


def mass_inside_floor(figures: dict[str, Any], c: Criteria = CRITERIA) -> float:
    """What the map's evidence inside the region must reach: ``min_mass_inside``, or
    where radiologists' boxes exist and reach less, what the boxes reach."""
    boxes = figures.get("boxes_mass_inside")
    if c.mass_inside_at_most_boxes and boxes is not None:
        return min(c.min_mass_inside, boxes)
    return c.min_mass_inside


BUNDLES = {"cxr": "cxr-pneumonia", "cxr-adult": "cxr-adult-abnormal",
           "fundus": "fundus-referable-dr"}


def check(key: str, args: argparse.Namespace) -> dict[str, Any]:
    import importlib

    from build.pipeline import RECIPES
    recipe_version = importlib.import_module(RECIPES[key]).RECIPE.version
    bundle = load_bundle(Path(args.models_dir) / BUNDLES[key] / recipe_version)
    data = held_out(key, Path(args.data_root), args.per_class, args.seed)
    step = SHIFT_AVERAGE_PX.get(key)
    with OnnxRunner(bundle.file("model.int8.onnx"), threads=args.threads) as runner:
        figures = measure(runner, data, args.seed, map_shifts(step))
    auc = report_auc(dict(bundle.manifest))
    passed = judge(figures, auc)
    return {
        "model": bundle.name, "version": bundle.version,
        "model_sha256": bundle.sha256("model.int8.onnx"),
        "validated": all(passed.values()), "shift_average_px": step,
        "method": METHOD.format(side=figures["map_side"], averaging=(
            f"averaged over the input and its copies moved {step} px right, down and both, "
            "each map moved back (one batch of 4 on the box)" if step else
            "no test-time augmentation")),
        "measured_on": data.name, "report_auc": auc,
        "scale_logits": figures.pop("scale_logits"),
        "checks": {"figures": figures, "passed": passed, "criteria": asdict(CRITERIA)},
        "command": f"python build/heatmap_checks.py --model {key} --per-class "
                   f"{args.per_class} --seed {args.seed}",
    }


def _deletion(d: dict[str, Any]) -> str:
    ratio = "n/a (random raised it)" if d["ratio"] is None else d["ratio"]
    return f"{ratio}, win {d['win_rate']}"


def table(results: list[dict[str, Any]]) -> str:
    head = ("model", "AUC", "in region (area; radiologists' boxes)", "shift r", "flip r",
            "del10 ratio, win", "del20 ratio, win", "normal/abn peak",
            "pointing game (box area)", "validated")
    rows = [" | ".join(head)]
    for r in results:
        f, p = r["checks"]["figures"], r["checks"]["passed"]

        def mark(v: Any, ok: bool) -> str:
            return f"{v}{'' if ok else ' ✗'}"
        rows.append(" | ".join([
            r["model"], mark(r["report_auc"], p["report_auc"]),
            mark(f"{f['mass_inside']} ({f['region_area']}"
                 + (f"; boxes {f['boxes_mass_inside']})" if f.get("boxes_mass_inside")
                    else ")"), p["mass_inside"]),
            mark(f["shift_correlation"], p["shift_stability"]),
            mark(f["flip_correlation"], p["flip_stability"]),
            mark(_deletion(f["deletion_10"]), p["deletion_10"]),
            mark(_deletion(f["deletion_20"]), p["deletion_20"]),
            mark(f["normal_to_abnormal_peak"], p["normal_faint"]),
            ("—" if f.get("pointing_game") is None else
             mark(f"{f['pointing_game']} ({f['boxes_area']})", p["pointing_game"])),
            "yes" if r["validated"] else "NO (maps off)"]))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from models.training.data import DEFAULT_DATA_ROOT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=[*BUNDLES, "all"])
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--per-class", type=int, default=100, help="images per class, at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    results = []
    for key in (list(BUNDLES) if args.model == "all" else [args.model]):
        t0 = time.perf_counter()
        result = check(key, args)
        print(f"[{key}] measured in {time.perf_counter() - t0:.0f}s", flush=True)
        results.append(result)
        if not args.no_write:
            HEATMAPS_DIR.mkdir(parents=True, exist_ok=True)
            (HEATMAPS_DIR / f"{result['model']}.json").write_text(
                json.dumps(result, indent=2) + "\n", encoding="utf-8")
            patch_bundle(Path(args.models_dir) / result["model"] / result["version"])
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
