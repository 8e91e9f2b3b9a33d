"""Reading tool calls back from a transcript's text, for outputs that carry no records (lm-eval
samples, other tools' generations): each python block followed by an output block is an executed
call, failed when its output is one of the interpreter's failure texts (`cortbench.harness.text_calls`,
which the importers share)."""

from __future__ import annotations

from dataclasses import dataclass

from ..harness.fences import split_segments
from ..harness.text_calls import output_failed


@dataclass(frozen=True)
class TextToolCall:
    code: str
    output: str
    failed: bool


def tool_calls_in(text: str) -> list[TextToolCall]:
    segments = split_segments(text)
    return [
        TextToolCall(code.text, out.text, output_failed(out.text))
        for code, out in zip(segments, segments[1:])
        if code.kind == "code" and out.kind == "output"
    ]
