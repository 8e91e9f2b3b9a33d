"""The scoring side of cortbench's lm-eval tasks (see cortbench.tasks.lmeval): grading with the
protocol's math-verify call, plus tool calls per sample and code success read from the transcript.

With `repeats: k` and a `take_first_k` filter, `results[0]` holds the k transcripts of a problem,
and `acc` is that problem's avg@k.
"""

from __future__ import annotations

import math
from typing import Any

from ..harness.text_calls import tool_calls_from_text
from .grading import grade


def process_results(doc: dict[str, Any], results: list) -> dict[str, Any]:
    transcripts = results[0] if isinstance(results[0], list) else [results[0]]
    calls = [tool_calls_from_text(t) for t in transcripts]
    total = sum(len(c) for c in calls)
    return {
        "acc": sum(grade(doc["gt_answer"], t).correct for t in transcripts) / len(transcripts),
        "tool_calls": total / len(transcripts),
        "code_success": [
            total - sum(not call.ok for c in calls for call in c),
            total,
        ],  # see code_success_rate
    }


def code_success_rate(pairs: list[list[int]]) -> float:
    """The share of all executed cells of the task that ran without error (a micro average)."""
    calls = sum(p[1] for p in pairs)
    return sum(p[0] for p in pairs) / calls if calls else math.nan
