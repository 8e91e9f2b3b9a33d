"""Rejection-sampling fine-tuning (stage `rft`): sample k trajectories per problem with the harness,
keep the good ones, fine-tune on them.

CoRT's RFT keeps trajectories with a correct answer and without delayed computation or result
distrust; cortbench also asks that the code ran (every executed cell without error, at least
`min_tool_calls` of them), that the trajectory ended on its own, and drops duplicates. The filters
apply in a fixed order and the report counts what is left after each one, per task, so a low
acceptance rate says which filter is responsible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..analyzers.behaviours import detect_behaviours
from ..harness.records import TrajectoryRecord
from .config import ConfigError, RolloutSettings, StageConfig
from .evaluation import (
    StageReport,
    evaluate_stage,
    generator_for,
    resolve_sampling,
    sample_run,
    score,
    world_size,
)
from .progress import PhaseProgress, say
from .registry import register_stage
from .sft import read_records, supervised_stage, write_records
from .state import StageState

ACCEPTED = "accepted.jsonl"  # the kept trajectories, written before training starts
FILTERS = ("sampled", "finished", "correct", "code_ok", "no_behaviours", "unique", "per_problem_cap")


@dataclass
class RFTSection:
    """The `rft:` section.

    Attributes:
        sampling: the training problems and how to sample them (`n`: k per problem).
        records: trajectories already sampled (run folders or records JSONL) to filter instead.
        finish_reasons: a kept trajectory ended this way ("stop" and "tool_limit": on its own, not
            cut by the token budget nor failed).
        require_correct: the answer verifies against the gold (math-verify; chemistry: its grader).
        min_tool_calls: executed cells a kept trajectory needs; all of them must run without error.
        exclude_behaviours: detections (analyzers.behaviours) that reject a trajectory.
        dedupe: drop a trajectory whose text (whitespace collapsed) repeats one already kept for
            the same problem.
        max_per_problem: keep at most this many per problem (None: all), so easy problems do not
            dominate the data.
        train_on_hints: hints the sampling policy inserted are trained too (default: they are the
            environment's, not the model's).
    """

    sampling: RolloutSettings | None = None
    records: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=lambda: ["stop", "tool_limit"])
    require_correct: bool = True
    min_tool_calls: int = 1
    exclude_behaviours: list[str] = field(default_factory=lambda: ["delayed_computation", "result_distrust"])
    dedupe: bool = True
    max_per_problem: int | None = None
    train_on_hints: bool = False


@dataclass
class Acceptance:
    """Trajectories left after each filter, overall and per task (`FILTERS` order)."""

    counts: dict[str, dict[str, int]]  # filter -> task -> count; task "all" sums them
    problems_with_kept: dict[str, int]
    problems: dict[str, int]

    def rate(self, task: str = "all") -> float | None:
        sampled = self.counts["sampled"].get(task, 0)
        return self.counts[FILTERS[-1]].get(task, 0) / sampled if sampled else None

    def to_dict(self) -> dict[str, Any]:
        return {"after_filter": self.counts, "problems": self.problems, "problems_with_kept": self.problems_with_kept,
                "acceptance_rate": {t: self.rate(t) for t in self.counts["sampled"]}}  # fmt: skip

    def markdown(self) -> str:
        tasks = [t for t in self.counts["sampled"] if t != "all"] + ["all"]
        lines = ["| task | " + " | ".join(FILTERS) + " | acceptance | problems with a kept sample |",
                 "| --- | " + " | ".join("---:" for _ in FILTERS) + " | ---: | ---: |"]  # fmt: skip
        for t in tasks:
            rate = self.rate(t)
            lines.append(
                f"| {t} | "
                + " | ".join(str(self.counts[f].get(t, 0)) for f in FILTERS)
                + f" | {'-' if rate is None else f'{rate:.1%}'} | {self.problems_with_kept.get(t, 0)}"
                f" / {self.problems.get(t, 0)} |"
            )
        return "Trajectories left after each filter, in the order applied.\n\n" + "\n".join(lines)


def filter_trajectories(
    records: Sequence[TrajectoryRecord],
    correct: Sequence[bool],
    section: RFTSection,
    detect: Callable[[TrajectoryRecord], list] = detect_behaviours,
    on_record: Callable[[], None] | None = None,
) -> tuple[list[TrajectoryRecord], Acceptance]:
    """The kept trajectories, in input order, and how many survived each filter. `correct[i]` is
    the grade of `records[i]`; `on_record` is called after each record (progress)."""
    if len(correct) != len(records):
        raise ValueError(f"{len(correct)} grades for {len(records)} records")
    excluded = set(section.exclude_behaviours)
    if unknown := excluded - {"delayed_computation", "result_distrust"}:
        raise ConfigError(f"rft.exclude_behaviours: unknown {sorted(unknown)}")
    seen: set[tuple[str, str, str]] = set()
    per_problem: Counter[tuple[str, str]] = Counter()

    def passes(name: str, record: TrajectoryRecord, ok: bool) -> bool:
        if name == "finished":
            return not section.finish_reasons or record.finish_reason in section.finish_reasons
        if name == "correct":
            return ok or not section.require_correct
        if name == "code_ok":
            return len(record.tool_calls) >= section.min_tool_calls and all(c.ok for c in record.tool_calls)
        if name == "no_behaviours":
            return not excluded or not any(s.kind in excluded for s in detect(record))
        if name == "unique":
            key = (record.task, record.problem_id, " ".join(record.generation.split()))
            if section.dedupe and key in seen:
                return False
            seen.add(key)
            return True
        if name == "per_problem_cap":
            problem = (record.task, record.problem_id)
            if section.max_per_problem is not None and per_problem[problem] >= section.max_per_problem:
                return False
            per_problem[problem] += 1
            return True
        return True  # "sampled"

    counts: dict[str, Counter[str]] = {name: Counter() for name in FILTERS}
    kept = []
    for record, ok in zip(records, correct):
        for name in FILTERS:
            if not passes(name, record, ok):
                break
            counts[name][record.task] += 1
            counts[name]["all"] += 1
        else:
            kept.append(record)
        if on_record is not None:
            on_record()
    problems = Counter(t for t, _ in {(r.task, r.problem_id) for r in records})
    with_kept = Counter(t for t, _ in {(r.task, r.problem_id) for r in kept})
    for c in (problems, with_kept):
        c["all"] = sum(c.values())
    tasks = [*dict.fromkeys(r.task for r in records), "all"]
    return kept, Acceptance(
        {name: {t: counts[name][t] for t in tasks} for name in FILTERS},
        {t: with_kept[t] for t in tasks},
        {t: problems[t] for t in tasks},
    )


GRADE_CHUNK = 64  # records graded between two progress updates


def grade(records: Sequence[TrajectoryRecord]) -> list[bool]:
    """Whether each record's answer is correct, graded as `cortbench score` grades."""
    from ..analyzers.grading import Grader
    from ..analyzers.scoring import grade_records

    correct: list[bool] = []
    with Grader(workers=2) as grader, PhaseProgress("grading", len(records), unit="trajectories") as progress:
        for start in range(0, len(records), GRADE_CHUNK):
            chunk = list(records[start : start + GRADE_CHUNK])
            correct += [g.correct for g in grade_records(chunk, grader)]
            progress.advance(len(chunk))
    return correct


@register_stage("rft", section=RFTSection, help="Sample k, keep correct and clean trajectories, fine-tune.")
def rft(config: StageConfig) -> StageReport:
    """Sample (or read) trajectories, filter them, fine-tune on what is kept, evaluate before/after."""
    section: RFTSection = config.section
    if section.sampling is None and not section.records:
        raise ConfigError("rft: give `sampling` (problems to sample) or `records` (trajectories to filter)")
    state = StageState.open(config)
    model, tokenizer = config.model.load()
    before = evaluate_stage(config, model, tokenizer, "before", config.model.name)
    records: list[TrajectoryRecord] = read_records(section.records) if section.records else []
    correct = grade(records) if records else []
    if world_size() > 1 and section.sampling is not None:
        raise ConfigError(
            "rft: sampling needs one process; sample first, then train on `records` under accelerate"
        )
    if section.sampling is not None:
        sampling = resolve_sampling(section.sampling, config.sandbox)
        run_dir = config.output_dir / "samples"
        sampled = sample_run(
            generator_for(model, tokenizer, sampling), sampling, run_dir, model_name=config.model.name
        )
        graded = score(run_dir, "samples", seed=config.seed)  # the samples are a scored run too
        records += sampled
        correct += [graded.correct[r.key] for r in sampled]
    with PhaseProgress("filtering", len(records), unit="trajectories") as progress:
        kept, acceptance = filter_trajectories(records, correct, section, on_record=progress.advance)
    say(f"filtering: {len(kept)} of {len(records)} trajectories kept ({config.output_dir / ACCEPTED})")
    write_records(config.output_dir / ACCEPTED, kept)
    if not kept:
        raise ConfigError(
            f"rft: no trajectory passed the filters ({acceptance.to_dict()['after_filter']}); sample more or relax them"
        )
    return supervised_stage(
        config, kept, train_on_hints=section.train_on_hints, model_and_tokenizer=(model, tokenizer), before=before,
        state=state,
        data={"acceptance": acceptance.to_dict(), "accepted": len(kept), "acceptance_rate": acceptance.rate()},
        sections={"Acceptance (RFT filters)": acceptance.markdown()},
    )  # fmt: skip
