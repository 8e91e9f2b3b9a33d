"""Code cells of a trajectory and their statistics: usage, success, error kinds, tool-limit hits.

A cell is a python block the model wrote: closed blocks that ran (matched to
`TrajectoryRecord.tool_calls`), closed blocks that did not run (written after the tool limit), and
an unclosed block the length limit cut off. `cell_index` of an executed cell is its position in
`tool_calls`; cells that did not run follow, in the order of the generation. For records written
by `cortbench run` that is simply the order of the blocks, and per-cell analyses that work on
`tool_calls` (purpose labels, ...) join on (task, problem_id, sample_idx, cell_index) directly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..harness.records import ToolCall, TrajectoryRecord
from ..tasks.prompts import TOOL_LIMIT_MESSAGE
from .tokens import LocatedSegment, locate_segments, unclosed_block

CellState = Literal["executed", "not_executed", "unclosed"]

LIMIT_TEXT = TOOL_LIMIT_MESSAGE.strip()


@dataclass(frozen=True)
class Cell:
    """One python block of a generation."""

    index: int  # cell_index: the tool_calls position when executed, else after all executed cells
    code: str
    offset: int | None  # character offset of the code (after the fence line) in the generation
    state: CellState
    call: ToolCall | None = None  # the execution, for executed cells
    call_index: int | None = None  # its position in `tool_calls`

    @property
    def status(self) -> str:
        return self.call.status if self.call is not None else self.state

    @property
    def error_kind(self) -> str | None:
        return error_kind(self.call) if self.call is not None else None


def error_kind(call: ToolCall) -> str | None:
    """Why a call failed, or None when it succeeded (`ToolCall.ok`): the exception name for an
    ordinary error (SyntaxError, NameError, ...), else the sandbox status (timeout, memory, killed,
    or whatever another sandbox reports)."""
    if call.ok:
        return None
    if call.status == "error":
        return call.error_name or "error"
    return call.status


def cells_of(record: TrajectoryRecord, segments: list[LocatedSegment] | None = None) -> list[Cell]:
    """The generation's python blocks in order, each executed one paired with its tool call
    (`segments`: `tokens.locate_segments(record)`, computed here when not given).

    Calls are matched to blocks by their code, in order; a block no call matches did not run. A
    call that matches no block (a record whose generation was edited) still gets a cell, without an
    offset, so no execution is ever lost.
    """
    if segments is None:
        segments = locate_segments(record)
    blocks = [s for s in segments if s.kind == "code"]
    cells: list[Cell] = []
    b = 0
    for i, call in enumerate(record.tool_calls):
        code = call.code.strip()
        j = next((j for j in range(b, len(blocks)) if blocks[j].text.strip() == code), None)
        if j is None:
            cells.append(Cell(len(cells), call.code, None, "executed", call, i))
            continue
        for skipped in blocks[b:j]:
            cells.append(Cell(len(cells), skipped.text, skipped.offset, "not_executed"))
        cells.append(Cell(len(cells), call.code, blocks[j].offset, "executed", call, i))
        b = j + 1
    for skipped in blocks[b:]:
        cells.append(Cell(len(cells), skipped.text, skipped.offset, "not_executed"))
    if segments and segments[-1].kind == "text":
        start = unclosed_block(segments[-1])
        if start is not None:
            cells.append(Cell(len(cells), record.generation[start:], start, "unclosed"))
    return _numbered(cells, len(record.tool_calls))


def _numbered(cells: list[Cell], calls: int) -> list[Cell]:
    """Executed cells take their `tool_calls` position; the others follow in generation order."""
    others = iter(range(calls, calls + len(cells)))
    renumbered = [replace(c, index=c.call_index if c.call_index is not None else next(others)) for c in cells]
    return sorted(renumbered, key=lambda c: c.index)


@dataclass(frozen=True)
class CodeStats:
    """Code behaviour of one trajectory."""

    blocks: int  # closed python blocks written (executed or not)
    calls: int  # executed cells
    succeeded: int  # calls with status ok or output_truncated
    failed: int
    not_executed: int  # closed blocks that did not run (after the tool limit)
    kernel_restarts: int
    error_kinds: list[str]  # one per failed call, in order
    tool_limit_hit: bool
    unclosed_block: bool  # the generation ends inside a python block
    unclosed_at_length: bool  # ... because the length limit cut it
    tool_seconds: float

    def columns(self) -> dict[str, Any]:
        return {
            "code_blocks": self.blocks,
            "code_calls": self.calls,
            "code_succeeded": self.succeeded,
            "code_failed": self.failed,
            "code_not_executed": self.not_executed,
            "kernel_restarts": self.kernel_restarts,
            "error_kinds": list(self.error_kinds),
            "uses_code": self.calls > 0,
            "tool_limit_hit": self.tool_limit_hit,
            "unclosed_block": self.unclosed_block,
            "unclosed_at_length": self.unclosed_at_length,
            "tool_seconds": self.tool_seconds,
        }


def code_stats(record: TrajectoryRecord, cells: list[Cell], max_tool_calls: int | None) -> CodeStats:
    """`max_tool_calls` is the run's limit (run.json); the limit also counts as hit when the limit
    message is in the generation or the record ended with finish_reason "tool_limit"."""
    calls = record.tool_calls
    kinds = [k for k in (error_kind(c) for c in calls) if k is not None]
    unclosed = any(c.state == "unclosed" for c in cells)
    hit = (
        (max_tool_calls is not None and max_tool_calls > 0 and len(calls) >= max_tool_calls)
        or record.finish_reason == "tool_limit"
        or (bool(calls) and LIMIT_TEXT in record.generation)
    )
    succeeded = sum(c.ok for c in calls)
    return CodeStats(
        blocks=sum(c.state != "unclosed" for c in cells),
        calls=len(calls),
        succeeded=succeeded,
        failed=len(calls) - succeeded,
        not_executed=sum(c.state == "not_executed" for c in cells),
        kernel_restarts=sum(c.kernel_restarted for c in calls),
        error_kinds=kinds,
        tool_limit_hit=hit,
        unclosed_block=unclosed,
        unclosed_at_length=unclosed and record.finish_reason == "length",
        tool_seconds=float(sum(c.duration_s for c in calls)),
    )


def summarize_code(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-level code statistics over trajectory rows (`CodeStats.columns`)."""
    n = len(rows)
    calls = sum(r["code_calls"] for r in rows)
    kinds: Counter[str] = Counter()
    for r in rows:
        kinds.update(r["error_kinds"])
    return {
        "trajectories": n,
        "code_usage_rate": sum(r["uses_code"] for r in rows) / n if n else None,
        "code_success_rate": sum(r["code_succeeded"] for r in rows) / calls if calls else None,
        "calls_per_response": calls / n if n else None,
        "blocks_per_response": sum(r["code_blocks"] for r in rows) / n if n else None,
        "calls": calls,
        "failed_calls": sum(r["code_failed"] for r in rows),
        "not_executed_blocks": sum(r["code_not_executed"] for r in rows),
        "kernel_restarts": sum(r["kernel_restarts"] for r in rows),
        "error_kinds": dict(kinds.most_common()),
        "tool_limit_hits": sum(r["tool_limit_hit"] for r in rows),
        "unclosed_at_length": sum(r["unclosed_at_length"] for r in rows),
        "tool_seconds": sum(r["tool_seconds"] for r in rows),
    }
