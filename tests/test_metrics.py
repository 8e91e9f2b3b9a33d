"""Metrics with uncertainty: exact values on small cases, against brute force where possible."""

from itertools import combinations
from math import isclose

import numpy as np

from cortbench.analyzers.metrics import estimate, majority_correct, mean_of, pass_at_k


def test_unbiased_pass_at_k_equals_the_fraction_of_k_subsets_with_a_correct_sample():
    for outcomes in ([1, 0, 0, 0], [1, 1, 0, 0, 0, 1], [0] * 5, [1] * 3, [0, 1, 0, 0, 0, 0, 0, 1]):
        n = len(outcomes)
        for k in range(1, n + 1):
            subsets = list(combinations(outcomes, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert isclose(pass_at_k(n, sum(outcomes), k), brute), (outcomes, k)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(16, 4, 1) == 0.25 and pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0


def test_estimate_mean_standard_error_and_bootstrap_interval():
    e = estimate([0.0, 1.0, 0.5, 0.5])
    assert e.value == 0.5 and e.n == 4
    assert isclose(e.se, np.std([0, 1, 0.5, 0.5], ddof=1) / 2)
    assert e.ci[0] < 0.5 < e.ci[1] and 0 <= e.ci[0] and e.ci[1] <= 1
    assert estimate([0.0, 1.0, 0.5, 0.5]).ci == e.ci  # seeded: reproducible
    assert estimate([1.0] * 10).ci == (1.0, 1.0) and estimate([1.0] * 10).se == 0.0


def test_bootstrap_interval_covers_about_95_percent():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        scores = rng.binomial(1, 0.3, size=60).astype(float)
        low, high = estimate(scores, seed=trial, samples=500).ci
        covered += low <= 0.3 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_group_mean_is_the_plain_mean_of_task_scores():
    a, b = estimate([1.0, 0.0]), estimate([1.0, 1.0, 1.0, 0.0])
    group = mean_of([a, b])
    assert isclose(group.value, (0.5 + 0.75) / 2)  # not weighted by problems
    assert isclose(group.se, np.sqrt(a.se**2 + b.se**2) / 2)
    assert group.ci[0] <= group.value <= group.ci[1]


def test_majority_vote_first_largest_group_wins_and_unanswered_samples_do_not_vote():
    assert majority_correct([False, True, True, False], [0, 1, 1, 0]) is False  # tie: class 0 came first
    assert majority_correct([False, True, True, False], [None, 1, 1, 0]) is True
    assert majority_correct([False, False], [None, None]) is False
    assert majority_correct([True, False, False], [0, 1, 2]) is True  # all ties: the first answer
