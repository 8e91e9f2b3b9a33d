"""Typed records of one trajectory: what `cortbench run` appends to runs/<name>/samples.jsonl.

The schema is the contract between the harness and everything downstream (analyzers, trainers,
leaderboards): fields are only ever added, never renamed. Readers ignore fields they do not know, at
every depth (a newer writer's additions), refuse records of a newer schema version than they know,
and migrate older ones (`MIGRATIONS`). See docs/records.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, Literal, TypeVar

from ..tasks.prompts import TOOL_LIMIT_MESSAGE
from .sandbox._records import SUCCEEDED

SCHEMA_VERSION = 2

T = TypeVar("T")


class FinishReason(StrEnum):
    """Why a trajectory ended."""

    STOP = "stop"  # the model ended on its own: end of sequence, or no code block to run
    TOOL_LIMIT = "tool_limit"  # ended on its own after its last allowed tool call (the limit message)
    LENGTH = "length"  # the token budget ran out (per call or in total)
    ERROR = "error"  # the trajectory failed; the record's `error` says why

    @property
    def ended(self) -> bool:
        """The model ended the trajectory itself (what a trained trajectory closes with EOS)."""
        return self in (FinishReason.STOP, FinishReason.TOOL_LIMIT)


class RecordVersionError(ValueError):
    """A record written by a newer cortbench, with a schema this one cannot read."""


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
        """The cell's code ran to its end without error: the one definition of a successful call
        (`SUCCEEDED`: a truncated output, or a kernel replaced after the cell, still count)."""
        return self.status in SUCCEEDED


@dataclass
class InsertedHint:
    """Text a hint policy inserted: where (`offset` into `generation`), at which point, and what."""

    point: str  # "opening" | "before_code" | "after_output"
    offset: int
    text: str


@dataclass
class TokenCounts:
    """Token counts with the model's tokenizer; None where unknown (records another tool wrote,
    imported), never 0."""

    generated: int | None = None  # written by the model
    total: int | None = None  # prompt + generation + interpreter outputs + inserted hints
    prompt: int | None = None  # None in records written before it was stored

    @property
    def response(self) -> int | None:
        """The whole generation, interpreter outputs included: the paper's token count."""
        return None if self.prompt is None or self.total is None else self.total - self.prompt


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
    finish_reason: str  # a FinishReason value: "stop" | "tool_limit" | "length" | "error"
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
    scorer: str | None = (
        None  # how its answer is graded: its task's scorer (None: the task's, else math-verify)
    )
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies a sample across resumes."""
        return (self.task, self.problem_id, self.sample_idx)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ended(self) -> bool:
        """The model ended the trajectory itself ("stop" or "tool_limit")."""
        return self.finish_reason in (FinishReason.STOP, FinishReason.TOOL_LIMIT)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrajectoryRecord:
        """A record from its JSON form, of this schema version or migrated from an older one;
        unknown fields are ignored at every depth. RecordVersionError for a newer version. Without
        a `tool_calls` field (another tool's transcript), the calls are read from the generation's
        python and output blocks (`text_calls`), so every reader sees the same executed cells."""
        data = migrate(data)
        data["segments"] = [_known(Segment, s) for s in data.get("segments") or []]
        if "tool_calls" in data:
            data["tool_calls"] = [_known(ToolCall, c) for c in data["tool_calls"] or []]
        else:  # a record another tool wrote: its executed calls are read back from the transcript
            from .text_calls import tool_calls_from_text

            data["tool_calls"] = tool_calls_from_text(str(data.get("generation", "")))
        data["hints"] = [_known(InsertedHint, h) for h in data.get("hints") or []]
        data["tokens"] = _known(TokenCounts, data.get("tokens") or {})
        data["timing"] = _known(Timing, data.get("timing") or {})
        return _known(cls, data)


def _known(cls: type[T], data: Any) -> T:
    """`cls` from the keys of `data` it has (a newer writer may have added others)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be an object, not {type(data).__name__}")
    assert is_dataclass(cls)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 wrote "stop" for a trajectory that ended after its last allowed tool call, where
    version 2 says "tool_limit" (the limit message in the generation tells which); and it had no
    `scorer`: its chemistry records said so in their metadata (`grader: "chem"`)."""
    if data.get("finish_reason") == FinishReason.STOP and TOOL_LIMIT_MESSAGE in data.get("generation", ""):
        data["finish_reason"] = str(FinishReason.TOOL_LIMIT)
    meta = data.get("problem_meta")
    if not data.get("scorer") and isinstance(meta, dict) and meta.get("grader") == "chem":
        data["scorer"] = "chem"
    return data


# schema version -> the function that brings a record of that version to the next one
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a record's JSON object at SCHEMA_VERSION (records without a version are version 1,
    the first one written)."""
    if not isinstance(data, dict):
        raise TypeError(f"a record must be an object, not {type(data).__name__}")
    data = dict(data)
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"schema_version {version!r} is not a version")
    if version > SCHEMA_VERSION:
        raise RecordVersionError(
            f"a record of schema version {version}: this cortbench reads up to {SCHEMA_VERSION} (upgrade it)"
        )
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    data["schema_version"] = version
    return data
