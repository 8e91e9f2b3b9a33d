"""Accuracy under a token budget: what avg@k would be had generation been cut at B tokens.

A sample counts as correct at budget B only if it was correct and its response (the paper's
length: the whole generation, interpreter outputs included) is at most B tokens long, so the curve
rises to the run's score at its longest response. Like the paper's Avg, the score of several tasks
is the plain mean of their per-task scores, each the mean over problems of the share of correct
samples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

SMALLEST_BUDGET = 256
POINTS = 8  # budgets shown: the largest powers of two up to the first one above the longest response


def budgets_for(longest: int) -> list[int]:
    """Powers of two from SMALLEST_BUDGET to the first one at or above the longest response (at most
    POINTS of them, the largest kept): 4k, 8k, ..., 32k for the protocol's 32k limit."""
    budgets = [SMALLEST_BUDGET]
    while budgets[-1] < longest:
        budgets.append(budgets[-1] * 2)
    return budgets[-POINTS:]


def response_length(grade: dict[str, Any]) -> int:
    """The paper's response length when the record has it, else the model-written tokens."""
    length = grade.get("response_tokens")
    return int(length if length is not None else grade.get("generated_tokens") or 0)


def budget_curve(
    grades: Iterable[dict[str, Any]], tasks: Sequence[str], budgets: Sequence[int]
) -> list[float]:
    """Accuracy (0..1) at each budget over `tasks`: the plain mean of per-task avg@k."""
    samples: dict[str, dict[str, list[tuple[bool, int]]]] = defaultdict(lambda: defaultdict(list))
    for g in grades:
        if g["task"] in tasks:
            samples[g["task"]][g["problem_id"]].append((bool(g["correct"]), response_length(g)))
    present = [t for t in tasks if samples.get(t)]
    if not present:
        return []
    curve = []
    for budget in budgets:
        per_task = []
        for task in present:
            problems = samples[task].values()
            shares = [sum(ok and n <= budget for ok, n in s) / len(s) for s in problems]
            per_task.append(sum(shares) / len(shares))
        curve.append(sum(per_task) / len(per_task))
    return curve
