"""The data side of cortbench's lm-eval tasks (`lm_eval --tasks cort_math`): the YAML files in
tasks/lm_eval_tasks/ are installed as lm_eval/tasks/cortbench/ and name these functions.

lm-eval calls `load` as its `custom_dataset` with the task's `dataset_kwargs` and every metadata
entry (`--metadata`, `--model_args`), so it takes `**_`. Problems come from `--metadata
data_dir=DIR`, else $CORTBENCH_DATA_DIR, else the hub: the same loading and checks as `cortbench run`.
"""

from __future__ import annotations

from typing import Any

from .loading import load_problems
from .registry import get_task


def load(cort_task: str, data_dir: str | None = None, **_: Any):
    import datasets

    spec = get_task(cort_task)
    rows = [
        {"id": p.problem_id, "task": p.task, "problem": p.problem, "gt_answer": p.gold,
         "instruction": spec.instruction}
        for p in load_problems(spec, data_dir)
    ]  # fmt: skip
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc: dict[str, Any]) -> str:
    """The protocol's user message: the problem and the CoRT instruction. The server that runs the
    tool loop applies the model's chat template and the hint policy."""
    return doc["problem"] + doc["instruction"]
