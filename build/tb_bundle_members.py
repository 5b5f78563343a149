"""The shipped adult chest bundle's own members on the folds they never trained on.

    python build/tb_bundle_members.py [--score plain|shifts|peak-mean] [--folds 0,1,2,3,4|report]
                                      [--out FILE] [--append NOTE]

``build/tb_shortcuts.py`` trains a new model per choice and fold. This one trains
nothing: the served INT8 graph runs its 5 cross-fitted members as groups of one graph,
and member k never saw pool fold k. Exposing the members' own outputs measures the
shipped build on every fold, with the same shortcut checks, and lets a rule applied
at serving (how the score is read from the outputs) be compared on the same models.

- ``plain``: a member's logit for the film itself, as 2.2.0 serves the ensemble's;
- ``shifts``: the mean of its logits for the film and the copies the box already runs
  for the shift-averaged map (``map_shifts``: moved half a cell right, down and both).
  The score is the map's strongest 3x3 neighbourhood on an 8 x 8 grid, so a film moved
  4 px moves its peak against the grid, as the plain map moved (shift r 0.79);
- ``peak-mean``: its logit (the map's strongest 3x3 neighbourhood) less the map's mean,
  so evidence a hospital's look spreads over the whole film cancels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # why: run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from appliance.inference.postprocess import map_shifts, shifted_inputs  # noqa: E402
from models.training.data import DEFAULT_DATA_ROOT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the fused graph's tensors before the ensemble mean (build/fuse_ensemble.py names them
# by the exported module): logits N x members x 1, CAMs N x members x 1 x h x w and the
# grouped last block (members x channels)
MEMBER_LOGITS = "/Reshape_output_0"
MEMBER_CAMS = "/Reshape_1_output_0"
MEMBER_FEATURES = "/features/features.16/Relu_output_0"
SCORES = ("plain", "shifts", "peak-mean")


def member_session(model_path: Path):
    """An ONNX Runtime session of the served graph that also returns each member's outputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = onnx.load(str(model_path))
    for name in (MEMBER_LOGITS, MEMBER_CAMS, MEMBER_FEATURES):
        graph.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(graph.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def member_run(session, member: int | None, score: str = "plain", step: int = 4) -> Callable:
    """``run(x) -> (features, logits N x 1, CAMs N x 1 x h x w)`` of one member (``None``:
    the members averaged, as the box serves them), the input of ``tb_shortcuts.measure``;
    ``score`` picks how its logit is read."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}")
    shifts = map_shifts(step) if score == "shifts" else ((0, 0),)

    def outputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, cams, feats = session.run([MEMBER_LOGITS, MEMBER_CAMS, MEMBER_FEATURES],
                                          {"input": np.ascontiguousarray(x, np.float32)})
        if member is None:
            return feats.mean(axis=(2, 3)), logits.mean(axis=1), cams.mean(axis=1)
        width = feats.shape[1] // logits.shape[1]
        own = feats[:, member * width:(member + 1) * width].mean(axis=(2, 3))
        return own, logits[:, member], cams[:, member]

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats, logits, cams = [], [], []
        for i in range(0, len(x), 64):
            f, lg, cam = outputs(x[i:i + 64])
            if len(shifts) > 1:  # the copies' logits, averaged with the film's own
                copies = np.concatenate([shifted_inputs(xi, shifts[1:]) for xi in x[i:i + 64]])
                _, lc, _ = outputs(copies)
                lg = (lg + lc.reshape(len(lg), len(shifts) - 1, -1).sum(1)) / len(shifts)
            if score == "peak-mean":
                lg = lg - cam.mean(axis=(2, 3))
            feats.append(f)
            logits.append(lg)
            cams.append(cam)
        return np.concatenate(feats), np.concatenate(logits), np.concatenate(cams)

    return run


def main(argv: list[str] | None = None) -> int:
    from build.tb_shortcuts import card_row, measure
    from models.training.cxr_adult import RECIPE, load_sources

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    ap.add_argument("--models-dir", default=str(REPO / "models"))
    ap.add_argument("--score", default="plain", choices=SCORES)
    ap.add_argument("--folds", default="0,1,2,3,4",
                    help="pool folds (member k on fold k), or 'report': the report split's "
                         "films, which no member saw, scored by the served ensemble")
    ap.add_argument("--out", default=None, help="write the per-fold figures here as JSON")
    ap.add_argument("--append", metavar="NOTE", default=None,
                    help="append the folds' mean to models/loso/cxr-adult.json as a row "
                         "of the card's shortcut table, described by NOTE")
    args = ap.parse_args(argv)
    bundle = Path(args.models_dir) / RECIPE.name / RECIPE.version
    session = member_session(bundle / "model.int8.onnx")
    data = load_sources(Path(args.data_root), print)
    rows = []
    folds = [None] if args.folds == "report" else [int(f) for f in args.folds.split(",")]
    for fold in folds:
        checks = RECIPE.shortcut_sets(data, fold=fold, seed=0)
        rows.append({"fold": "report" if fold is None else fold,
                     **measure(member_run(session, fold, args.score), checks)})
        print(json.dumps(rows[-1]), flush=True)
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0] if k != "fold"}
    print(json.dumps({"bundle": f"{RECIPE.name} {RECIPE.version}", "score": args.score,
                      "folds": args.folds, "mean": mean}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"score": args.score, "folds": rows,
                                              "mean": mean}, indent=1) + "\n")
    if args.append:
        table = REPO / "models" / "loso" / "cxr-adult.json"
        doc = json.loads(table.read_text())
        which = ("as served (the members averaged), on the report split" if folds == [None]
                 else f"own members, folds {args.folds}")
        doc["rows"].append(card_row(f"{args.append} [the {RECIPE.version} bundle {which}]",
                                    mean))
        table.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
