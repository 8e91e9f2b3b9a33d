"""Tokens per segment of a trajectory: reasoning, code, interpreter output, final answer, hints.

Counts come from the record's segments (the model's tokenizer at generation time) when it has
them; else from a tokenizer the caller names; else from a labelled approximation, ceil(chars / 4),
the same rule the openai backend uses without a tokenizer. Every split says which (`tokenizer`),
so an approximation is never mistaken for a real count.

Sub-spans of a text segment (the final answer, inserted hints, an unclosed code block) are not
tokenized on their own: they get the segment's tokens in proportion to their characters, so the
parts always add up to the segment counts the model's tokenizer gave. Fence lines ("```python",
"```output", "```") belong to no segment; the backend's own totals (`record_*`) include them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..harness.fences import split_segments
from ..harness.records import Segment, SegmentKind, TrajectoryRecord

APPROX = "approx:chars/4"
BOXED = "\\boxed"

Counter = Callable[[list[str]], list[int]]  # token counts of many texts at once

_OPEN_LINE = re.compile(r"^```python[ \t]*$", re.MULTILINE)
_ANY_FENCE = re.compile(r"^```", re.MULTILINE)


def approx_tokens(text: str) -> int:
    """ceil(chars / 4): a rough token count, labelled `approx:chars/4` wherever it is used."""
    return (len(text) + 3) // 4


def approx_counter(texts: list[str]) -> list[int]:
    return [approx_tokens(t) for t in texts]


def hf_counter(name: str) -> Counter:
    """Counts with a Hugging Face tokenizer (name or local path), as the backends do: no special
    tokens added. Needs transformers (`pip install 'cortbench[hf]'`)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ValueError("--tokenizer needs transformers: pip install 'cortbench[hf]'") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load tokenizer {name!r}: {str(exc).splitlines()[0]}") from None

    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]

    return count


def record_tokenizer(config: dict[str, Any]) -> str:
    """What the record's own segment counts were made with, from the run's configuration."""
    backend, model = config.get("backend"), config.get("model") or config.get("model_file")
    if config.get("tokenizer"):
        return f"{backend}:{config['tokenizer']}"
    if backend == "openai" and "tokenizer" in config:  # openai without a tokenizer counts chars/4
        return APPROX
    return f"{backend}:{model}"


@dataclass(frozen=True)
class LocatedSegment:
    """A segment and where its text starts in the generation."""

    kind: SegmentKind
    text: str
    offset: int
    tokens: int | None


def locate_segments(record: TrajectoryRecord) -> list[LocatedSegment]:
    """The record's segments with their character offsets. Records without segments (or whose
    segments do not match the generation) are split again here, without token counts."""
    if record.segments:
        located = _locate(record.generation, record.segments)
        if located is not None:
            return located
    return _locate(record.generation, split_segments(record.generation)) or []


def _locate(generation: str, segments: list[Segment]) -> list[LocatedSegment] | None:
    """Walks the generation as `split_segments` cut it: text runs, then fenced blocks."""
    out, pos = [], 0
    for s in segments:
        if s.kind == "text":
            if not generation.startswith(s.text, pos):
                return None
            out.append(LocatedSegment("text", s.text, pos, s.tokens))
            pos += len(s.text)
            continue
        fence = "```python" if s.kind == "code" else "```output"
        line_end = generation.find("\n", pos)
        if (
            not generation.startswith(fence, pos)
            or line_end < 0
            or not generation.startswith(s.text, line_end + 1)
        ):
            return None
        start = line_end + 1
        out.append(LocatedSegment(s.kind, s.text, start, s.tokens))
        close = generation.find("```", start + len(s.text))
        if close < 0:
            return None
        after = generation.find("\n", close)
        pos = len(generation) if after < 0 else after + 1
    return out if pos == len(generation) else None


def unclosed_block(segment: LocatedSegment) -> int | None:
    """Offset (in the generation) of an unclosed python block's code at the end of the last text
    segment: a "```python" line with no fence after it (the length limit cut the cell)."""
    last = None
    for match in _OPEN_LINE.finditer(segment.text):
        last = match
    if last is None or _ANY_FENCE.search(segment.text, last.end()):
        return None
    start = last.end() + 1 if last.end() < len(segment.text) else last.end()
    return segment.offset + start


def final_answer_start(segment: LocatedSegment, end: int) -> int | None:
    """Offset of the final answer in the trailing text segment (up to `end`): the start of the line
    that holds the last \\boxed. None when that text has no \\boxed."""
    local_end = end - segment.offset
    box = segment.text.rfind(BOXED, 0, local_end)
    if box < 0:
        return None
    return segment.offset + segment.text.rfind("\n", 0, box) + 1


@dataclass(frozen=True)
class TokenSplit:
    """Tokens of one trajectory by segment. `generated` is what the model wrote (reasoning, code,
    final answer); `response` adds interpreter outputs and inserted hints (prompt excluded)."""

    reasoning: int
    code: int
    output: int
    final_answer: int
    hints: int
    generated: int
    response: int
    final_answer_chars: int
    tokenizer: str  # "<backend>:<model>" (record counts), "hf:<name>", or "approx:chars/4"

    def columns(self) -> dict[str, Any]:
        return {
            "tokens_reasoning": self.reasoning,
            "tokens_code": self.code,
            "tokens_output": self.output,
            "tokens_final_answer": self.final_answer,
            "tokens_hints": self.hints,
            "tokens_generated": self.generated,
            "tokens_response": self.response,
            "final_answer_chars": self.final_answer_chars,
            "tokenizer": self.tokenizer,
        }


def token_split(
    record: TrajectoryRecord,
    segments: list[LocatedSegment],
    *,
    record_label: str,
    counter: Counter | None = None,
    counter_label: str = APPROX,
) -> TokenSplit:
    """Split one trajectory's tokens. Record counts win; else `counter` (labelled `counter_label`);
    else the chars/4 approximation."""
    known = [s.tokens for s in segments if s.tokens is not None]
    if segments and len(known) == len(segments):
        counts, label = known, record_label
    elif counter is not None:
        counts, label = counter([s.text for s in segments]), counter_label
    else:
        counts, label = approx_counter([s.text for s in segments]), APPROX
    hints = [(h.offset, h.offset + len(h.text)) for h in record.hints if h.text]
    parts = {"reasoning": 0.0, "code": 0.0, "output": 0.0, "final_answer": 0.0, "hints": 0.0}
    final_chars = 0
    last = len(segments) - 1
    for i, (s, n) in enumerate(zip(segments, counts)):
        if s.kind != "text":
            parts[s.kind] += n
            continue
        start, end = s.offset, s.offset + len(s.text)
        if not end > start:
            continue
        per_char = n / (end - start)
        spans: dict[str, tuple[int, int]] = {}
        if i == last:  # the trailing text: maybe an unclosed block, maybe the final answer
            code_at = unclosed_block(s)
            text_end = end if code_at is None else code_at
            if code_at is not None:
                spans["code"] = (code_at, end)
            answer_at = final_answer_start(s, text_end)
            if answer_at is not None:
                spans["final_answer"] = (answer_at, text_end)
        hint_chars = sum(_overlap(h, (start, end)) for h in hints)
        parts["hints"] += hint_chars * per_char
        used = hint_chars
        for kind, span in spans.items():
            chars = span[1] - span[0] - sum(_overlap(h, span) for h in hints)
            parts[kind] += chars * per_char
            used += chars
            if kind == "final_answer":
                final_chars = chars
        parts["reasoning"] += (end - start - used) * per_char
    whole = _round_keeping_sum(parts, sum(counts))
    generated = whole["reasoning"] + whole["code"] + whole["final_answer"]
    return TokenSplit(
        whole["reasoning"],
        whole["code"],
        whole["output"],
        whole["final_answer"],
        whole["hints"],
        generated,
        generated + whole["output"] + whole["hints"],
        final_chars,
        label,
    )


def _round_keeping_sum(parts: dict[str, float], total: int) -> dict[str, int]:
    """Whole tokens per part that add up to the segments' total (largest remainders round up)."""
    whole = {k: int(v) for k, v in parts.items()}
    by_remainder = sorted(parts, key=lambda k: parts[k] - whole[k], reverse=True)
    for k in by_remainder[: max(0, total - sum(whole.values()))]:
        whole[k] += 1
    return whole


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))
