"""A trajectory cut into what the transcript viewer shows: reasoning, code cells and interpreter
outputs as separate blocks, each cell with its execution status and purpose label, and the text
inside behaviour spans and inserted hints marked.

Blocks hold plain text only; the templates escape it (model output is hostile text). Offsets are
character offsets into `record.generation`, as the analyzers' spans and the records' hints use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..analyzers.code import cells_of
from ..analyzers.tokens import locate_segments
from ..harness.fences import OPEN_PYTHON
from ..harness.records import TrajectoryRecord

BlockKind = Literal["text", "code", "output"]


@dataclass(frozen=True)
class Piece:
    """A run of text with the marks that cover it (behaviour kinds, "hint")."""

    text: str
    marks: tuple[str, ...] = ()
    title: str = ""


@dataclass
class Block:
    kind: BlockKind
    pieces: list[Piece]
    state: str | None = None  # code: executed / not_executed / unclosed
    status: str | None = None  # code: the sandbox status (ok, error, timeout, ...)
    error: str | None = None  # code: the error kind of a failed call
    cell_index: int | None = None
    purpose: str | None = None  # code: calculation / verification
    purpose_evidence: str | None = None


@dataclass(frozen=True)
class _Mark:
    start: int
    end: int
    kind: str
    title: str


@dataclass
class Transcript:
    blocks: list[Block] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)  # spans per kind, for the sample's summary


def transcript(
    record: TrajectoryRecord,
    spans: list[dict[str, Any]] | None = None,
    purposes: dict[int, dict[str, Any]] | None = None,
) -> Transcript:
    """The record's generation as blocks. `spans`: its behaviour spans ({kind, start, end, evidence});
    `purposes`: purpose labels by cell_index ({purpose, evidence})."""
    generation = record.generation
    marks = [
        _Mark(int(s["start"]), int(s["end"]), str(s["kind"]), str(s.get("evidence") or s["kind"]))
        for s in spans or ()
    ]
    marks += [
        _Mark(h.offset, h.offset + len(h.text), "hint", f"inserted hint ({h.point})") for h in record.hints
    ]
    purposes = purposes or {}
    segments = locate_segments(record)
    cells = {c.offset: c for c in cells_of(record, segments) if c.offset is not None}
    out = Transcript()
    for kind in sorted({m.kind for m in marks}):
        out.marks[kind] = sum(m.kind == kind for m in marks)
    for segment in segments:
        start, end = segment.offset, segment.offset + len(segment.text)
        if segment.kind == "text":
            unclosed = next((o for o in cells if start <= o <= end and cells[o].state == "unclosed"), None)
            if unclosed is not None:  # the length limit cut a cell: show its code as code
                fence = generation.rfind(OPEN_PYTHON, start, unclosed)
                out.blocks.append(Block("text", _pieces(generation, start, max(start, fence), marks)))
                out.blocks.append(_code_block(generation, unclosed, end, marks, cells[unclosed], purposes))
                continue
            out.blocks.append(Block("text", _pieces(generation, start, end, marks)))
        elif segment.kind == "code" and start in cells:
            out.blocks.append(_code_block(generation, start, end, marks, cells[start], purposes))
        else:
            out.blocks.append(Block(segment.kind, _pieces(generation, start, end, marks)))
    # Blank prose goes; a cell's output stays even when empty (the viewer says "(no output)").
    out.blocks = [b for b in out.blocks if b.kind != "text" or any(p.text.strip() for p in b.pieces)]
    return out


def _code_block(generation: str, start: int, end: int, marks, cell, purposes) -> Block:
    label = purposes.get(cell.index) or {}
    return Block(
        "code",
        _pieces(generation, start, end, marks),
        state=cell.state,
        status=cell.status,
        error=cell.error_kind,
        cell_index=cell.index,
        purpose=label.get("purpose"),
        purpose_evidence=label.get("evidence"),
    )


def _pieces(generation: str, start: int, end: int, marks: list[_Mark]) -> list[Piece]:
    """generation[start:end] cut where marks begin or end, each piece with the marks covering it."""
    inside = [m for m in marks if m.start < end and m.end > start]
    if not inside:
        return [Piece(generation[start:end])]
    cuts = sorted({start, end, *(max(start, m.start) for m in inside), *(min(end, m.end) for m in inside)})
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        covering = [m for m in inside if m.start <= a and m.end >= b]
        pieces.append(
            Piece(
                generation[a:b],
                tuple(dict.fromkeys(m.kind for m in covering)),
                "; ".join(dict.fromkeys(m.title for m in covering)),
            )
        )
    return pieces
