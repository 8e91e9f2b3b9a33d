"""Problems and loading them from a jsonl file of `problem` / `gt_answer` rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    task: str
    problem_id: str
    problem: str
    gold: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # subject, level, unit, ...
    scorer: str = "math-verify"  # its task's (TaskSpec.scorer)

    def with_meta(self, meta: dict[str, Any]) -> Problem:
        return replace(self, meta={**self.meta, **meta})


class TaskDataError(ValueError):
    """A task's data is missing or malformed; the message names the file and the row."""


def load_jsonl(path: str | Path, task: str | None = None, limit: int | None = None) -> list[Problem]:
    """Rows with `problem` and `gt_answer` (an `id` if present, else the row number) from `path`; a
    `meta` object in a row becomes the problem's metadata (other extra fields are ignored)."""
    path = Path(path)
    task = task or path.stem.removeprefix("test_")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TaskDataError(f"cannot read {path}: {exc.strerror}") from None
    problems = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TaskDataError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("problem"), str) or "gt_answer" not in row:
            raise TaskDataError(f"{path}:{number}: a row needs the fields 'problem' (text) and 'gt_answer'")
        meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
        problems.append(
            Problem(task, str(row.get("id", number - 1)), row["problem"], str(row["gt_answer"]), meta)
        )
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise TaskDataError(f"{path} holds no problems")
    return problems
