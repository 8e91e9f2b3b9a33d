"""The numbers of the leaderboard: one `RunSummary` per measured run, and the rows of the main table
(the paper's columns, measured runs above the paper's reported rows).

Scores are avg@k in percent (the paper's "pass@1") with the 95% bootstrap interval over problems
that `cortbench score` computes. Avg is the `cort_math` group score (the plain mean of the five
tasks, as in the paper) and is only shown for runs that hold all five; tokens and tool calls are
the plain mean of the per-task means over the same tasks, so they weigh tasks as Avg does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from ..tasks.problems import TaskDataError
from ..tasks.registry import get_task, groups
from .budget import budget_curve, budgets_for, response_length
from .paper import PaperTable
from .runs import Run

GROUP = "cort_math"  # the paper's five columns, in its order
CHEM_TASK = "cort_chem"
TOP_LIBRARIES = 12


@dataclass(frozen=True)
class Score:
    """avg@k in percent with its 95% interval (None where unknown, as for reported rows)."""

    value: float
    low: float | None = None
    high: float | None = None
    k: int | None = None
    complete: bool = True

    @classmethod
    def of(cls, estimate: dict[str, Any], k: int | None = None, complete: bool = True) -> Score:
        low, high = estimate.get("ci") or (None, None)
        return cls(100 * estimate["value"], _percent(low), _percent(high), k, complete)


@dataclass
class RunSummary:
    """What the index page shows of one run: table cells and plot data, small enough to pickle."""

    name: str
    slug: str
    model: str
    tool: str  # the hint policy, or "no" when the interpreter was off
    scores: dict[str, Score]
    avg: Score | None  # the cort_math group, only when the run holds all its tasks
    headline: float | None  # Avg, else the plain mean of the run's tasks (percent): for plots
    headline_tasks: tuple[str, ...]
    tokens: float | None
    tool_calls: float | None
    samples: int
    code: dict[str, float | None]  # usage, success (0..1), calls per response
    purpose: dict[str, float] | None  # calculation / verification shares of executed cells
    behaviours: dict[str, float] | None  # share of trajectories showing each behaviour
    libraries: dict[str, float]  # top modules by adoption (0..1)
    budgets: list[int]
    budget_accuracy: list[float]  # percent, one per budget
    labels: tuple[str, ...] = ()  # the label sets its analysis holds: "purpose", "behaviours"
    notes: list[str] = field(default_factory=list)


def summarize_run(run: Run, slug: str) -> RunSummary:
    """The index's view of a loaded run."""
    results, analysis = run.results, run.analysis
    tasks = results.get("tasks", {})
    scores = {
        name: Score.of(t["avg@k"], t.get("k"), t.get("complete", True))
        for name, t in tasks.items()
        if _finite(t.get("avg@k", {}).get("value"))
    }
    group = results.get("groups", {}).get(GROUP)
    avg = Score.of(group["avg@k"], complete=group.get("complete", True)) if group else None
    headline_tasks = tuple(group["tasks"]) if group else tuple(scores)
    headline = avg.value if avg else _mean([scores[t].value for t in headline_tasks if t in scores])
    every = analysis.get("all", {})
    code = every.get("code", {})
    purpose = analysis.get("purpose", {}).get("all")
    behaviours = analysis.get("behaviours", {}).get("all")
    longest = max((response_length(g) for g in run.grades.values()), default=0)
    budgets = budgets_for(longest)
    return RunSummary(
        name=run.name,
        slug=slug,
        model=model_label(run.config),
        tool=tool_label(run.config),
        scores=scores,
        avg=avg,
        headline=headline,
        headline_tasks=headline_tasks,
        tokens=_mean([tasks[t]["tokens"]["all"] for t in headline_tasks if t in tasks]),
        tool_calls=_mean([tasks[t]["code"]["tool_calls_per_sample"] for t in headline_tasks if t in tasks]),
        samples=len(run.records),
        code={
            "usage": code.get("code_usage_rate"),
            "success": code.get("code_success_rate"),
            "calls": code.get("calls_per_response"),
        },
        purpose={p: purpose[p] for p in ("calculation", "verification")}
        if purpose and purpose["cells"]
        else None,
        behaviours={k: v["rate"] for k, v in behaviours.items()} if behaviours else None,
        libraries={m: lib["adoption"] for m, lib in list(every.get("libraries", {}).items())[:TOP_LIBRARIES]},
        budgets=budgets,
        budget_accuracy=[100 * a for a in budget_curve(run.grades.values(), headline_tasks, budgets)],
        labels=tuple(label for label in ("purpose", "behaviours") if label in analysis),
        notes=list(run.notes),
    )


def model_label(config: dict[str, Any]) -> str:
    """backend:model as run.json has it (the embedded default model has no name there)."""
    model = config.get("model") or "embedded default model"
    return f"{config.get('backend') or '?'}: {model}"


def tool_label(config: dict[str, Any]) -> str:
    if config.get("max_tool_calls") == 0:
        return "no"
    return f"yes ({config['hint']})" if config.get("hint") else "yes"


@dataclass(frozen=True)
class Column:
    key: str
    title: str


@dataclass
class Row:
    """One line of the main table: a measured run or a reported model from the paper."""

    kind: Literal["measured", "reported"]
    name: str
    detail: str
    href: str | None
    tool: str
    scores: dict[str, Score]
    avg: Score | None
    tokens: float | None = None
    tool_calls: float | None = None
    notes: list[str] = field(default_factory=list)


def task_columns(summaries: list[RunSummary]) -> list[Column]:
    """The paper's five columns, then cort_chem and any other task some run measured."""
    paper_tasks = groups()[GROUP].tasks
    others = sorted({t for s in summaries for t in s.scores} - set(paper_tasks) - {CHEM_TASK})
    chem = [CHEM_TASK] if any(CHEM_TASK in s.scores for s in summaries) else []
    return [Column(t, task_title(t)) for t in (*paper_tasks, *chem, *others)]


def task_title(name: str) -> str:
    try:
        return get_task(name).title
    except (TaskDataError, OSError, ValueError):
        return name


def leaderboard_rows(summaries: list[RunSummary], paper: PaperTable | None) -> list[Row]:
    """The measured rows, then the paper's reported ones (what the user ran comes first, not lost
    among the 14 published models); each best Avg first, rows without an Avg after, by name."""
    measured = [
        Row("measured", s.name, s.model, f"runs/{s.slug}/index.html", s.tool, s.scores, s.avg, s.tokens,
            s.tool_calls, s.notes)
        for s in summaries
    ]  # fmt: skip
    reported = [
        Row("reported", r.model, f"{r.size}, paper Table 1", None, "yes" if r.tool else "no",
            {t: Score(v) for t, v in r.scores.items()}, Score(r.avg))
        for r in (paper.rows if paper is not None else ())
    ]  # fmt: skip
    return [*_best_first(measured), *_best_first(reported)]


def _best_first(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.avg is None, -(r.avg.value if r.avg else 0), r.name))


def _percent(value: float | None) -> float | None:
    return 100 * value if _finite(value) else None


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and math.isfinite(value)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if _finite(v)]
    return sum(present) / len(present) if present else None
