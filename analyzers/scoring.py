"""Score a run from its saved records: grade every sample, then compute the paper's metrics.

`score_run` never regenerates anything: it reads runs/<name>/samples.jsonl, grades each sample with
math-verify (a sample whose grading fails is counted wrong and flagged, never dropped), writes the
per-sample grades to grades.jsonl and the metrics to results.json (schema: docs/results.md).
Records without a gold answer (`cortbench serve --record` of a request that sent none) are kept in
grades.jsonl but not scored; a task's k and problems are compared with what run.json asked for, so
an unfinished run says so instead of passing for a complete run with fewer samples.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from ..harness.console import plural
from ..harness.records import TrajectoryRecord
from ..harness.store import read_run
from ..tasks.loading import source_of
from ..tasks.problems import TaskDataError
from ..tasks.registry import get_task, groups
from .grading import Grade, Grader
from .metrics import MAJ_EMPTY, Estimate, estimate, majority_correct, mean_of, pass_at_k
from .results_file import GRADES, update_results, write_atomic
from .scorers import Item, get_scorer, grade_items, scorer_of

SCHEMA_VERSION = 1
BOX = "\\boxed"  # what ScoringOptions.require_box looks for


@dataclass
class SampleGrade:
    """One graded sample, keyed like its record; the row of grades.jsonl."""

    task: str
    problem_id: str
    sample_idx: int
    correct: bool
    extracted: str | None
    grading_error: str | None
    answer_class: int | None  # samples of a problem with equivalent answers share a class
    response_tokens: int | None  # the whole generation, interpreter outputs included
    generated_tokens: int | None  # None where the record does not know it (imported)
    tool_calls: int
    failed_tool_calls: int
    finish_reason: str
    grader: str  # the scorer's name: "math-verify", "chem", or one a user registered
    has_gold: bool = True  # False: the record carries no gold answer; kept, never scored


class NothingToScore(ValueError):
    """No record of the run carries a gold answer: a score would be a meaningless 0%."""


@dataclass(frozen=True)
class ScoringOptions:
    """Where cortbench and CoRT's public code differ, both are available (docs/results.md):

    require_box: a response without any \\boxed{} is wrong (math-verify, as the protocol calls it,
        falls back to the last number or expression of the whole text; default: as the protocol).
    maj_empty: in maj@k, samples without an answer "abstain" (cortbench's default) or each forms its
        "own-group" (CoRT's code).
    """

    require_box: bool = False
    maj_empty: str = "abstain"

    def __post_init__(self) -> None:
        if self.maj_empty not in MAJ_EMPTY:
            raise ValueError(f"maj_empty must be one of {', '.join(MAJ_EMPTY)}, not {self.maj_empty!r}")


def grade_records(
    records: list[TrajectoryRecord], grader: Grader, options: ScoringOptions = ScoringOptions()
) -> list[SampleGrade]:
    """Grade every record against its gold with its task's scorer (`scorers.scorer_of`: math-verify
    as the protocol says, the chemistry set's own grader, or one a user registered), and group each
    problem's answers into equivalence classes the same way. A record without gold is not graded
    (its row says `has_gold: false`); with `options.require_box`, nor is a response without a box
    (wrong, no answer)."""
    names = [scorer_of(r) for r in records]
    items = [Item(r.gold or "", r.generation, r.problem_meta) for r in records]
    boxed = [not options.require_box or BOX in r.generation for r in records]
    with_gold = [i for i, r in enumerate(records) if r.gold is not None and boxed[i]]
    graded = grade_items([items[i] for i in with_gold], [names[i] for i in with_gold], grader)
    grades: list[Grade] = [Grade(False)] * len(records)
    for i, g in zip(with_gold, graded):
        grades[i] = g
    by_problem: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_problem[(record.task, record.problem_id)].append(i)
    classes: dict[int, int | None] = {}
    for indices in by_problem.values():
        indices.sort(key=lambda i: records[i].sample_idx)
        scorer = get_scorer(names[indices[0]])
        labels = scorer.classes([grades[i] for i in indices], [items[i] for i in indices], grader)
        classes.update(zip(indices, labels))
    return [_sample_grade(r, g, classes[i], names[i]) for i, (r, g) in enumerate(zip(records, grades))]


def _sample_grade(
    record: TrajectoryRecord, grade: Grade, answer_class: int | None, grader: str
) -> SampleGrade:
    return SampleGrade(
        record.task,
        record.problem_id,
        record.sample_idx,
        grade.correct,
        grade.extracted,
        grade.grading_error,
        answer_class,
        record.tokens.response if record.tokens.response is not None else _segment_tokens(record),
        record.tokens.generated,
        len(record.tool_calls),
        sum(not c.ok for c in record.tool_calls),
        record.finish_reason,
        grader,
        record.gold is not None,
    )


def _segment_tokens(record: TrajectoryRecord) -> int | None:
    counts = [s.tokens for s in record.segments]
    return sum(counts) if counts and None not in counts else None  # type: ignore[arg-type]


@dataclass(frozen=True)
class Intended:
    """What a run set out to sample for a task, from run.json; None where it does not say."""

    k: int | None = None  # samples per problem (config "samples": {task: k})
    problems: int | None = None  # the registered task's size less the offset, cut to the limit


def intended(task: str, config: dict[str, Any]) -> Intended:
    """The task's k and number of problems a `cortbench run` asked for. The problem count is known
    only for a registered task read from its own source (a task file of one's own may be any size)."""
    samples = config.get("samples")
    k = samples.get(task) if isinstance(samples, dict) else None
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        return Intended()
    try:
        spec = get_task(task)
    except TaskDataError:
        return Intended(k)
    source = str((config.get("sources") or {}).get(task, ""))
    own = (spec.hub is not None and source == source_of(spec, None)) or (
        spec.file is not None and Path(source).name == Path(spec.file).name
    )
    if spec.size is None or not own:
        return Intended(k)
    left = max(0, spec.size - int(config.get("offset") or 0))
    limit = config.get("limit")
    return Intended(k, min(left, limit) if isinstance(limit, int) and limit >= 0 else left)


def task_metrics(
    samples: list[SampleGrade], *, seed: int = 0, plan: Intended = Intended(), maj_empty: str = "abstain"
) -> tuple[dict[str, Any], Estimate]:
    """The metrics of one task from its graded samples (each problem reduced to one score first),
    and its avg@k estimate (with bootstrap replicates, for group means). `plan`: what the run asked
    for, against which the task is complete or not; `maj_empty`: ScoringOptions.maj_empty."""
    problems: dict[str, list[SampleGrade]] = defaultdict(list)
    for s in samples:
        problems[s.problem_id].append(s)
    for group in problems.values():
        group.sort(key=lambda s: s.sample_idx)
    n_min = min(len(g) for g in problems.values())
    n_max = max(len(g) for g in problems.values())
    correct = [[s.correct for s in g] for g in problems.values()]
    pass_k = {
        str(k): estimate([pass_at_k(len(c), sum(c), k) for c in correct], seed=seed).to_dict()
        for k in range(1, n_min + 1)
    }
    maj_k = {
        str(k): estimate(
            [
                majority_correct([s.correct for s in g[:k]], [s.answer_class for s in g[:k]], empty=maj_empty)
                for g in problems.values()
            ],
            seed=seed,
        ).to_dict()
        for k in range(1, n_min + 1)
    }
    calls = [s.tool_calls for s in samples]
    total_calls = sum(calls)
    avg = estimate([float(np.mean(c)) for c in correct], seed=seed)
    k_expected = plan.k or n_max
    problems_expected = plan.problems or len(problems)
    return {
        "problems": len(problems),
        "samples": len(samples),
        "k": n_min,
        "complete": n_min == n_max and n_min >= k_expected and len(problems) >= problems_expected,
        "k_expected": k_expected,
        "problems_expected": problems_expected,
        "samples_expected": k_expected * problems_expected,
        "avg@k": avg.to_dict(),
        "pass@k": pass_k,
        "maj@k": maj_k,
        "tokens": _token_means(samples, "response_tokens"),
        "generated_tokens": _token_means(samples, "generated_tokens"),
        "grading_errors": sum(s.grading_error is not None for s in samples),
        "grader": "+".join(sorted({s.grader for s in samples})),
        "finish_reasons": dict(sorted(_count(s.finish_reason for s in samples).items())),
        "code": {
            "tool_calls_per_sample": total_calls / len(samples),
            "code_usage_rate": sum(c > 0 for c in calls) / len(samples),
            "code_success_rate": (total_calls - sum(s.failed_tool_calls for s in samples)) / total_calls
            if total_calls
            else None,
        },
    }, avg


def _token_means(samples: list[SampleGrade], field: str) -> dict[str, float | None]:
    def mean(selected: list[SampleGrade]) -> float | None:
        values = [getattr(s, field) for s in selected if getattr(s, field) is not None]
        return float(np.mean(values)) if values else None

    return {
        "all": mean(samples),
        "correct": mean([s for s in samples if s.correct]),
        "incorrect": mean([s for s in samples if not s.correct]),
    }


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    return counts


def shortfall(task: dict[str, Any]) -> str | None:
    """What an unfinished task of results.json lacks, in words ("1 of 16 samples for 30 problems");
    None when it is complete."""
    if task.get("complete", True):
        return None
    have, want = task["problems"], task.get("problems_expected", task["problems"])
    k, k_expected = task["k"], task.get("k_expected", task["k"])
    uniform = task["samples"] == k * have
    if uniform and have >= want:
        return f"{k} of {plural(k_expected, 'sample')} for {plural(have, 'problem')}"
    details = [f"{have} of {want} problems"] if have < want else []
    if not uniform:
        details.append(f"from {k} to {k_expected} per problem")
    elif k < k_expected:
        details.append(f"{k} of {k_expected} per problem")
    expected = task.get("samples_expected", k_expected * want)
    return f"{task['samples']:,} of {plural(expected, 'sample')} ({', '.join(details)})"


def summarize(
    grades: list[SampleGrade],
    config: dict[str, Any],
    *,
    seed: int = 0,
    options: ScoringOptions = ScoringOptions(),
) -> dict[str, Any]:
    """results.json: per-task metrics of the samples with gold, and each registered group whose tasks
    are all in the run (the group score is the plain mean of its task scores); whether the run holds
    every sample run.json asked for."""
    by_task: dict[str, list[SampleGrade]] = defaultdict(list)
    for g in grades:
        if g.has_gold:
            by_task[g.task].append(g)
    computed = {
        name: task_metrics(samples, seed=seed, plan=intended(name, config), maj_empty=options.maj_empty)
        for name, samples in by_task.items()
    }
    tasks = {name: metrics for name, (metrics, _) in computed.items()}
    avg_estimates = {name: avg for name, (_, avg) in computed.items()}
    group_results = {}
    for group in groups().values():
        if set(group.tasks) <= set(tasks):
            group_results[group.name] = {
                "tasks": list(group.tasks),
                "avg@k": mean_of([avg_estimates[t] for t in group.tasks]).to_dict(),
                "complete": all(tasks[t]["complete"] for t in group.tasks),
            }
    asked = config.get("samples")
    planned = asked if isinstance(asked, dict) else {}
    missing = [t for t in planned if t not in tasks]  # asked for, but not one sample with gold yet
    unplanned = [intended(t, config) for t in missing]
    expected = [t["samples_expected"] for t in tasks.values()] + [
        p.k * p.problems if p.k and p.problems else None for p in unplanned
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "model": config.get("model"),
        "backend": config.get("backend"),
        "config": config,
        "scored_at": time.time(),
        "grader": {"name": "math-verify", "version": version("math-verify")},
        "scorers": sorted({g.grader for g in grades if g.has_gold}),
        "options": asdict(options),
        "samples": len(grades),
        "samples_without_gold": sum(not g.has_gold for g in grades),
        "grading_errors": sum(g.grading_error is not None for g in grades),
        "complete": not missing and all(t["complete"] for t in tasks.values()),
        "samples_expected": None if None in expected else sum(expected),
        "tasks_missing": missing,
        "tasks": tasks,
        "groups": group_results,
    }


def score_run(
    run_dir: str | Path, grader: Grader, *, seed: int = 0, options: ScoringOptions = ScoringOptions()
) -> dict[str, Any]:
    """Grade a saved run and write grades.jsonl and results.json next to its records."""
    run_dir = Path(run_dir)
    config, records = read_run(run_dir)
    if records and all(r.gold is None for r in records):
        raise NothingToScore(
            f"{run_dir}: no gold answers in these records: nothing to score "
            '(a request to `cortbench serve --record` carries one in its "gold" field)'
        )
    grades = grade_records(records, grader, options)
    results = summarize(grades, config, seed=seed, options=options)
    write_atomic(run_dir / GRADES, "".join(json.dumps(asdict(g)) + "\n" for g in grades))
    update_results(run_dir, results)  # keeps what `cortbench analyze` added
    return results


class GradesFileError(ValueError):
    """grades.jsonl cannot be read or holds a line that is not a grade; the message names file and line."""


def read_grades(run_dir: str | Path) -> list[SampleGrade]:
    """The grades `score_run` wrote for a run, in order (fields a newer version added are ignored)."""
    path = Path(run_dir) / GRADES
    known = {f.name for f in fields(SampleGrade)}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GradesFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    grades = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            grades.append(SampleGrade(**{k: v for k, v in row.items() if k in known}))
        except (ValueError, TypeError, AttributeError) as exc:
            raise GradesFileError(f"{path}:{number}: not a grade ({exc})") from None
    return grades
