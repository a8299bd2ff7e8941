"""The regression decision: thresholds, significance tests, exact comparison, multiple comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from torchscope.analyzers.diff.stats import (
    MIN_SAMPLES_MANN_WHITNEY, adjust_p_values, compare_exact, compare_presence, compare_samples,
    compare_samples_many,
)

RNG = np.random.default_rng(7)


def _noisy(mean: float, n: int, noise: float, seed: int) -> np.ndarray:
    return mean * (1.0 + noise * np.random.default_rng(seed).standard_normal(n))


def test_identical_samples_are_unchanged():
    x = _noisy(100.0, 8, 0.02, 1)
    c = compare_samples(x, x.copy())
    assert c.verdict == "unchanged"
    assert c.delta == 0 and c.ratio == 1.0
    assert c.method == "mann-whitney"


def test_clear_slowdown_is_a_significant_regression():
    base, new = _noisy(100.0, 8, 0.01, 1), _noisy(120.0, 8, 0.01, 2)
    c = compare_samples(base, new)
    assert c.verdict == "regression"
    assert c.method == "mann-whitney" and c.p_value < 0.01
    assert c.ratio == pytest.approx(np.median(new) / np.median(base))
    lo, hi = c.interval
    assert 0 < lo <= c.delta <= hi


def test_speedup_is_an_improvement_and_direction_flips_it():
    base, new = _noisy(100.0, 8, 0.01, 1), _noisy(80.0, 8, 0.01, 2)
    assert compare_samples(base, new).verdict == "improvement"
    # for a higher-is-better metric (direction -1) the same drop is a regression
    assert compare_samples(base, new, direction=-1).verdict == "regression"


def test_change_under_the_relative_threshold_is_unchanged_even_when_significant():
    base, new = np.full(10, 100.0) + np.arange(10) * 0.01, np.full(10, 103.0) + np.arange(10) * 0.01
    c = compare_samples(base, new, threshold=0.05)
    assert c.p_value < 0.001  # clearly significant ...
    assert c.verdict == "unchanged"  # ... but only 3 %
    assert compare_samples(base, new, threshold=0.02).verdict == "regression"


def test_change_under_min_delta_is_unchanged():
    base, new = _noisy(1000.0, 8, 0.001, 1), _noisy(1200.0, 8, 0.001, 2)
    assert compare_samples(base, new, min_delta=100.0).verdict == "regression"
    assert compare_samples(base, new, min_delta=500.0).verdict == "unchanged"


def test_large_noise_makes_a_shift_not_significant():
    base = np.array([100.0, 60.0, 150.0, 90.0, 130.0])
    new = np.array([110.0, 70.0, 160.0, 85.0, 140.0])  # medians +10 %, but the spread swamps it
    c = compare_samples(base, new)
    assert c.method == "mann-whitney"
    assert c.p_value > 0.05
    assert c.verdict == "not_significant"


def test_few_samples_fall_back_to_a_bootstrap_interval():
    base, new = np.array([100.0, 101.0, 99.0]), np.array([130.0, 131.0, 129.0])
    c = compare_samples(base, new)
    assert c.method == "bootstrap" and c.p_value is None
    assert c.interval[0] > 0
    assert c.verdict == "regression"
    overlapping = compare_samples(np.array([100.0, 140.0, 60.0]), np.array([115.0, 70.0, 150.0]))
    assert overlapping.method == "bootstrap"
    assert overlapping.interval[0] < 0 < overlapping.interval[1]
    assert overlapping.verdict == "not_significant"


def test_bootstrap_interval_is_reproducible():
    base, new = np.array([10.0, 12.0, 11.0]), np.array([14.0, 13.0, 15.0])
    assert compare_samples(base, new).interval == compare_samples(base, new).interval


def test_single_samples_are_decided_by_thresholds_alone():
    c = compare_samples([100.0], [110.0])
    assert c.method == "single" and c.verdict == "regression"
    assert compare_samples([100.0], [103.0]).verdict == "unchanged"


def test_mann_whitney_needs_enough_samples_on_both_sides():
    n = MIN_SAMPLES_MANN_WHITNEY
    assert compare_samples(np.arange(n) + 100.0, np.arange(n) + 200.0).method == "mann-whitney"
    assert compare_samples(np.arange(n - 1) + 100.0, np.arange(n) + 200.0).method == "bootstrap"


def test_zero_base_counts_as_an_infinite_change():
    c = compare_samples(np.zeros(6), np.full(6, 5e6))
    assert math.isinf(c.ratio)
    assert c.verdict == "regression"
    assert c.to_dict()["ratio"] is None  # JSON has no infinity


def test_exact_values():
    assert compare_exact(100.0, 100.0).verdict == "unchanged"
    c = compare_exact(100.0, 101.0)
    assert c.verdict == "changed" and c.delta == 1.0 and c.method == "exact"
    assert compare_exact(100.0, 101.0, direction=1).verdict == "regression"
    assert compare_exact(100.0, 99.0, direction=1).verdict == "improvement"
    assert compare_exact(0.1 + 0.2, 0.3).verdict == "unchanged"  # round-off is not a change


def test_exact_values_pass_the_same_thresholds_as_sampled_ones():
    # +1.1 % kernels per step under a 5 % threshold: not a change (the bug of issue 14)
    assert compare_exact(1428.0, 1444.0, threshold=0.05).verdict == "unchanged"
    assert compare_exact(1428.0, 1444.0, threshold=0.01).verdict == "changed"
    assert compare_exact(1428.0, 1444.0, threshold=0.01, direction=1).verdict == "regression"
    # an absolute change at or under min_delta is none either, however large relatively
    assert compare_exact(2.0, 4.0, threshold=0.05, min_delta=2.0).verdict == "unchanged"
    assert compare_exact(2.0, 4.1, threshold=0.05, min_delta=2.0).verdict == "changed"
    # a sampled metric of the same values reaches the same verdicts
    assert compare_samples([1428.0], [1444.0], direction=0, threshold=0.05).verdict == "unchanged"
    assert compare_samples([1428.0], [1444.0], direction=0, threshold=0.01).verdict == "changed"


def test_exact_vectors_change_by_their_total_absolute_difference():
    # 2 of 400 tokens moved: an absolute difference of 4, 1 % of the base total
    assert compare_exact([100, 100, 100, 100], [102, 98, 100, 100], threshold=0.01).verdict == "unchanged"
    assert compare_exact([100, 100, 100, 100], [102, 98, 100, 100], threshold=0.005).verdict == "changed"


def test_exact_vectors():
    assert compare_exact([4, 4, 4, 4], [4.0, 4.0, 4.0, 4.0]).verdict == "unchanged"
    c = compare_exact([4, 4, 4, 4], [6, 2, 4, 4])
    assert c.verdict == "changed" and c.delta == 4.0
    assert compare_exact([4, 4], [4, 4, 0]).verdict == "changed"


def test_presence():
    assert compare_presence(False, True, new=5.0).verdict == "added"
    assert compare_presence(True, False, base=5.0).verdict == "removed"
    assert compare_samples([], [1.0, 2.0]).verdict == "added"
    assert compare_exact(3.0, None).verdict == "removed"


def test_adjusted_p_values_are_never_smaller_and_keep_none():
    raw = [0.001, None, 0.04, 0.03, 0.5]
    adj = adjust_p_values(raw)
    assert adj[1] is None
    for r, a in zip(raw, adj):
        if r is not None:
            assert a >= r
    assert adj[2] > 0.04 or adj[2] == pytest.approx(0.04)


@settings(max_examples=25, deadline=None)
@given(shift=st.floats(min_value=0.5, max_value=2.0), seed=st.integers(0, 10_000))
def test_vectorised_comparison_matches_one_at_a_time(shift, seed):
    rng = np.random.default_rng(seed)
    bases = [100 + rng.standard_normal(6) for _ in range(4)]
    news = [b * shift + rng.standard_normal(6) for b in bases]
    many = compare_samples_many(bases, news, direction=[1] * 4, min_delta=[0.0] * 4)
    for b, n, c in zip(bases, news, many):
        one = compare_samples(b, n)
        assert (one.verdict, one.p_value, one.delta) == (c.verdict, c.p_value, c.delta)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12))
def test_a_sample_compared_with_itself_never_regresses(seed, n):
    x = 100 * (1 + 0.2 * np.random.default_rng(seed).standard_normal(n))
    assert compare_samples(x, x.copy()).verdict == "unchanged"
