"""Typed records of one trajectory: what `cortbench run` appends to runs/<name>/samples.jsonl.

The schema is the contract between the harness and everything downstream (analyzers, trainers,
leaderboards): fields are only ever added, never renamed. See docs/records.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1

SegmentKind = Literal["text", "code", "output"]


@dataclass
class Segment:
    """A contiguous piece of the generation: model text, a code cell, or interpreter output."""

    kind: SegmentKind
    text: str
    tokens: int | None = None  # with the model's tokenizer; None when not counted


@dataclass
class ToolCall:
    """One executed cell, as the model saw it (`output`) and as the sandbox recorded it."""

    code: str
    output: str
    status: str
    duration_s: float
    error_name: str | None = None
    kernel_restarted: bool = False

    @property
    def ok(self) -> bool:
        """The cell ran without error (a truncated output still counts as success)."""
        return self.status in ("ok", "output_truncated")


@dataclass
class InsertedHint:
    """Text a hint policy inserted: where (`offset` into `generation`), at which point, and what."""

    point: str  # "opening" | "before_code" | "after_output"
    offset: int
    text: str


@dataclass
class TokenCounts:
    generated: int = 0  # written by the model
    total: int = 0  # prompt + generation + interpreter outputs + inserted hints
    prompt: int | None = None  # None in records written before it was stored

    @property
    def response(self) -> int | None:
        """The whole generation, interpreter outputs included: the paper's token count."""
        return None if self.prompt is None else self.total - self.prompt


@dataclass
class Timing:
    started_at: float = 0.0  # unix time
    generation_s: float = 0.0
    tools_s: float = 0.0
    total_s: float = 0.0


@dataclass
class TrajectoryRecord:
    """One sample of one problem: the unit that is written, resumed, graded and analysed."""

    task: str
    problem_id: str
    sample_idx: int
    prompt: str
    generation: str  # the full text, output blocks included
    finish_reason: str  # "stop" | "length" | "tool_limit" | "error" | ...
    gold: str | None = None
    problem_meta: dict[str, Any] = field(
        default_factory=dict
    )  # the task's per-problem metadata (answer type, ...)
    segments: list[Segment] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    hints: list[InsertedHint] = field(default_factory=list)
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timing: Timing = field(default_factory=Timing)
    error: str | None = None  # why the trajectory failed, if it did (kept, never dropped)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies a sample across resumes."""
        return (self.task, self.problem_id, self.sample_idx)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrajectoryRecord:
        data = dict(data)
        data["segments"] = [Segment(**s) for s in data.get("segments", [])]
        data["tool_calls"] = [ToolCall(**c) for c in data.get("tool_calls", [])]
        data["hints"] = [InsertedHint(**h) for h in data.get("hints", [])]
        data["tokens"] = TokenCounts(**data.get("tokens", {}))
        data["timing"] = Timing(**data.get("timing", {}))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})
