"""The statistics behind calibration and drift, against textbook values and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from appliance.monitoring import stats


def test_wilson_interval_matches_the_published_worked_example():
    # Newcombe (1998), Table I: 81 of 263 -> 0.2553 to 0.3662.
    low, high = stats.wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == pytest.approx(1.0)
    assert stats.wilson(0, 0) is None


@pytest.mark.parametrize(
    ("alpha", "df", "expected"),
    [(0.05, 5, 2.5706), (0.001, 22, 3.7921), (0.01, 10, 3.1693), (0.001, 300, 3.3232)],
)
def test_t_critical_values_match_the_tables(alpha, df, expected):
    assert stats.t_critical(alpha, df) == pytest.approx(expected, rel=0.002)


@pytest.mark.parametrize(
    ("q", "df", "expected"), [(0.999, 9, 27.877), (0.95, 19, 30.144), (0.999, 2, 13.816)]
)
def test_chi_square_quantiles_are_close_to_the_tables(q, df, expected):
    # Wilson–Hilferty: within 3 %, and on the high (conservative) side for few degrees.
    assert stats.chi2_quantile(q, df) == pytest.approx(expected, rel=0.03)
    assert stats.chi2_quantile(0.999, 2) >= 13.816


def brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_counts_ties_as_half_and_matches_brute_force():
    rng = np.random.default_rng(4)
    scores = np.round(rng.random(300), 2)  # many ties
    labels = rng.random(300) < 0.3
    auc, (low, high) = stats.auc_with_ci(scores + 0.2 * labels, labels)
    assert auc == pytest.approx(brute_auc(scores + 0.2 * labels, labels))
    assert low < auc < high and high - low < 0.2
    assert stats.auc_with_ci(np.array([0.1, 0.9]), np.array([False, True]))[0] == 1.0


def test_roc_points_run_from_corner_to_corner_and_follow_the_counts():
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.2])
    labels = np.array([True, True, False, True, False])
    points = stats.roc_points(scores, labels)
    assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
    assert (0.0, 1 / 3) in points and (0.5, 2 / 3) in points  # the 0.8 tie is one step


def test_counts_flag_at_or_above_the_threshold_as_the_box_triages():
    confirmed = stats.Confirmed(np.array([0.2, 0.5, 0.5, 0.9]), np.array([0, 1, 0, 1], bool))
    counts = confirmed.at(0.5)
    assert (counts.true_positive, counts.false_negative) == (2, 0)
    assert (counts.true_negative, counts.false_positive) == (1, 1)
    assert counts.sensitivity == 1.0 and counts.specificity == 0.5


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 0.99])
def test_the_recommended_threshold_keeps_the_target_and_is_the_highest_that_does(target):
    rng = np.random.default_rng(7)
    labels = rng.random(400) < 0.4
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1).round(3)
    confirmed = stats.Confirmed(scores, labels)
    threshold = confirmed.threshold_for_sensitivity(target)
    assert confirmed.at(threshold).sensitivity >= target
    # A step higher, to the next positive's score, loses the target.
    above = np.sort(scores[labels])
    above = above[above > threshold]
    assert confirmed.at(float(above[0]) + 1e-9).sensitivity < target


def test_begg_greenes_weights_undo_verification_of_mostly_flagged_images():
    rng = np.random.default_rng(11)
    n = 100_000
    truth = rng.random(n) < 0.2
    scores = np.clip(rng.normal(0.3 + 0.35 * truth, 0.15), 0, 1)
    flagged = scores >= 0.5
    # Flagged images are nearly all sent for the test; the others one in twenty.
    verified = rng.random(n) < np.where(flagged, 0.9, 0.05)
    weights = np.where(
        flagged,
        flagged.sum() / (verified & flagged).sum(),
        (~flagged).sum() / (verified & ~flagged).sum(),
    )[verified]
    true_se, true_sp = (
        (flagged & truth).sum() / truth.sum(),
        (~flagged & ~truth).sum() / (~truth).sum(),
    )
    naive = stats.Confirmed(scores[verified], truth[verified]).at(0.5)
    assert naive.sensitivity > true_se + 0.08  # the bias the warning is about
    assert naive.specificity < true_sp - 0.2
    se, sp = stats.weighted_rates(scores[verified], truth[verified], weights, 0.5)
    assert se == pytest.approx(true_se, abs=0.03) and sp == pytest.approx(true_sp, abs=0.01)


def test_bins_merge_until_each_holds_five_percent_of_the_reference():
    reference = [0.6, 0.01, 0.01, 0.01, 0.01, 0.01, 0.05, 0.3]
    assert stats.merge_bins(reference) == [(0, 1), (1, 6), (6, 7), (7, 8)]
    assert stats.merge_bins([0.01] * 3) == [(0, 3)]


def test_psi_is_quiet_on_samples_of_the_reference_and_loud_on_a_shift():
    rng = np.random.default_rng(3)
    reference = stats.histogram(rng.beta(0.5, 0.5, 5000)) / 5000
    alarms = 0
    for _ in range(400):
        window = stats.histogram(rng.beta(0.5, 0.5, 60))
        alarms += stats.psi(window, reference, 5000).shifted
    assert alarms <= 2  # alpha = 0.001 plus the 0.25 floor: about never
    shifted = stats.psi(stats.histogram(rng.beta(2, 0.5, 60)), reference, 5000)
    assert shifted.shifted and shifted.psi > 0.25


def test_shares_doubled_or_halved_count_both_what_is_flagged_and_what_is_not():
    assert stats.ratio_moved(0.2, 0.1) and stats.ratio_moved(0.05, 0.1)
    assert stats.ratio_moved(0.9, 0.7)  # not flagged: 10 % against 30 %
    assert not stats.ratio_moved(0.8, 0.7)
    assert stats.proportion_differs(40, 100, 0.1, None)
    assert not stats.proportion_differs(14, 100, 0.1, None)
    assert not stats.proportion_differs(0, 50, 0.0, None)
    assert stats.proportion_differs(30, 200, 0.05, 1000)
    assert not stats.proportion_differs(3, 30, 0.05, 1000)


def test_mean_shift_tells_a_real_change_from_noise():
    rng = np.random.default_rng(5)
    same = stats.mean_shift(rng.normal(0, 1, 40), rng.normal(0, 1, 12), 0.001)
    moved = stats.mean_shift(rng.normal(0, 1, 40), rng.normal(2.5, 1, 12), 0.001)
    assert not same.shifted and moved.shifted and moved.effect > 1.5
    constant = stats.mean_shift(np.full(5, 600.0), np.full(5, 1400.0), 0.001)
    assert constant.shifted
    assert stats.mean_shift(np.ones(1), np.ones(5), 0.001) is None
