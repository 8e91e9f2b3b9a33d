"""The CoRT text protocol: where a python block closes, what it holds, and how a generation splits.

A code block is a line that is exactly "```python" (trailing spaces allowed), the code, and a line
that is exactly "```". The harness appends "```output\\n{result}\\n```\\n" after it. Stop
detection must be exact: only a fence that closes an open python block ends a turn, never a stray
backtick at a line end, and an unclosed block (at the length limit) is never executed.
"""

from __future__ import annotations

import re

from .records import Segment, SegmentKind

OPEN_PYTHON = "```python"
OPEN_OUTPUT = "```output"
FENCE = "```"
STOP_STRINGS = ("```\n",)  # what backends stop on; the closing fence itself is checked here

_BLOCK = re.compile(r"^```(python|output)[ \t]*\n(.*?)^```[ \t]*$\n?", re.MULTILINE | re.DOTALL)


def output_block(result: str) -> str:
    """The text appended after an executed cell."""
    return f"{OPEN_OUTPUT}\n{result}\n{FENCE}\n"


def closed_code(text: str) -> str | None:
    """The code of the python block that `text` ends by closing, else None.

    `text` is the generation so far; a backend that strips its stop string must restore the
    closing fence first (see `restore_stop`).
    """
    stripped = text.rstrip(" \t")
    if stripped.endswith("\n"):
        stripped = stripped[:-1]
    lines = stripped.split("\n")
    if lines[-1].rstrip() != FENCE:
        return None
    for i in range(len(lines) - 2, -1, -1):
        line = lines[i].rstrip()
        if line == OPEN_PYTHON:
            return "\n".join(lines[i + 1 : -1])
        if line.startswith(FENCE):  # another fence in between: the last one does not close python
            return None
    return None


def restore_stop(text: str, stop: str | None) -> str:
    """OpenAI-style servers strip the stop string from the text; put the fence back."""
    return text + stop if stop and not text.endswith(stop) else text


def cut_at_stop(text: str, stop: tuple[str, ...], start: int = 0) -> tuple[str, str | None]:
    """For engines that stop on the token completing a stop string (it may run past it: "```\n\nThe"):
    the text cut right after the first stop string found from `start`, and that string."""
    hits = [(i, s) for s in stop if (i := text.find(s, max(0, start))) != -1]
    if not hits:
        return text, None
    i, s = min(hits)
    return text[: i + len(s)], s


def in_block(text: str) -> bool:
    """Whether `text` ends inside a fenced block (```bash, ```text, ```python, a plain ```...)."""
    inside = False
    for line in text.split("\n"):
        line = line.rstrip()
        if line.startswith(FENCE) and (not inside or line == FENCE):
            inside = not inside
    return inside


def stripped_stop(so_far: str, stop: tuple[str, ...]) -> str | None:
    """For servers that strip the stop string without saying which one matched: a stop right where
    a python block would close, or at the start of a line inside any other open block, is taken as
    the closing fence (an end of sequence there is implausible). A plain ``` that opens a block
    cannot be told from an end of sequence after a newline: it is taken as the end."""

    def closes(s: str) -> bool:
        if closed_code(so_far + s) is not None:
            return True
        return s in STOP_STRINGS and so_far.endswith("\n") and in_block(so_far)

    return next((s for s in stop if closes(s)), None)


def split_segments(generation: str) -> list[Segment]:
    """Split a full generation into text, code and output segments, in order."""
    segments: list[Segment] = []
    pos = 0
    for match in _BLOCK.finditer(generation):
        if match.start() > pos:
            segments.append(Segment("text", generation[pos : match.start()]))
        kind: SegmentKind = "code" if match.group(1) == "python" else "output"
        segments.append(Segment(kind, match.group(2).removesuffix("\n")))
        pos = match.end()
    if pos < len(generation):
        segments.append(Segment("text", generation[pos:]))
    return segments
