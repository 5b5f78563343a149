"""Drift checks: do this site's recent images and scores still look like the reference?

Pure functions on windows of results (no store): ``monitor.py`` reads the windows,
and ``bench/drift.py`` feeds the same functions resampled windows to measure how often
they alarm on images that did not change.

Two references, each with its own checks:

- **the model's validation** (the bundle manifest's ``reference``): the score
  histogram (population stability index, PSI) and the share at or above the bundle's
  own threshold; for the router, the share refused and its confidence;
- **this site's baseline** (its first ``monitor_window`` results of that model version,
  or the window an admin accepted later): the same two, the share refused or not
  gradable, and the images themselves (brightness, contrast, where light and dark fall,
  colour, size), so a new camera or X-ray machine shows even when the scores do not.

Bounds (each must be passed to alarm, so a big window does not alarm on a trivial
change and a small one not on chance):

- PSI above the larger of 0.25 (the usual "major shift") and its chance level at
  ``ALPHA`` (stats.psi);
- a share doubled or halved (of images flagged, or of those not flagged) and different
  from the reference beyond chance at ``ALPHA``; refusals and ungradable photos alarm
  only when they rise;
- an image measure moved by at least half a standard deviation (``MIN_EFFECT``, a
  "medium" effect: a new machine moves some by several, and half a window of different
  images by about half that), beyond chance at ``ALPHA`` divided by the number of
  measures compared (Bonferroni);
- image size: the median width or height changed by more than ``SIZE_CHANGE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.monitoring import stats
from appliance.monitoring.notices import MEASURES, Notice, percent

ALPHA = 0.001
MIN_EFFECT = 0.5
SIZE_CHANGE = 0.2
BINS = 20


@dataclass
class Window:
    """Results of one model (or of the router) over a stretch of time."""

    scores: np.ndarray  # calibrated probabilities (models) or top router confidence
    measures: dict[str, np.ndarray] = field(default_factory=dict)  # per-image measures
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (width, height)
    flags: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. refused, ungradable
    first_id: int | None = None
    last_id: int | None = None

    @property
    def n(self) -> int:
        return int(len(self.scores))


def measures_from(stats_rows: list[dict[str, Any] | None]) -> dict[str, np.ndarray]:
    """Per-image measures (``results.image_stats``) as one array per measure; images
    without them (stored before they were taken) are left out of that measure."""
    names: dict[str, list[float]] = {}
    for row in stats_rows:
        if not row:
            continue
        names.setdefault("mean", []).append(row["mean"])
        names.setdefault("contrast", []).append(row["contrast"])
        for index, value in enumerate(row.get("layout") or []):
            names.setdefault(f"layout{index}", []).append(value)
        for index, value in enumerate(row.get("rgb") or []):
            names.setdefault(f"rgb{index}", []).append(value)
    return {k: np.asarray(v, dtype=np.float64) for k, v in names.items()}


def _share_notice(
    code: str,
    model: str | None,
    count: int,
    n: int,
    before: float,
    before_n: float | None,
    *,
    rise_only: bool = False,
) -> Notice | None:
    share = count / n if n else 0.0
    if rise_only and share <= before:
        return None
    if not (
        stats.ratio_moved(share, before)
        and stats.proportion_differs(count, n, before, before_n, ALPHA)
    ):
        return None
    params = {"model": model, "now": percent(share), "n": n, "before": percent(before)}
    return Notice(code, params, model)


def _psi_notice(code: str, model: str, recent: Window, shares, ref_n: float):
    result = stats.psi(stats.histogram(recent.scores, BINS), shares, ref_n, alpha=ALPHA)
    facts = {"psi": round(result.psi, 3), "bound": round(result.bound, 3), "bins": result.bins}
    if not result.shifted:
        return facts, None
    params = {
        "model": model,
        "n": recent.n,
        "psi": f"{result.psi:.2f}",
        "bound": f"{result.bound:.2f}",
    }
    return facts, Notice(code, params, model)


def vs_validation(
    model: str, recent: Window, reference: dict[str, Any], threshold: float
) -> tuple[dict[str, Any], list[Notice]]:
    """A screening model's recent scores against its validation (manifest reference)."""
    notices: list[Notice] = []
    ref_n = float(reference.get("n") or 0) or None
    facts, notice = _psi_notice(
        "scores_vs_validation", model, recent, reference["score_histogram"], ref_n or 1e9
    )
    notices += [notice] if notice else []
    flagged = int((recent.scores >= threshold).sum())
    facts.update(positivity=flagged / recent.n, reference_positivity=reference["positivity"])
    notice = _share_notice(
        "positivity_vs_validation", model, flagged, recent.n, reference["positivity"], ref_n
    )
    return facts, notices + ([notice] if notice else [])


def vs_site(
    model: str, baseline: Window, recent: Window, threshold: float
) -> tuple[dict[str, Any], list[Notice]]:
    """A screening model's recent results against this site's baseline."""
    notices: list[Notice] = []
    shares = stats.histogram(baseline.scores, BINS) / max(baseline.n, 1)
    facts, notice = _psi_notice("scores_vs_site", model, recent, shares, baseline.n)
    notices += [notice] if notice else []
    before = float((baseline.scores >= threshold).mean())
    flagged = int((recent.scores >= threshold).sum())
    facts.update(positivity=flagged / recent.n, baseline_positivity=before)
    notice = _share_notice("positivity_vs_site", model, flagged, recent.n, before, baseline.n)
    notices += [notice] if notice else []
    image_facts, image_notices = images_vs_site(model, baseline, recent)
    facts.update(image_facts)
    return facts, notices + image_notices


def images_vs_site(
    model: str | None, baseline: Window, recent: Window
) -> tuple[dict[str, Any], list[Notice]]:
    """The images themselves: the measure that moved most (if beyond the bounds), and
    the image size."""
    shared = [k for k in baseline.measures if k in recent.measures]
    alpha = ALPHA / max(1, len(shared))
    moved: list[tuple[float, str]] = []
    effects = {}
    for name in shared:
        shift = stats.mean_shift(baseline.measures[name], recent.measures[name], alpha)
        if shift is None:
            continue
        effects[name] = round(shift.effect, 2) if np.isfinite(shift.effect) else None
        if shift.shifted and abs(shift.effect) >= MIN_EFFECT:
            moved.append((abs(shift.effect), name))
    facts: dict[str, Any] = {"image_effects": effects}
    notices = []
    if moved:
        effect, name = max(moved)
        label = MEASURES[name.rstrip("0123456789")]
        shown = f"{min(effect, 99.0):.1f}"  # a constant measure that changed: "99"
        notices.append(
            Notice("images_changed", {"model": model, "measure": label, "effect": shown}, model)
        )
    if len(baseline.sizes) and len(recent.sizes):
        before = np.median(baseline.sizes, axis=0)
        now = np.median(recent.sizes, axis=0)
        facts.update(size_before=before.tolist(), size_now=now.tolist())
        change = np.abs(now - before) / np.maximum(before, 1)
        if (change > SIZE_CHANGE).any():
            notices.append(
                Notice(
                    "image_size_changed",
                    {
                        "model": model,
                        "now": f"{now[0]:.0f} × {now[1]:.0f}",
                        "before": f"{before[0]:.0f} × {before[1]:.0f}",
                    },
                    model,
                )
            )
    return facts, notices


def router_vs_validation(
    recent: Window, reference: dict[str, Any]
) -> tuple[dict[str, Any], list[Notice]]:
    """Every image through the router: refused more often, or less sure, than in
    validation. Fewer refusals than validation is normal (a clinic sends what it
    should), so only a rise alarms."""
    refused = int(recent.flags["refused"].sum())
    facts: dict[str, Any] = {
        "refused": refused / recent.n,
        "reference_refused": reference.get("refused"),
    }
    notices = []
    if reference.get("refused") is not None:
        notice = _share_notice(
            "refused_vs_validation",
            None,
            refused,
            recent.n,
            float(reference["refused"]),
            None,
            rise_only=True,
        )
        notices += [notice] if notice else []
    median = reference.get("top_probability_median")
    if median is not None:
        unsure = int((recent.scores < float(median)).sum())
        facts["below_reference_median"] = unsure / recent.n
        notice = _share_notice("router_unsure", None, unsure, recent.n, 0.5, None, rise_only=True)
        notices += [notice] if notice else []
    return facts, notices


def share_vs_site(
    code: str, flag: str, baseline: Window, recent: Window
) -> tuple[dict[str, Any], list[Notice]]:
    """A share that should not rise (refused, not gradable) against the site's baseline."""
    before = float(baseline.flags[flag].mean()) if baseline.n else 0.0
    count = int(recent.flags[flag].sum())
    facts = {flag: count / recent.n, f"baseline_{flag}": before}
    notice = _share_notice(code, None, count, recent.n, before, baseline.n, rise_only=True)
    return facts, [notice] if notice else []
