"""The statistics behind calibration and drift: pure functions on numpy arrays.

No store, no settings, no scipy (the box does not ship it): the few distributions
needed are the standard library's normal distribution and two textbook approximations
(Wilson–Hilferty for chi-square quantiles, Cornish–Fisher for Student's t), accurate to
well under 1 % at the error rates used here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

Z95 = NormalDist().inv_cdf(0.975)  # 1.96: two-sided 95 % intervals shown to people


def z_for(alpha: float) -> float:
    """Two-sided critical value of the normal distribution for error rate ``alpha``."""
    return NormalDist().inv_cdf(1 - alpha / 2)


def wilson(successes: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (good at 0 %, 100 % and small counts)."""
    if total <= 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def chi2_quantile(q: float, df: int) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile."""
    z = NormalDist().inv_cdf(q)
    k = max(1, df)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def t_critical(alpha: float, df: float) -> float:
    """Two-sided critical value of Student's t (Cornish–Fisher expansion in 1/df)."""
    z = z_for(alpha)
    df = max(df, 1.0)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


# -- discrimination ---------------------------------------------------------------------
def auc_with_ci(scores: np.ndarray, labels: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Area under the ROC curve (Mann–Whitney, ties counted half) and its 95 % interval
    (Hanley & McNeil 1982). Needs at least one positive and one negative."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over ties: first index of each distinct value plus half its run.
    _, first, counts = np.unique(ranked, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    auc = (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    half = Z95 * math.sqrt(max(var, 0.0))
    return float(auc), (max(0.0, auc - half), min(1.0, auc + half))


def roc_points(
    scores: np.ndarray, labels: np.ndarray, max_points: int = 200
) -> list[tuple[float, float]]:
    """(1 - specificity, sensitivity) at every distinct score, thinned to ``max_points``,
    from (0, 0) to (1, 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tpr = np.cumsum(y)[last_of_run] / max(1, y.sum())
    fpr = np.cumsum(~y)[last_of_run] / max(1, (~y).sum())
    if len(tpr) > max_points:
        keep = np.unique(np.linspace(0, len(tpr) - 1, max_points).round().astype(int))
        tpr, fpr = tpr[keep], fpr[keep]
    return [(0.0, 0.0), *zip(fpr.tolist(), tpr.tolist(), strict=True), (1.0, 1.0)]


@dataclass(frozen=True)
class Counts:
    """Confirmed cases at or above (flagged) and below a threshold."""

    true_positive: int
    false_negative: int
    true_negative: int
    false_positive: int

    @property
    def sensitivity(self) -> float | None:
        positives = self.true_positive + self.false_negative
        return self.true_positive / positives if positives else None

    @property
    def specificity(self) -> float | None:
        negatives = self.true_negative + self.false_positive
        return self.true_negative / negatives if negatives else None

    def intervals(self) -> dict[str, tuple[float, float] | None]:
        return {
            "sensitivity": wilson(self.true_positive, self.true_positive + self.false_negative),
            "specificity": wilson(self.true_negative, self.true_negative + self.false_positive),
        }


class Confirmed:
    """Scores of the confirmed positives and negatives, sorted once, so the counts at any
    threshold are two binary searches (the calibration table asks for dozens)."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=bool)
        self.positives = np.sort(scores[labels])
        self.negatives = np.sort(scores[~labels])

    def at(self, threshold: float) -> Counts:
        """Flagged means score >= threshold, as the box triages."""
        missed = int(np.searchsorted(self.positives, threshold, side="left"))
        cleared = int(np.searchsorted(self.negatives, threshold, side="left"))
        return Counts(
            true_positive=len(self.positives) - missed,
            false_negative=missed,
            true_negative=cleared,
            false_positive=len(self.negatives) - cleared,
        )

    def threshold_for_sensitivity(self, target: float) -> float:
        """The highest threshold that still flags ``target`` of the confirmed positives:
        the score of the positive at that rank, lowered half-way to the next lower
        confirmed score (any case), so a case scoring a hair below it is still caught."""
        n = len(self.positives)
        caught = max(1, math.ceil(target * n - 1e-9))
        cut = float(self.positives[n - caught])
        below = np.concatenate(
            [self.positives[self.positives < cut], self.negatives[self.negatives < cut]]
        )
        if below.size:
            cut = (cut + float(below.max())) / 2
        # Three decimals, rounded down: the rounding never loses a case.
        return math.floor(cut * 1000) / 1000


def weighted_rates(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, threshold: float
) -> tuple[float | None, float | None]:
    """Sensitivity and specificity with each confirmed case weighted (Begg & Greenes
    correction: weight = 1 / the share of its stratum that was verified)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    weights = np.asarray(weights, dtype=np.float64)
    flagged = scores >= threshold
    pos, neg = weights[labels].sum(), weights[~labels].sum()
    sensitivity = float(weights[labels & flagged].sum() / pos) if pos else None
    specificity = float(weights[~labels & ~flagged].sum() / neg) if neg else None
    return sensitivity, specificity


# -- drift ------------------------------------------------------------------------------
def merge_bins(reference: Sequence[float], min_share: float = 0.05) -> list[tuple[int, int]]:
    """Groups of adjacent histogram bins, each holding at least ``min_share`` of the
    reference (the last group takes any remainder): sparse bins make PSI noisy."""
    groups: list[tuple[int, int]] = []
    start, mass = 0, 0.0
    for index, share in enumerate(reference):
        mass += float(share)
        if mass >= min_share:
            groups.append((start, index + 1))
            start, mass = index + 1, 0.0
    if start < len(reference):
        if groups:
            groups[-1] = (groups[-1][0], len(reference))
        else:
            groups.append((0, len(reference)))
    return groups


def histogram(scores: np.ndarray, bins: int = 20) -> np.ndarray:
    """Counts of probabilities in ``bins`` equal bins over [0, 1] (1.0 in the last)."""
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return counts


@dataclass(frozen=True)
class PsiResult:
    psi: float
    bound: float
    bins: int

    @property
    def shifted(self) -> bool:
        return self.psi > self.bound


def psi(
    observed: np.ndarray,
    reference_shares: Sequence[float],
    reference_n: float,
    *,
    alpha: float = 0.001,
    floor: float = 0.25,
) -> PsiResult:
    """Population stability index of ``observed`` counts against reference shares.

    Bins are merged to hold at least 5 % of the reference each; counts get half a case
    each so an empty bin is finite. With no change, n·PSI is about chi-square with
    (bins - 1) degrees of freedom, scaled by (1 + n/N) for a reference itself counted
    from N cases; the bound is the larger of the conventional "major shift" 0.25 and
    that distribution's 1 - ``alpha`` quantile, so small windows do not alarm by chance.
    """
    reference = np.asarray(reference_shares, dtype=np.float64)
    reference = reference / reference.sum()
    observed = np.asarray(observed, dtype=np.float64)
    groups = merge_bins(reference.tolist())
    ref = np.array([reference[a:b].sum() for a, b in groups])
    obs = np.array([observed[a:b].sum() for a, b in groups])
    n, k = obs.sum(), len(groups)
    p = (obs + 0.5) / (n + 0.5 * k)
    q = (ref * reference_n + 0.5) / (reference_n + 0.5 * k)
    value = float(np.sum((p - q) * np.log(p / q)))
    chance = chi2_quantile(1 - alpha, k - 1) * (1 / max(n, 1) + 1 / max(reference_n, 1))
    return PsiResult(psi=value, bound=max(floor, chance), bins=k)


def ratio_moved(observed: float, reference: float, factor: float = 2.0) -> bool:
    """Did a share double or halve (either the share itself or its complement)?"""
    pairs = ((observed, reference), (1 - observed, 1 - reference))
    for now, before in pairs:
        if before > 0 and now > 0 and (now / before >= factor or now / before <= 1 / factor):
            return True
        if before == 0 and now > 0 or now == 0 and before > 0:
            return True
    return False


def proportion_differs(
    count: int, total: int, reference: float, reference_n: float | None, alpha: float = 0.001
) -> bool:
    """Is count/total different from ``reference`` beyond chance at ``alpha``?

    Against a reference counted from ``reference_n`` cases: a two-proportion z-test
    with the pooled share; against an exact reference (``None``): whether the Wilson
    interval at ``alpha`` leaves it out (sound at 0 % and 100 % too)."""
    if total <= 0:
        return False
    if not reference_n:
        low, high = wilson(count, total, z_for(alpha))
        return not low <= reference <= high
    share = count / total
    pooled = (count + reference * reference_n) / (total + reference_n)
    variance = pooled * (1 - pooled) * (1 / total + 1 / reference_n)
    if variance <= 0:
        return False  # both all-or-nothing alike
    return abs(share - reference) / math.sqrt(variance) > z_for(alpha)


@dataclass(frozen=True)
class MeanShift:
    effect: float  # standardised difference (Cohen's d, pooled SD), recent minus baseline
    t: float
    critical: float

    @property
    def shifted(self) -> bool:
        return abs(self.t) > self.critical


def mean_shift(baseline: np.ndarray, recent: np.ndarray, alpha: float) -> MeanShift | None:
    """Welch's t-test of two windows of a per-image measure, and the effect size."""
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(recent, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1), b.var(ddof=1)
    se2 = va / len(a) + vb / len(b)
    pooled = math.sqrt((va + vb) / 2)
    diff = float(b.mean() - a.mean())
    if se2 <= 0 or pooled <= 0:  # both windows constant: any difference is a change
        if diff == 0:
            return MeanShift(0.0, 0.0, math.inf)
        return MeanShift(math.copysign(math.inf, diff), math.copysign(math.inf, diff), 0.0)
    df = (
        se2 * se2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1) or 1e-12)
    )
    return MeanShift(diff / pooled, diff / math.sqrt(se2), t_critical(alpha, df))
