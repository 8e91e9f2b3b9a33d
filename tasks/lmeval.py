"""The data side of cortbench's lm-eval tasks (`lm_eval --tasks cort_math`): the YAML files in
tasks/lm_eval_tasks/ are installed as lm_eval/tasks/cortbench/ (a wheel's copies, an editable
install's stubs: tasks/lm_eval_editable.py) and name these functions.

lm-eval calls `load` as its `custom_dataset` with the task's `dataset_kwargs` and every metadata
entry (`--metadata`, `--model_args`), so it takes `**_`. Problems come from `--metadata
data_dir=DIR`, else $CORTBENCH_DATA_DIR, else the hub: the same loading and checks as `cortbench run`.
"""

from __future__ import annotations

from typing import Any

from .loading import DATA_DIR_ENV, LOCAL_FILES, load_problems
from .problems import TaskDataError
from .registry import get_task

LM_EVAL_LOCAL_FILES = f"${DATA_DIR_ENV} or --metadata data_dir=DIR"


def load(cort_task: str, data_dir: str | None = None, **_: Any):
    """The task's problems as lm-eval's dataset. Data that cannot be had is one line and exit 1:
    lm-eval would print the error's traceback."""
    import datasets

    spec = get_task(cort_task)
    try:
        problems = load_problems(spec, data_dir)
    except TaskDataError as exc:
        raise SystemExit(f"cortbench: {str(exc).replace(LOCAL_FILES, LM_EVAL_LOCAL_FILES)}") from None
    rows = [
        {"id": p.problem_id, "task": p.task, "problem": p.problem, "gt_answer": p.gold,
         "instruction": spec.instruction}
        for p in problems
    ]  # fmt: skip
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc: dict[str, Any]) -> str:
    """The protocol's user message: the problem and the CoRT instruction. The server that runs the
    tool loop applies the model's chat template and the hint policy."""
    return doc["problem"] + doc["instruction"]
