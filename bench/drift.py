"""Drift alarm benchmark: how often it fires on images that did not change (false
alarms), and how often on images that did (adult films to the child model, a new
fundus camera).

    python bench/drift.py [--json] [--repeats 1000] [--seed 1]

Every monitoring test image (tests/data: 400 Kermany children of the report split,
98 NIH adult films, 30 IDRiD and 11 HRF photographs) goes once through the real
pipeline (router, model, image measures); then the box's own drift checks
(``appliance.monitoring.drift``) are run ``--repeats`` times on windows drawn at random:

- in distribution: a baseline and a recent window drawn without overlap from the same
  images (a permutation of images that did not change), and, against the validation
  reference (the bundle's own, or one measured on a random half when the bundle version
  has none), windows drawn from the other half;
- changed: a children's baseline against adult films (all of the recent window, or half
  of it), an IDRiD baseline against HRF photographs.

A row is an alarm when any check of that comparison raised a notice.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from appliance.config import load_config
from appliance.inference.bundle import read_manifest
from appliance.ingest.decode import decode_bytes
from appliance.monitoring import drift, stats
from appliance.screening.models import CXR, FUNDUS, ModelSet, models_dir, newest_bundles
from appliance.screening.pipeline import Screener

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def labelled(folder: Path) -> list[Path]:
    with open(folder / "labels.csv", newline="") as fh:
        return [folder / row["file"] for row in csv.DictReader(fh)]


def screen_all(config) -> dict[str, list]:
    models = ModelSet(config, log_progress=lambda line: None).load()
    screener = Screener(models, config)
    groups = {
        "children": labelled(DATA / "cxr64") + labelled(DATA / "cxr64" / "site"),
        "adults": labelled(DATA / "nih64"),
        "idrid": sorted((DATA / "fundus" / "cameras" / "idrid").glob("*.jpg")),
        "hrf": sorted((DATA / "fundus" / "cameras" / "hrf").glob("*.jpg")),
    }
    out = {}
    for name, paths in groups.items():
        results = [screener.screen(decode_bytes(p.read_bytes()), {}) for p in paths]
        out[name] = [r for r in results if r.probability is not None]
    models.close()
    return out


def window(results) -> drift.Window:
    return drift.Window(
        scores=np.array([r.probability for r in results]),
        measures=drift.measures_from([r.image_stats for r in results]),
    )


def rate(trials: list[list]) -> dict:
    alarms = [t for t in trials if t]
    codes: dict[str, int] = {}
    for notices in alarms:
        for code in {n.code for n in notices}:
            codes[code] = codes.get(code, 0) + 1
    return {
        "repeats": len(trials),
        "alarms": len(alarms),
        "rate": len(alarms) / len(trials),
        "by_check": codes,
    }


def site_trials(rng, base_pool, recent_pool, sizes, repeats, model, threshold, same=False):
    trials = []
    for _ in range(repeats):
        if same:  # one pool: a baseline and a recent window that do not overlap
            order = rng.permutation(len(base_pool))
            base = [base_pool[i] for i in order[: sizes[0]]]
            recent = [base_pool[i] for i in order[sizes[0] : sizes[0] + sizes[1]]]
        else:
            base = [base_pool[i] for i in rng.choice(len(base_pool), sizes[0], replace=False)]
            take = min(sizes[1], len(recent_pool))
            recent = [recent_pool[i] for i in rng.choice(len(recent_pool), take, replace=False)]
        trials.append(drift.vs_site(model, window(base), window(recent), threshold)[1])
    return trials


def validation_trials(rng, children, manifest, size, repeats):
    threshold = float(manifest["operating_points"]["suggested"]["threshold"])
    trials, origin = [], "bundle" if "reference" in manifest else "measured on a random half"
    for _ in range(repeats):
        order = rng.permutation(len(children))
        pool = [children[i] for i in order]
        reference = manifest.get("reference")
        if reference is None:
            half = np.array([r.probability for r in pool[:200]])
            reference = {
                "score_histogram": (stats.histogram(half) / len(half)).tolist(),
                "positivity": float((half >= threshold).mean()),
                "n": len(half),
            }
            pool = pool[200:]
        recent = [pool[i] for i in rng.choice(len(pool), size, replace=False)]
        trials.append(drift.vs_validation(CXR, window(recent), reference, threshold)[1])
    return trials, origin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(folder, environ={}, chest_population="child")
        screened = screen_all(config)
        manifest = read_manifest(newest_bundles(models_dir(config))[CXR])
    kids, adults = screened["children"], screened["adults"]
    idrid, hrf = screened["idrid"], screened["hrf"]
    n = args.repeats
    validation, origin = validation_trials(rng, kids, manifest, 100, n)
    rows = [
        (
            "in distribution",
            "children: baseline 200 vs recent 200 (this site)",
            site_trials(rng, kids, None, (200, 200), n, CXR, 0.5, same=True),
        ),
        (
            "in distribution",
            "children: baseline 100 vs recent 100 (this site)",
            site_trials(rng, kids, None, (100, 100), n, CXR, 0.5, same=True),
        ),
        (
            "in distribution",
            "children: baseline 200 vs recent 30 (this site)",
            site_trials(rng, kids, None, (200, 30), n, CXR, 0.5, same=True),
        ),
        ("in distribution", f"children: recent 100 vs validation ({origin})", validation),
        (
            "in distribution",
            "IDRiD: baseline 19 vs recent 11 (this site)",
            site_trials(rng, idrid, None, (19, 11), n, FUNDUS, 0.5, same=True),
        ),
        (
            "changed",
            "children 200 vs every adult film (97 screened)",
            site_trials(rng, kids, adults, (200, 98), n, CXR, 0.5),
        ),
        (
            "changed",
            "children 200 vs half adult films (50 of 100)",
            [
                drift.vs_site(
                    CXR,
                    window([kids[i] for i in rng.choice(len(kids), 200, False)]),
                    window(
                        [kids[i] for i in rng.choice(len(kids), 50, False)]
                        + [adults[i] for i in rng.choice(len(adults), 50, False)]
                    ),
                    0.5,
                )[1]
                for _ in range(n)
            ],
        ),
        (
            "changed",
            "children 200 vs adult films 30",
            site_trials(rng, kids, adults, (200, 30), n, CXR, 0.5),
        ),
        (
            "changed",
            "IDRiD 30 vs HRF 11 (new camera)",
            site_trials(rng, idrid, hrf, (30, 11), n, FUNDUS, 0.5),
        ),
        (
            "changed",
            "IDRiD 19 vs HRF 6 (new camera, few photos)",
            site_trials(rng, idrid, hrf, (19, 6), n, FUNDUS, 0.5),
        ),
    ]
    table = [{"kind": kind, "comparison": what, **rate(trials)} for kind, what, trials in rows]
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'':<16} {'comparison':<52} {'repeats':>7} {'alarms':>7} {'rate':>7}  checks")
    for row in table:
        checks = ", ".join(f"{k} {v}" for k, v in sorted(row["by_check"].items()))
        print(
            f"{row['kind']:<16} {row['comparison']:<52} {row['repeats']:>7} "
            f"{row['alarms']:>7} {100 * row['rate']:>6.1f}%  {checks}"
        )
    print("In distribution, the rate is the false-alarm rate; changed, the detection rate.")


if __name__ == "__main__":
    main()
