"""The regression gate behind `cortbench check`: is a new run worse than a baseline run, per task?

Both runs are reduced to one row per problem (accuracy over its k samples, mean response tokens,
successful and executed code cells) and compared on the problems they share, pairwise, because the
problems are what the two runs have in common and most of the noise is between problems, not
between runs. Three checks per task:

- accuracy: the change in avg@k (new - base);
- tokens: the relative growth of mean response tokens (new / base - 1);
- code success: the change in the share of executed cells that ran without error.

Each change gets a one-sided p-value from a paired swap test: under "the two runs are draws of the
same model", the base and new rows of each problem are exchangeable, so swapping them at random
gives the exact null distribution of any statistic (for a mean difference this is the sign-flip
test; with k = 1 it is the exact sign test, i.e. McNemar's). It is exact at any number of problems
(enumerated when few problems differ, else Monte Carlo with the +1 correction), where a bootstrap
test is too liberal on a 30-problem task. The change's interval is a paired percentile bootstrap
over problems at level 1 - 2 alpha (its far end is the one-sided bound of the test's level).

A check fails when the change is significant (p < alpha, Holm-adjusted over all checks by default)
and its interval reaches past the tolerance (`min_effect` and the like): a change shown to be
smaller than the tolerance passes, as does one that is indistinguishable from noise. So the
false-alarm rate of a rerun of the same model is at most alpha, and a drop of the tolerance's size
is caught as often as the test has power to see it.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from ..analyzers.metrics import BOOTSTRAP_SAMPLES
from ..analyzers.results_file import GRADES
from ..analyzers.scoring import GradesFileError, SampleGrade, read_grades
from ..harness.console import plural
from ..harness.store import CONFIG, SAMPLES

PERMUTATIONS = 10_000
EXACT_UP_TO = 14  # problems that differ between the runs: all 2**14 swaps are enumerated

Status = Literal["pass", "fail", "skip"]


class BadInput(ValueError):
    """The runs cannot be compared as asked (missing files, different tasks, problems or k)."""


@dataclass(frozen=True)
class CheckConfig:
    """What counts as a regression.

    Args:
        alpha: significance level: the chance that a rerun of the same model fails the check (with
            the Holm correction, the whole check; without it, each task and check).
        min_effect: accuracy drop (avg@k, absolute) that matters; smaller proven drops pass.
        max_token_growth: relative growth of mean response tokens that matters (0.10: 10%).
        max_code_success_drop: drop of the code success rate (absolute) that matters.
        tasks: the tasks to check (default: all, which must be the same in both runs).
        allow_partial: compare the problems and tasks both runs have instead of refusing.
        correction: "holm" controls the chance of any false alarm over all checks; "none" tests each
            at alpha.
        seed: seed of the swap test and the bootstrap, so a check is reproducible.
    """

    alpha: float = 0.05
    min_effect: float = 0.02
    max_token_growth: float = 0.10
    max_code_success_drop: float = 0.05
    tasks: tuple[str, ...] = ()
    allow_partial: bool = False
    correction: Literal["holm", "none"] = "holm"
    seed: int = 0
    permutations: int = PERMUTATIONS
    bootstrap: int = BOOTSTRAP_SAMPLES


@dataclass
class RunGrades:
    """A run's graded samples, grouped by task and problem."""

    path: str
    model: str | None  # the model's name, or the embedded model's file; None: run.json does not say
    tasks: dict[str, dict[str, list[SampleGrade]]]
    notes: list[str] = field(default_factory=list)
    k_expected: dict[str, int] = field(default_factory=dict)  # samples per problem run.json asked for

    @classmethod
    def from_grades(
        cls,
        path: str,
        grades: Sequence[SampleGrade],
        model: str | None = None,
        notes: Sequence[str] = (),
        k_expected: dict[str, int] | None = None,
    ) -> RunGrades:
        """Samples without a gold answer are left out (they were never scored)."""
        tasks: dict[str, dict[str, list[SampleGrade]]] = defaultdict(lambda: defaultdict(list))
        for g in grades:
            if g.has_gold:
                tasks[g.task][g.problem_id].append(g)
        plain = {
            t: {p: sorted(s, key=lambda g: g.sample_idx) for p, s in ps.items()} for t, ps in tasks.items()
        }
        notes = list(notes)
        if without := sum(not g.has_gold for g in grades):
            notes.append(f"{path}: {plural(without, 'sample')} without a gold answer left out")
        return cls(path, model, plain, notes, dict(k_expected or {}))


def load_run(run_dir: str | Path, grader_factory: Callable | None = None) -> RunGrades:
    """A run's grades: grades.jsonl when `cortbench score` wrote it for all of samples.jsonl (a baseline
    may keep grades.jsonl alone), else the records graded here (nothing is written)."""
    run_dir = Path(run_dir)
    grades_path, samples_path = run_dir / GRADES, run_dir / SAMPLES
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir} does not exist")
    if not grades_path.is_file() and not samples_path.is_file():
        raise BadInput(f"{run_dir} is not a run directory (no samples.jsonl or {GRADES})")
    config = _config_of(run_dir)
    samples = config.get("samples")
    k_expected = {t: k for t, k in samples.items() if isinstance(k, int)} if isinstance(samples, dict) else {}
    model = config.get("model") or config.get("model_file") or config.get("served_model")
    notes = []
    grades = None
    if grades_path.is_file():
        try:
            grades = read_grades(run_dir)
        except GradesFileError as exc:
            raise BadInput(str(exc)) from None
        if samples_path.is_file() and _complete_lines(samples_path) != len(grades):
            notes.append(f"{run_dir}: {GRADES} is older than samples.jsonl; graded again here "
                         "(`cortbench score` saves it)")  # fmt: skip
            grades = None
    else:
        notes.append(f"{run_dir}: no {GRADES}; graded the records here (`cortbench score` saves them)")
    if grades is None:
        grades = _grade_records(run_dir, grader_factory)
    if grades and not any(g.has_gold for g in grades):
        raise BadInput(f"{run_dir}: no gold answers in these records: nothing to compare")
    return RunGrades.from_grades(str(run_dir), grades, model, notes, k_expected)


def _config_of(run_dir: Path) -> dict:
    """run.json's configuration; {} when there is none (a baseline may keep grades.jsonl alone)."""
    try:
        config = json.loads((run_dir / CONFIG).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return config if isinstance(config, dict) else {}


def _complete_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return fh.read().count(b"\n")


def _grade_records(run_dir: Path, grader_factory: Callable | None) -> list[SampleGrade]:
    from ..analyzers.grading import Grader
    from ..analyzers.scoring import grade_records
    from ..harness.store import RunStoreError, read_run

    try:
        _, records = read_run(run_dir)
    except RunStoreError as exc:
        raise BadInput(str(exc)) from None
    with (grader_factory or Grader)() as grader:
        return grade_records(records, grader)


# --- the paired test --------------------------------------------------------------------------------

Statistic = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # column sums of base, new; problems


@dataclass(frozen=True)
class Paired:
    """A paired comparison: the observed change, its one-sided p-value and its bootstrap interval."""

    change: float
    p_value: float
    ci: tuple[float, float]
    differing: int  # problems whose rows differ between the runs
    exact: bool  # every swap was enumerated


def paired_test(
    base: np.ndarray,
    new: np.ndarray,
    statistic: Statistic,
    *,
    worse: Literal[-1, 1],
    confidence: float,
    seed: int = 0,
    permutations: int = PERMUTATIONS,
    bootstrap: int = BOOTSTRAP_SAMPLES,
) -> Paired:
    """Test whether `statistic` moved in the `worse` direction (-1: lower is worse) from base to new.

    Rows are problems, columns the per-problem quantities the statistic sums. The p-value is the
    share of random swaps of base and new rows whose statistic is at least as bad as the observed one
    (a swap that leaves the statistic undefined counts as bad: conservative)."""
    base = np.asarray(base, dtype=float).reshape(len(base), -1)
    new = np.asarray(new, dtype=float).reshape(len(new), -1)
    n = len(base)
    sum_base, sum_new = base.sum(axis=0), new.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = float(statistic(sum_base, sum_new, n))
    delta = (new - base)[np.any(new != base, axis=1)]
    m = len(delta)
    rng = np.random.default_rng(seed)
    exact = m <= EXACT_UP_TO
    as_bad = 0
    total = 0
    for masks in _swap_masks(m, exact, permutations, rng):
        moved = masks @ delta  # what the swapped problems move from new to base
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates = statistic(sum_base + moved, sum_new - moved, n)
        tolerance = 1e-9 * max(1.0, abs(observed))
        as_bad += int(np.sum(~(worse * replicates < worse * observed - tolerance)))
        total += len(masks)
    p_value = as_bad / total if exact else (as_bad + 1) / (total + 1)
    interval = _bootstrap_interval(base, new, statistic, confidence, rng, bootstrap)
    return Paired(observed, min(1.0, p_value), interval, m, exact)


def _swap_masks(m: int, exact: bool, permutations: int, rng: np.random.Generator, chunk: int = 2000):
    if exact:
        codes = np.arange(2**m)
        yield ((codes[:, None] >> np.arange(m)) & 1).astype(float)
        return
    for start in range(0, permutations, chunk):
        yield rng.integers(0, 2, size=(min(chunk, permutations - start), m)).astype(float)


def _bootstrap_interval(
    base: np.ndarray, new: np.ndarray, statistic: Statistic, confidence: float, rng: np.random.Generator,
    samples: int,
) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of the statistic over problems resampled with replacement (pairs kept)."""
    n = len(base)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=samples).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        replicates = statistic(counts @ base, counts @ new, n)
    replicates = replicates[np.isfinite(replicates)]
    if not len(replicates):
        return (float("nan"), float("nan"))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def _mean_difference(sum_base, sum_new, n):
    return (sum_new[..., 0] - sum_base[..., 0]) / n


def _relative_growth(sum_base, sum_new, n):
    return sum_new[..., 0] / sum_base[..., 0] - 1


def _rate_difference(sum_base, sum_new, n):
    return sum_new[..., 0] / sum_new[..., 1] - sum_base[..., 0] / sum_base[..., 1]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: rejecting those below alpha keeps the chance of any false
    rejection at most alpha, whatever the dependence between the tests."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


# --- comparing two runs ------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One check of one task: the runs' values, the change and the verdict."""

    task: str
    check: Literal["accuracy", "tokens", "code success"]
    metric: str  # what base and new are, e.g. "avg@4"
    tolerance: float  # the change that matters, in the check's bad direction
    base: float | None = None
    new: float | None = None
    paired: Paired | None = None
    p_adjusted: float | None = None
    status: Status = "skip"
    note: str = ""
    problems: int = 0

    @property
    def change(self) -> float | None:
        return self.paired.change if self.paired else None

    def describe(self, confidence: float) -> str:
        """The numbers in one line (the JUnit message)."""
        if self.paired is None:
            return f"{self.task} {self.check}: skipped ({self.note})"
        return (
            f"{self.task} {_label(self)}: {_value(self.check, self.base)} -> {_value(self.check, self.new)}, "
            f"change {_change(self, confidence)}, p = {self.paired.p_value:.3g} (adjusted {self.p_adjusted:.3g}), "
            f"tolerance {_tolerance(self)}, {self.problems} problems"
        )


@dataclass
class Report:
    """Every comparison of a check, and what the reader should know about the inputs."""

    base: RunGrades
    new: RunGrades
    config: CheckConfig
    comparisons: list[Comparison]
    notes: list[str]

    @property
    def confidence(self) -> float:
        return 1 - 2 * self.config.alpha

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.status == "fail"]

    @property
    def regressed(self) -> bool:
        return bool(self.failures)


def compare_runs(base: RunGrades, new: RunGrades, config: CheckConfig = CheckConfig()) -> Report:
    """Pair the runs task by task and problem by problem, run the three checks and give each a verdict.

    Raises BadInput when the runs cannot be compared: different tasks or problems, a different k, or
    an incomplete run (unless `allow_partial`: then the tasks, problems and samples both have)."""
    notes = [*base.notes, *new.notes]
    tasks = _tasks_to_check(base, new, config, notes)
    comparisons = []
    for task in tasks:
        problems = _problems_to_compare(task, base.tasks[task], new.tasks[task], config, notes)
        base_samples, new_samples, k = _samples_to_compare(task, base, new, problems, config, notes)
        order = list(base_samples)
        comparisons += _compare_task(task, _rows(base_samples, order), _rows(new_samples, order), k, config)
    tested = [(c, c.paired) for c in comparisons if c.paired is not None]
    adjusted = holm([paired.p_value for _, paired in tested]) if config.correction == "holm" else None
    for i, (c, paired) in enumerate(tested):
        c.p_adjusted = adjusted[i] if adjusted else paired.p_value
        low, high = paired.ci
        bad_end = high if c.check == "tokens" else -low  # how bad the change may be
        significant = c.p_adjusted < config.alpha
        c.status = "fail" if significant and not bad_end <= c.tolerance else "pass"
        if significant and c.status == "pass":
            c.note = "significant, but smaller than the tolerance"
    return Report(base, new, config, comparisons, notes)


def _tasks_to_check(base: RunGrades, new: RunGrades, config: CheckConfig, notes: list[str]) -> list[str]:
    if config.tasks:
        for task in config.tasks:
            for run in (base, new):
                if task not in run.tasks:
                    raise BadInput(
                        f"task {task} is not in {run.path} (it has {', '.join(sorted(run.tasks)) or 'none'})"
                    )
        return list(config.tasks)
    only_base, only_new = sorted(set(base.tasks) - set(new.tasks)), sorted(set(new.tasks) - set(base.tasks))
    shared = [t for t in base.tasks if t in new.tasks]
    if only_base or only_new:
        what = "; ".join(
            f"only in {run.path}: {', '.join(names)}"
            for run, names in ((base, only_base), (new, only_new))
            if names
        )
        if not config.allow_partial or not shared:
            raise BadInput(f"the runs have different tasks ({what}); pass --tasks or --allow-partial")
        notes.append(f"compared the {plural(len(shared), 'task')} both runs have ({what})")
    if not shared:
        raise BadInput("the runs have no graded samples")
    return shared


def _problems_to_compare(
    task: str, base: dict, new: dict, config: CheckConfig, notes: list[str]
) -> list[str]:
    shared = [p for p in base if p in new]
    missing = len(base) + len(new) - 2 * len(shared)
    if missing:
        counts = f"{plural(len(base), 'problem')} in the baseline, {len(new)} in the new run, {len(shared)} in both"
        if not config.allow_partial or not shared:
            raise BadInput(
                f"{task}: the runs have different problems ({counts}); pass --allow-partial to compare those in both"
            )
        notes.append(f"{task}: compared the {plural(len(shared), 'problem')} both runs have ({counts})")
    return shared


Samples = dict[str, list[SampleGrade]]  # problem -> its samples, by sample index


def _samples_to_compare(
    task: str, base: RunGrades, new: RunGrades, problems: list[str], config: CheckConfig, notes: list[str]
) -> tuple[Samples, Samples, str]:
    """Each problem's samples to compare, and k. Complete runs with the same k compare all their
    samples (the swap is fair only then); otherwise `allow_partial` pairs the samples both runs have
    (the same problem and sample index), and without it the runs are refused."""
    runs = (base, new)
    sizes = [[len(run.tasks[task][p]) for p in problems] for run in runs]
    short = [_shortfall(run, task, counts) for run, counts in zip(runs, sizes)]
    ks = [min(counts) for counts in sizes]
    if not any(short) and ks[0] == ks[1]:
        return (
            {p: base.tasks[task][p] for p in problems},
            {p: new.tasks[task][p] for p in problems},
            str(ks[0]),
        )
    advice = "pass --allow-partial to compare the samples both runs have"
    if not config.allow_partial:
        for run, why in zip(runs, short):
            if why:
                raise BadInput(f"{task}: {run.path} is incomplete ({why}); finish it with `cortbench run "
                               f"--resume` or {advice}")  # fmt: skip
        raise BadInput(
            f"{task}: different k (baseline {ks[0]} samples per problem, new run {ks[1]}); {advice}"
        )
    kept: tuple[Samples, Samples] = ({}, {})
    for p in problems:
        both = {g.sample_idx for g in base.tasks[task][p]} & {g.sample_idx for g in new.tasks[task][p]}
        if both:
            for run, out in zip(runs, kept):
                out[p] = [g for g in run.tasks[task][p] if g.sample_idx in both]
    if not kept[0]:
        raise BadInput(f"{task}: the runs have no sample in common (the same problem and sample index)")
    counts = [len(samples) for samples in kept[0].values()]
    k = str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    why = "; ".join(f"{run.path} is incomplete ({w})" for run, w in zip(runs, short) if w)
    dropped = len(problems) - len(kept[0])
    notes.append(
        f"{task}: compared the {plural(sum(counts), 'sample')} both runs have ({plural(len(counts), 'problem')}, "
        f"{k} per problem; the baseline has {sum(sizes[0]):,}, the new run {sum(sizes[1]):,}"
        + (f"; {plural(dropped, 'problem')} without a sample in common left out" if dropped else "")
        + (f"; {why}" if why else "")
        + ")"
    )
    return kept[0], kept[1], k


def _shortfall(run: RunGrades, task: str, counts: list[int]) -> str | None:
    """How a run's task falls short of k samples for every problem (run.json's k when it says)."""
    expected = run.k_expected.get(task)
    low, high = min(counts), max(counts)
    of = f" of {expected}" if expected else ""
    if low != high:
        return f"{low} to {high}{of} samples per problem"
    if expected and low < expected:
        return f"{low} of {plural(expected, 'sample')} per problem"
    return None


@dataclass
class _Rows:
    """Per-problem quantities of one run, in the order of the compared problems."""

    accuracy: np.ndarray
    tokens: dict[str, np.ndarray]  # mean "response_tokens" / "generated_tokens", where every sample has them
    code: np.ndarray  # (problems, 2): successful cells, executed cells


def _rows(problems: dict[str, list[SampleGrade]], order: list[str]) -> _Rows:
    samples = [problems[p] for p in order]
    accuracy = np.array([np.mean([s.correct for s in group]) for group in samples])
    tokens = {}
    for name in ("response_tokens", "generated_tokens"):
        values = [[getattr(s, name) for s in group] for group in samples]
        if all(v is not None for group in values for v in group):
            tokens[name] = np.array([np.mean(group) for group in values], dtype=float)
    code = [
        [sum(s.tool_calls - s.failed_tool_calls for s in g), sum(s.tool_calls for s in g)] for g in samples
    ]
    return _Rows(accuracy, tokens, np.array(code, dtype=float).reshape(len(samples), 2))


def _compare_task(task: str, base: _Rows, new: _Rows, k: str, config: CheckConfig) -> list[Comparison]:
    test = partial(paired_test, confidence=1 - 2 * config.alpha, seed=config.seed,
                   permutations=config.permutations, bootstrap=config.bootstrap)  # fmt: skip
    problems = len(base.accuracy)
    accuracy = Comparison(task, "accuracy", f"avg@{k}", config.min_effect, problems=problems)
    accuracy.base, accuracy.new = float(base.accuracy.mean()), float(new.accuracy.mean())  # avg@k
    accuracy.paired = test(base.accuracy, new.accuracy, _mean_difference, worse=-1)

    tokens = Comparison(task, "tokens", "response tokens", config.max_token_growth, problems=problems)
    # the paper's count (interpreter outputs included) where both runs have it, else what the model wrote
    name = next(
        (n for n in ("response_tokens", "generated_tokens") if n in base.tokens and n in new.tokens), None
    )
    if name is None:
        tokens.note = "token counts missing"
    else:
        tokens.metric = name.replace("_", " ")
        tokens.base, tokens.new = float(base.tokens[name].mean()), float(new.tokens[name].mean())
        if tokens.base > 0:
            tokens.paired = test(base.tokens[name], new.tokens[name], _relative_growth, worse=1)
        else:
            tokens.note = "no tokens in the baseline"

    code = Comparison(task, "code success", "ok / executed cells", config.max_code_success_drop,
                      problems=problems)  # fmt: skip
    base_calls, new_calls = base.code[:, 1].sum(), new.code[:, 1].sum()
    if base_calls and new_calls:
        code.base = float(base.code[:, 0].sum() / base_calls)
        code.new = float(new.code[:, 0].sum() / new_calls)
        code.paired = test(base.code, new.code, _rate_difference, worse=-1)
    else:
        code.note = "no executed code in " + ("either run" if not base_calls and not new_calls
                                              else "the baseline" if not base_calls else "the new run")  # fmt: skip
    return [accuracy, tokens, code]


# --- rendering ---------------------------------------------------------------------------------------


def _value(check: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if check == "tokens" else f"{100 * value:.1f}%"


def _change(c: Comparison, confidence: float | None = None) -> str:
    """ "-3.1 [-5.0, -1.2] pts": the change and its interval, in points (rates) or percent (tokens)."""
    if c.paired is None:
        return "-"
    low, high = c.paired.ci
    unit = "%" if c.check == "tokens" else " pts"
    level = f"{confidence:.0%} CI " if confidence else ""
    return f"{100 * c.paired.change:+.1f} [{level}{100 * low:+.1f}, {100 * high:+.1f}]{unit}"


def _tolerance(c: Comparison) -> str:
    return f"+{100 * c.tolerance:.0f}%" if c.check == "tokens" else f"-{100 * c.tolerance:.1f} pts"


def _label(c: Comparison) -> str:
    return {"accuracy": f"accuracy {c.metric}", "tokens": c.metric, "code success": "code success"}[c.check]


def rows(report: Report) -> list[list[str]]:
    """The table's cells, shared by the terminal and Markdown renderings."""
    out = []
    for c in report.comparisons:
        p = "-"
        if c.paired is not None:
            p = f"{c.paired.p_value:.3g}"
            if report.config.correction == "holm":
                p += f" ({c.p_adjusted:.3g})"
        verdict = {"pass": "pass", "fail": "REGRESSION", "skip": "skipped"}[c.status]
        out.append([c.task, _label(c), _value(c.check, c.base), _value(c.check, c.new), _change(c), p,
                    _tolerance(c), verdict + (f": {c.note}" if c.note else "")])  # fmt: skip
    return out


def headers(report: Report) -> list[str]:
    p = "p (Holm)" if report.config.correction == "holm" else "p"
    return [
        "task",
        "check",
        "baseline",
        "new",
        f"change [{report.confidence:.0%} CI]",
        p,
        "tolerance",
        "result",
    ]


def method_line(report: Report) -> str:
    cfg = report.config
    correction = ", Holm-adjusted over all checks" if cfg.correction == "holm" else ""
    return (f"one-sided paired swap test over problems (alpha {cfg.alpha}{correction}); paired bootstrap "
            f"{report.confidence:.0%} intervals; a check fails when the change is significant and its interval "
            "reaches past the tolerance; seed " + str(cfg.seed))  # fmt: skip


def headline(report: Report) -> str:
    failed = report.failures
    if not failed:
        return "no regression"
    return f"{len(failed)} regression{'s' if len(failed) > 1 else ''}: " + ", ".join(
        f"{c.task} {c.check}" for c in failed
    )


def to_markdown(report: Report) -> str:
    """A summary for a CI job page (GitHub's $GITHUB_STEP_SUMMARY renders it)."""
    icon = ":x:" if report.regressed else ":white_check_mark:"
    lines = [
        f"## cortbench check: {icon} {headline(report)}",
        "",
        f"new `{report.new.path}` ({_model(report.new)}) against baseline `{report.base.path}` "
        f"({_model(report.base)})",
        "",
        "| " + " | ".join(headers(report)) + " |",
        "| " + " | ".join("---" for _ in headers(report)) + " |",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows(report)]
    lines += ["", f"Method: {method_line(report)}."]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def to_junit(report: Report) -> str:
    """JUnit XML: one testcase per task and check; a failure carries the numbers."""
    suite_attrs = {
        "name": "cortbench check",
        "tests": str(len(report.comparisons)),
        "failures": str(len(report.failures)),
        "errors": "0",
        "skipped": str(sum(c.status == "skip" for c in report.comparisons)),
        "time": "0",
    }
    suites = ET.Element("testsuites", {k: v for k, v in suite_attrs.items() if k != "skipped"})
    suite = ET.SubElement(suites, "testsuite", suite_attrs)
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline", report.base.path),
        ("new", report.new.path),
        ("method", method_line(report)),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    for c in report.comparisons:
        case = ET.SubElement(suite, "testcase", classname=f"cortbench.check.{c.task}", name=c.check, time="0")
        message = c.describe(report.confidence)
        if c.status == "fail":
            ET.SubElement(case, "failure", message=message, type="regression").text = message
        elif c.status == "skip":
            ET.SubElement(case, "skipped", message=c.note)
        else:
            ET.SubElement(case, "system-out").text = message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _model(run: RunGrades) -> str:
    return run.model or "model not recorded"


def rich_table(report: Report):
    """The terminal rendering, readable in 80 columns: task and check share the first column, the
    change's interval and the adjusted p go on a second line, and the tolerances (one per check)
    move to the caption."""
    from rich.table import Table
    from rich.text import Text

    cfg = report.config
    holm_ = cfg.correction == "holm"
    tolerances = {c.check: _tolerance(c) for c in report.comparisons}
    caption = "tolerance: " + ", ".join(f"{check} {t}" for check, t in tolerances.items())
    table = Table(
        title=f"cortbench check: {report.new.path} ({_model(report.new)}) against {report.base.path} "
        f"({_model(report.base)})",
        caption=f"{caption}; {method_line(report)}",
    )
    table.add_column("task\ncheck", overflow="fold")
    for name in ("baseline", "new", f"change\n[{report.confidence:.0%} CI]", "p\n(Holm)" if holm_ else "p"):
        table.add_column(name, justify="right")
    table.add_column("result")
    for i, c in enumerate(report.comparisons):
        last_of_task = i + 1 == len(report.comparisons) or report.comparisons[i + 1].task != c.task
        change = p = "-"
        if c.paired is not None:
            low, high = c.paired.ci
            unit = "%" if c.check == "tokens" else " pts"
            change = f"{100 * c.paired.change:+.1f}{unit}\n[{100 * low:+.1f}, {100 * high:+.1f}]"
            p = f"{c.paired.p_value:.3g}" + (f"\n({c.p_adjusted:.3g})" if holm_ else "")
        verdict = {"pass": "pass", "fail": "REGRESSION", "skip": "skipped"}[c.status]
        style = {"fail": "bold red", "pass": "green", "skip": "dim"}[c.status]
        table.add_row(
            Text.assemble((c.task, "bold"), "\n", _label(c)),
            _value(c.check, c.base),
            _value(c.check, c.new),
            Text(change),
            Text(p),
            Text(verdict + (f": {c.note}" if c.note else ""), style=style),
            end_section=last_of_task,
        )  # Text: no markup in cells
    return table
