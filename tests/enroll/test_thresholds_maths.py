"""The order-statistic FRR bound (edge_runtime.thresholds), checked against exact binomial
sums and by simulation on score distributions whose true FRR is known in closed form."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edge_runtime.errors import ConfigError, DataError
from edge_runtime.thresholds import (
    binom_sf,
    certified_frr,
    choose_exceedances,
    coverage,
    frr_threshold,
    images_needed,
    images_needed_table,
)


def _exact_sf(k: int, n: int, p: Fraction) -> float:
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


@pytest.mark.parametrize(
    "n,k,p", [(10, 1, "1/10"), (30, 2, "1/20"), (60, 5, "1/7"), (200, 1, "1/200"), (50, 40, "3/5")]
)
def test_binomial_tail_matches_exact_rational_sum(n, k, p):
    assert binom_sf(k, n, float(Fraction(p))) == pytest.approx(_exact_sf(k, n, Fraction(p)), rel=1e-9, abs=1e-15)


def test_images_needed_is_the_smallest_n_that_certifies():
    for frr, conf, m in [(0.005, 0.95, 0), (0.01, 0.99, 0), (0.05, 0.9, 3), (0.02, 0.95, 1)]:
        n = images_needed(frr, conf, m)
        assert coverage(n, m, frr) >= conf > coverage(n - 1, m, frr)
    assert images_needed(0.005, 0.95) == 598  # ln(0.05) / ln(0.995) = 597.6
    assert "| 0.5% | 460 | 598 | 919 |" in images_needed_table()


def test_choose_exceedances_is_the_largest_m_that_keeps_the_confidence():
    n, frr, conf = 1000, 0.01, 0.95
    m = choose_exceedances(n, frr, conf)
    assert coverage(n, m, frr) >= conf > coverage(n, m + 1, frr)
    assert choose_exceedances(30, 0.005, 0.95) is None
    assert certified_frr(30, 0, 0.95) == pytest.approx(1 - 0.05 ** (1 / 30), rel=1e-9)


@pytest.mark.parametrize("n,frr,conf", [(60, 0.05, 0.9), (400, 0.02, 0.95)])
def test_bound_holds_over_repeated_enrollments(n, frr, conf):
    """Draw many enrollments from an exponential score law (true FRR of t = exp(-t)): the
    share of thresholds with FRR <= target must equal the predicted coverage (>= conf)."""
    rng = np.random.default_rng(1)
    trials = 3000
    scores = rng.exponential(size=(trials, n))
    hits = 0
    for row in scores:
        thr = frr_threshold(row, frr, conf)
        hits += math.exp(-thr.value) <= frr
    m = choose_exceedances(n, frr, conf)
    predicted = coverage(n, m, frr)
    sigma = math.sqrt(predicted * (1 - predicted) / trials)
    assert predicted >= conf
    assert abs(hits / trials - predicted) < 4 * sigma, (hits / trials, predicted)


def test_plain_quantile_would_miss_the_bound():
    """The naive (1 - frr) empirical quantile is right only about half the time: the check
    above is strong enough to tell the two rules apart."""
    rng = np.random.default_rng(2)
    n, frr = 400, 0.02
    ok = [math.exp(-np.quantile(row, 1 - frr)) <= frr for row in rng.exponential(size=(2000, n))]
    assert 0.3 < np.mean(ok) < 0.7


def test_threshold_rule_and_refusals():
    scores = np.linspace(0.0, 1.0, 30)
    with pytest.raises(ConfigError, match=r"needs at least 598 good images, got 30"):
        frr_threshold(scores, 0.005)
    weak = frr_threshold(scores, 0.005, best_effort=True)
    assert weak.best_effort and weak.exceedances == 0
    assert weak.value == np.nextafter(1.0, 2.0)  # the best enrollment image still passes (score >= thr is NG)
    assert weak.frr_bound == pytest.approx(0.0950, abs=1e-4)
    assert frr_threshold(scores, 0.1, margin=0.05).value == pytest.approx(1.05)
    assert not frr_threshold(scores, 0.1).best_effort
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="target FRR must be in"):
            frr_threshold(scores, bad)
    with pytest.raises(DataError, match="NaN"):
        frr_threshold([0.1, float("nan")], 0.5, 0.5)
    with pytest.raises(DataError, match="no good-part scores"):
        frr_threshold([], 0.1)
