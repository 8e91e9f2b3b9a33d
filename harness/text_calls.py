"""Tool calls read back from a transcript's text, for generations that come without records (lm-eval
samples, other tools' outputs, `cortbench import`): each python block followed by an output block
is an executed call, failed when its output is one of the interpreter's failure texts.

It lives in the harness because the importers and `TrajectoryRecord.from_dict` (harness) need it
and data flows one way (tasks -> harness -> analyzers -> leaderboards); the analyzers and trainers
read transcripts with it too.
"""

from __future__ import annotations

import re

from .fences import split_segments
from .records import Segment, ToolCall
from .sandbox import STATE_LOST_TEXT, TIMEOUT_TEXT

# A traceback (ours is compact: a SyntaxError starts at its `File "<cell-N>"` line), CoRT's timeout
# text, a restarted kernel, or a last line naming an exception (CoRT prints format_exc()).
FAILURE = re.compile(
    r"\ATraceback \(most recent call last\):|\AFile \"<cell-\d+>\"|\A" + re.escape(TIMEOUT_TEXT)
    + r"|" + re.escape(STATE_LOST_TEXT) + r"|^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)(: .*)?\Z",
    re.MULTILINE,
)  # fmt: skip

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::.*)?$", re.MULTILINE)


def output_failed(output: str) -> bool:
    """Whether an ```output block's text says the cell failed (raised, timed out, lost its kernel)."""
    return bool(FAILURE.search(output.strip()))


def error_name_in(output: str) -> str | None:
    """The exception a failed cell's output names, as the sandbox records it (`NameError`, and
    `TimeoutError` for CoRT's timeout text); None when the text names none."""
    text = output.strip()
    if text.startswith(TIMEOUT_TEXT):
        return "TimeoutError"
    names = _EXCEPTION_LINE.findall(text)
    return names[-1].rsplit(".", 1)[-1] if names else None


def tool_calls_from_text(text: str, segments: list[Segment] | None = None) -> list[ToolCall]:
    """The executed calls of a transcript as records: status "ok" or "error" read from the output
    text; durations are unknown (0.0). `segments`: `split_segments(text)`, computed when not given."""
    if segments is None:
        segments = split_segments(text)
    calls = []
    for code, out in zip(segments, segments[1:]):
        if code.kind != "code" or out.kind != "output":
            continue
        failed = output_failed(out.text)
        calls.append(
            ToolCall(
                code=code.text,
                output=out.text,
                status="error" if failed else "ok",
                duration_s=0.0,
                error_name=error_name_in(out.text) if failed else None,
                kernel_restarted=STATE_LOST_TEXT in out.text,
            )
        )
    return calls
