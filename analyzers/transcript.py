"""Reading tool calls back from a transcript's text, for outputs that carry no records (lm-eval
samples, other tools' generations): each python block followed by an output block is an executed
call, failed when its output is one of the interpreter's failure texts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..harness.fences import split_segments
from ..harness.sandbox import STATE_LOST_TEXT, TIMEOUT_TEXT

# A traceback (ours is compact: a SyntaxError starts at its `File "<cell-N>"` line), CoRT's timeout
# text, a restarted kernel, or a last line naming an exception (CoRT prints format_exc()).
_FAILURE = re.compile(
    r"\ATraceback \(most recent call last\):|\AFile \"<cell-\d+>\"|\A" + re.escape(TIMEOUT_TEXT)
    + r"|" + re.escape(STATE_LOST_TEXT) + r"|^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)(: .*)?\Z",
    re.MULTILINE,
)  # fmt: skip


@dataclass(frozen=True)
class TextToolCall:
    code: str
    output: str
    failed: bool


def tool_calls_in(text: str) -> list[TextToolCall]:
    segments = split_segments(text)
    return [
        TextToolCall(code.text, out.text, bool(_FAILURE.search(out.text.strip())))
        for code, out in zip(segments, segments[1:])
        if code.kind == "code" and out.kind == "output"
    ]
