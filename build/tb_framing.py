"""How the adult TB bundle's score follows a film's framing, on films it never saw.

    python build/tb_framing.py [--models-dir DIR] [--folds 0,1,2,3,4] [--out FILE]

The shortcut table's "tb tight flagged" cuts 10 % of each side off the 64-px working
film and brings it back to 64 px, so it mixes two things: the framing and a softer
film. Here each is taken apart on held-out films, member k of the served INT8 graph on
pool fold k (``build/tb_bundle_members.py``): TB films cut from their 512-px originals
(framing only, at full detail), softened to 52 px and back (detail only), their outer
band blackened (the band's content gone, the lungs where they were), and padded (framed
looser). Flagged = at the threshold that flags 90 % of the same films as they are; the
NIH normals are cut and padded from their 64-px films (no larger ones exist).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # why: run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from appliance.inference.preprocess import squash  # noqa: E402
from models.training.data import DEFAULT_DATA_ROOT, read_image01  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cut(film: np.ndarray, share: float) -> np.ndarray:
    """``share`` of each side cut away: the film collimated tighter."""
    h, w = film.shape[:2]
    a, b = int(h * share), int(w * share)
    return film[a:h - a, b:w - b]


def cut_axis(film: np.ndarray, share: float, axis: int) -> np.ndarray:
    h, w = film.shape[:2]
    if axis == 0:
        return film[int(h * share):h - int(h * share)]
    return film[:, int(w * share):w - int(w * share)]


def blacken(film: np.ndarray, share: float) -> np.ndarray:
    """The outer band of ``share`` of each side set to black, nothing moved."""
    out = film.copy()
    h, w = out.shape[:2]
    a, b = int(h * share), int(w * share)
    out[:a], out[h - a:], out[:, :b], out[:, w - b:] = 0, 0, 0, 0
    return out


def pad(film: np.ndarray, share: float) -> np.ndarray:
    """A black border of ``share`` of each side added: the film framed looser."""
    a, b = int(film.shape[0] * share), int(film.shape[1] * share)
    return np.pad(film, ((a, a), (b, b)))


def soften(film: np.ndarray, detail: int) -> np.ndarray:
    return squash(squash(film, detail), film.shape[0])


def framings(originals: list[np.ndarray], working: np.ndarray, to_working) -> dict:
    """TB films' framings: ``originals`` at 512 px, ``working`` their 64-px films."""
    at = lambda change: [to_working(change(f)) for f in originals]  # noqa: E731
    return {
        "TB films: cut 5 % a side": at(lambda f: cut(f, 0.05)),
        "TB films: cut 10 % a side": at(lambda f: cut(f, 0.10)),
        "TB films: cut 15 % a side": at(lambda f: cut(f, 0.15)),
        "TB films: cut 10 % top and bottom only": at(lambda f: cut_axis(f, 0.10, 0)),
        "TB films: cut 10 % left and right only": at(lambda f: cut_axis(f, 0.10, 1)),
        "TB films: outer 10 % blackened, nothing moved": at(lambda f: blacken(f, 0.10)),
        "TB films: padded 10 % a side (framed looser)": at(lambda f: pad(f, 0.10)),
        "TB films: softened to 52 px, not cut": [soften(f, 52) for f in working],
    }


def main(argv: list[str] | None = None) -> int:
    from build.tb_bundle_members import member_run, member_session
    from models.training.cxr_adult import RECIPE, load_sources
    from models.training.tb import to_working

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    ap.add_argument("--models-dir", default=str(REPO / "models"))
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--out", default=None, help="write the per-fold figures here as JSON")
    args = ap.parse_args(argv)
    session = member_session(Path(args.models_dir) / RECIPE.name / RECIPE.version
                             / "model.int8.onnx")
    data = load_sources(Path(args.data_root), print)
    base = Path(args.data_root) / "cxr" / "tbx11k-tb600"
    with open(base / "labels.csv", newline="") as fh:
        originals = [read_image01(base / r["file"]) for r in csv.DictReader(fh)]
    splits = RECIPE.splits(data)
    _, nih_films, _ = RECIPE._films(data)
    prep = lambda films: np.stack([RECIPE._prep(f) for f in films])  # noqa: E731
    per_fold: dict[str, list[float]] = {}
    for fold in (int(f) for f in args.folds.split(",")):
        tb_i = np.flatnonzero(~splits["tb_report"] & (splits["tb_folds"] == fold))
        nn_i = np.flatnonzero(~splits["nih_report"] & (splits["nih_folds"] == fold)
                              & (data.nih_y == 0))
        run = member_run(session, fold)
        _, as_is, _ = run(prep(data.tb.images[tb_i]))
        threshold = np.quantile(as_is[:, 0], 0.10)
        sets = framings([originals[i] for i in tb_i], data.tb.images[tb_i], to_working)
        sets["NIH normals: as they are"] = list(nih_films[nn_i])
        sets["NIH normals: cut 10 % a side"] = [squash(cut(f, 0.10), 64) for f in nih_films[nn_i]]
        sets["NIH normals: padded 10 % a side"] = [pad(f, 0.10) for f in nih_films[nn_i]]
        for name, films in sets.items():
            _, logits, _ = run(prep(films))
            per_fold.setdefault(name, []).append(round(float(np.mean(logits[:, 0] >= threshold)),
                                                       3))
        print(f"fold {fold} done", flush=True)
    print(f"\n{RECIPE.name} {RECIPE.version}: flagged at the threshold that flags 0.90 of "
          f"the held-out TB films as they are (member k on pool fold k)\n")
    print("| films | flagged (mean) | per fold |\n|---|---|---|")
    for name, values in per_fold.items():
        print(f"| {name} | {np.mean(values):.3f} | {' '.join(f'{v:.2f}' for v in values)} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"bundle": f"{RECIPE.name} {RECIPE.version}",
                                              "flagged_per_fold": per_fold}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
