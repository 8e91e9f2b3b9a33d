"""Accuracy metrics over problems, each with a standard error and a bootstrap confidence interval.

The unit of uncertainty is the problem: a benchmark is a sample of problems, and the k samples of
one problem are not independent evidence. So every metric is first reduced to one score per
problem, and its error bars come from the spread of those scores: the standard error of their mean,
and a percentile bootstrap that resamples problems (seeded, so results are reproducible).

- avg@k: the mean over problems of the fraction of correct samples (the paper's "pass@1").
- pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) per problem.
- maj@k: the first k samples of a problem vote; answers are grouped by equivalence (verify), the
  first largest group wins, and the problem counts as solved if that group is correct.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import comb

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over problems with its uncertainty; `replicates` are kept to combine tasks."""

    value: float
    se: float
    ci: tuple[float, float]
    n: int  # problems
    replicates: np.ndarray | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("replicates")
        data["ci"] = list(self.ci)
        return data


def estimate(per_problem: Sequence[float], *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> Estimate:
    """Mean, standard error and percentile bootstrap interval of per-problem scores."""
    scores = np.asarray(per_problem, dtype=float)
    m = len(scores)
    if m == 0:
        return Estimate(float("nan"), float("nan"), (float("nan"), float("nan")), 0)
    se = float(scores.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan")
    rng = np.random.default_rng(seed)
    replicates = scores[rng.integers(0, m, size=(samples, m))].mean(axis=1)
    return Estimate(float(scores.mean()), se, _interval(replicates), m, replicates)


def mean_of(estimates: Sequence[Estimate]) -> Estimate:
    """The plain mean of task scores (the paper's benchmark average). Tasks are independent
    samples, so the standard error combines in quadrature and bootstrap replicates average."""
    value = float(np.mean([e.value for e in estimates]))
    se = float(np.sqrt(sum(e.se**2 for e in estimates)) / len(estimates))
    every = [e.replicates for e in estimates if e.replicates is not None]
    if len(every) == len(estimates):
        replicates = np.mean(every, axis=0)
        return Estimate(value, se, _interval(replicates), sum(e.n for e in estimates), replicates)
    return Estimate(value, se, (float("nan"), float("nan")), sum(e.n for e in estimates))


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


MAJ_EMPTY = ("abstain", "own-group")  # what a sample without an answer does in a majority vote


def majority_correct(
    correct: Sequence[bool], answer_class: Sequence[int | None], *, empty: str = "abstain"
) -> bool:
    """Whether the first largest group of equivalent answers is correct. Samples without an answer
    (class None) do not vote (`empty="abstain"`, cortbench's default), or each forms its own group
    (`"own-group"`, as CoRT's public code does: such a group can win a tie, and loses); if no sample
    has an answer, the vote fails."""
    if empty not in MAJ_EMPTY:
        raise ValueError(f"empty must be one of {MAJ_EMPTY}, not {empty!r}")
    if empty == "own-group":  # a distinct class for each sample without an answer, never correct
        classes = [-1 - i if c is None else c for i, c in enumerate(answer_class)]
        correct = [ok and c >= 0 for ok, c in zip(correct, classes)]
        answer_class = classes
    votes = Counter(c for c in answer_class if c is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(c for c in answer_class if c is not None and votes[c] == top)
    return any(ok for ok, c in zip(correct, answer_class) if c == winner)
