"""Both heuristic labelers over one record at once: the purpose of each executed cell (purpose.py)
and the behaviour spans of the trajectory (behaviours.py).

They read the same things from a record: its executed cells, its prose, the numbers in the prose
and each cell's output values. `label_record` works those out once (`purpose.RecordView`) and runs
both heuristics on them; it is what `analyze_run` runs for its default labelers. Its results are
those of `label_cells(record)` and `label_behaviours(record, ...)` called one after the other.
"""

from __future__ import annotations

from collections.abc import Callable

from ..harness.records import TrajectoryRecord
from .behaviours import label_behaviours
from .purpose import RecordView, label_cells


def label_record(
    record: TrajectoryRecord,
    count_tokens: Callable[[str], int] | None = None,
    tokenizer: str = "count_tokens",
) -> tuple[list[dict], dict]:
    """(`label_cells(record)`, `label_behaviours(record, count_tokens, tokenizer)`), from one view."""
    view = RecordView(record)
    return label_cells(record, view), label_behaviours(record, count_tokens, tokenizer, view)
