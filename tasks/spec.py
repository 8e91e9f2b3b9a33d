"""What defines a benchmark task: where its problems come from and the protocol it is run under."""

from __future__ import annotations

from dataclasses import dataclass, field

from .prompts import COT_INSTRUCTION


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset and how its columns map onto a problem (first present name wins)."""

    dataset: str
    split: str
    config: str | None = None
    problem: tuple[str, ...] = ("problem", "question")
    answer: tuple[str, ...] = ("answer", "final_answer", "gt_answer")
    id: tuple[str, ...] = ()  # empty: the row index


@dataclass(frozen=True)
class Protocol:
    """Sampling and limits a task is evaluated under; defaults are the CoRT paper's."""

    k: int = 1  # samples per problem
    temperature: float = 0.6
    top_p: float = 0.95
    max_tool_calls: int = 15
    max_tokens: int = 32768  # prompt + all turns + interpreter outputs, and per call
    timeout_s: float = 30.0  # per code cell


# The CoRT paper's evaluation protocol (k is each task's own): the one place its numbers are written.
# Backends, the rollout's limits, the sandbox's cell timeout, serve and the trainers default to it.
CORT_PROTOCOL = Protocol()


@dataclass(frozen=True)
class TaskSpec:
    """A registered task. `file` is looked up in the data folder (`--data-dir` or
    $CORTBENCH_DATA_DIR); without one, problems come from `hub`."""

    name: str
    description: str
    file: str | None = None  # jsonl with `problem` and `gt_answer` rows
    hub: HubSource | None = None
    size: int | None = None  # expected number of problems; checked on load
    answer_type: str = "latex"  # "integer" | "number" | "latex"
    scorer: str = "math-verify"  # how answers are graded: a scorer registered in analyzers.scorers
    instruction: str = COT_INSTRUCTION
    protocol: Protocol = field(default_factory=Protocol)
    meta_file: str | None = None  # optional per-row metadata jsonl (in the data folder), joined by row
    label: str | None = None  # column title in tables and leaderboards (default: the name)

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class TaskGroup:
    """Tasks reported together; the group score is the plain mean of the task scores."""

    name: str
    description: str
    tasks: tuple[str, ...]
