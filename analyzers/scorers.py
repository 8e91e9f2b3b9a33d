"""Scorers: how a task's answers are graded and grouped for maj@k, chosen by name.

A task declares its scorer (`TaskSpec.scorer`), the runner writes it into each record
(`TrajectoryRecord.scorer`), and scoring, the RL reward and library adoption dispatch on it; nothing
here looks at task names or metadata to decide. Built in: `math-verify` (the CoRT protocol: the
whole generation parsed by math-verify against `$gold$`) and `chem` (cort_chem: tolerances,
formulas, canonical SMILES, choices; analyzers/chem.py). Users add their own with
`@register_scorer("name")` or the `cortbench.scorers` entry point (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..harness.records import TrajectoryRecord
from ..harness.registry import Registry
from .chem import answer_key, grade_chem
from .grading import Grade, Grader, grade

DEFAULT_SCORER = "math-verify"  # the protocol's, for tasks and records that name none


@dataclass(frozen=True)
class Item:
    """One answer to grade: the gold, the whole response, the problem's metadata."""

    gold: str
    response: str
    meta: dict[str, Any]


class Scorer(Protocol):
    """Grades answers and groups one problem's answers into equivalence classes (maj@k).
    `grader` is a math-verify pool to share (None: grade in this process). `domain` says what the
    problems are about ("math", "chemistry"): library adoption reports RDKit on chemistry."""

    domain: str

    def grade(self, items: Sequence[Item], grader: Grader | None) -> list[Grade]: ...

    def classes(
        self, grades: Sequence[Grade], items: Sequence[Item], grader: Grader | None
    ) -> list[int | None]:
        """One problem's answers (in sample order) -> class ids, equal ids for equivalent answers,
        numbered in order of first appearance; None for a sample without an answer."""
        ...


class ScorerError(ValueError):
    """An unknown scorer name, or a scorer that cannot be built."""


class MathVerifyScorer:
    """The CoRT protocol: math-verify over the whole generation; classes by verify-equality."""

    domain = "math"

    def grade(self, items: Sequence[Item], grader: Grader | None) -> list[Grade]:
        pairs = [(item.gold, item.response) for item in items]
        if not pairs:
            return []
        if grader is None:
            return [grade(gold, response) for gold, response in pairs]
        return grader.grade_many(pairs)

    def classes(
        self, grades: Sequence[Grade], items: Sequence[Item], grader: Grader | None
    ) -> list[int | None]:
        return answer_classes([g.extracted for g in grades], grader)


class ChemScorer:
    """The chemistry set's answers (analyzers/chem.py), graded in this process; classes by the
    answer's canonical key (number at the decimals asked, Hill formula, canonical SMILES, ...)."""

    domain = "chemistry"

    def grade(self, items: Sequence[Item], grader: Grader | None) -> list[Grade]:
        return [grade_chem(item.gold, item.response, item.meta) for item in items]

    def classes(
        self, grades: Sequence[Grade], items: Sequence[Item], grader: Grader | None
    ) -> list[int | None]:
        first: dict[str, int] = {}
        keys = [answer_key(g.extracted, item.meta) for g, item in zip(grades, items)]
        return [None if k is None else first.setdefault(k, len(first)) for k in keys]


def answer_classes(answers: Sequence[str | None], grader: Grader | None) -> list[int | None]:
    """Label answers so that equivalent ones (math-verify) share a label: each answer joins the class
    of the first earlier representative it matches, or starts a class. None (no answer) stays None."""
    distinct = list(dict.fromkeys(a for a in answers if a is not None))
    pairs = [(a, b) for j, b in enumerate(distinct) for a in distinct[:j]]
    same = dict(zip(pairs, MathVerifyScorer().grade([Item(a, f"${b}$", {}) for a, b in pairs], grader)))
    representatives: list[str] = []
    label: dict[str, int] = {}
    for b in distinct:
        match = next((a for a in representatives if same[(a, b)].correct), None)
        if match is None:
            representatives.append(b)
        label[b] = label[match] if match is not None else len(representatives) - 1
    return [None if a is None else label[a] for a in answers]


SCORERS: Registry[Scorer] = Registry("scorer", ScorerError, lambda: None)
register_scorer = SCORERS.register
register_scorer(DEFAULT_SCORER)(MathVerifyScorer)
register_scorer("chem")(ChemScorer)


def get_scorer(name: str) -> Scorer:
    return SCORERS.create(name)


def scorer_names() -> list[str]:
    return SCORERS.names()


def scorer_of(record: TrajectoryRecord) -> str:
    """The record's scorer: as written by the run, else its task's if the task is registered (a
    record another tool wrote), else the protocol's."""
    if record.scorer:
        return record.scorer
    from ..tasks.registry import get_task, task_names

    return get_task(record.task).scorer if record.task in task_names() else DEFAULT_SCORER


def is_chemistry(record: TrajectoryRecord) -> bool:
    """A chemistry problem: its scorer's domain says so."""
    return get_scorer(scorer_of(record)).domain == "chemistry"


def grade_items(items: Sequence[Item], scorers: Sequence[str], grader: Grader | None) -> list[Grade]:
    """Grade items that may need different scorers (`scorers[i]` for `items[i]`), in input order:
    each scorer sees its items in one call (one batch for the math-verify pool)."""
    grades: list[Grade | None] = [None] * len(items)
    for name in dict.fromkeys(scorers):
        indices = [i for i, s in enumerate(scorers) if s == name]
        for i, g in zip(indices, get_scorer(name).grade([items[i] for i in indices], grader)):
            grades[i] = g
    return grades  # type: ignore[return-value]  # every index was filled
