"""Loading a task's problems: from a local folder (offline, CI) or from the Hugging Face hub."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import replace
from pathlib import Path

from .problems import Problem, TaskDataError, load_jsonl
from .spec import HubSource, TaskSpec

DATA_DIR_ENV = "CORTBENCH_DATA_DIR"
LOCAL_FILES = (
    f"--data-dir or ${DATA_DIR_ENV}"  # how messages say to give local files (lm-eval: tasks/lmeval.py)
)
HUB_PROBE_TIMEOUT_S = 5.0


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local data folder: the argument, else $CORTBENCH_DATA_DIR, else None (the hub)."""
    chosen = explicit or os.environ.get(DATA_DIR_ENV)
    return Path(chosen) if chosen else None


def source_of(spec: TaskSpec, folder: Path | None) -> str:
    """Where `load_problems` takes the task from, for run.json and `cortbench tasks`."""
    if spec.file and (Path(spec.file).is_absolute() or folder is not None):
        return str(Path(folder or "/", spec.file))
    if spec.hub:
        config = f" ({spec.hub.config})" if spec.hub.config else ""
        return f"hub:{spec.hub.dataset}{config}:{spec.hub.split}"
    return f"{spec.file} (needs --data-dir or ${DATA_DIR_ENV})"


def load_problems(
    spec: TaskSpec, folder: str | Path | None = None, limit: int | None = None
) -> list[Problem]:
    """All problems of a task, checked against its expected size, then cut to the first `limit`."""
    folder = data_dir(folder)
    if spec.file and (Path(spec.file).is_absolute() or folder is not None):
        path = Path(folder or "/", spec.file)
        problems = load_jsonl(path, task=spec.name)
        meta = _read_meta(folder / spec.meta_file) if folder and spec.meta_file else None
    elif spec.hub:
        problems, meta = _from_hub(spec.name, spec.hub), None
    else:
        raise TaskDataError(f"task {spec.name}: give the folder holding {spec.file} with {LOCAL_FILES}")
    if spec.size is not None and len(problems) != spec.size:
        raise TaskDataError(
            f"task {spec.name}: expected {spec.size} problems, found {len(problems)} in {source_of(spec, folder)}"
        )
    if meta is not None:
        if len(meta) != len(problems):
            raise TaskDataError(
                f"task {spec.name}: {spec.meta_file} has {len(meta)} rows for {len(problems)} problems"
            )
        problems = [p.with_meta(m) for p, m in zip(problems, meta)]
    problems = [replace(p, scorer=spec.scorer) for p in problems]
    return problems[:limit] if limit is not None else problems


def _read_meta(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None  # metadata is optional
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k != "index"} for row in rows]


def _first(row: dict, names: tuple[str, ...], what: str, task: str, index: int):
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise TaskDataError(f"task {task}: hub row {index} has no {what} column (tried {', '.join(names)})")


def rows_to_problems(task: str, rows, source: HubSource) -> list[Problem]:
    """Map dataset rows (dicts) to problems; list answers (OlympiadBench) are joined with commas."""
    problems = []
    for index, row in enumerate(rows):
        answer = _first(row, source.answer, "answer", task, index)
        if isinstance(answer, list):
            answer = ",".join(str(a) for a in answer)
        pid = str(_first(row, source.id, "id", task, index)) if source.id else str(index)
        problems.append(
            Problem(task, pid, str(_first(row, source.problem, "problem", task, index)), str(answer))
        )
    return problems


def _from_hub(task: str, source: HubSource) -> list[Problem]:
    try:
        import datasets
    except ImportError:
        raise TaskDataError(
            f"task {task}: loading from the hub needs the 'datasets' package (pip install 'cortbench[hub]'), "
            f"or give local files with {LOCAL_FILES}"
        ) from None
    offline = datasets.config.HF_HUB_OFFLINE  # HF_HUB_OFFLINE or HF_DATASETS_OFFLINE: the cache only
    if not offline and (silent := _hub_silent()):
        raise TaskDataError(
            f"task {task}: the Hugging Face hub does not answer ({silent}); give local files with "
            f"{LOCAL_FILES}, or set HF_HUB_OFFLINE=1 to read the Hugging Face cache"
        )
    try:
        rows = datasets.load_dataset(source.dataset, source.config, split=source.split)
    except Exception as exc:  # noqa: BLE001 - offline, missing, renamed: all one clear line
        if offline:
            raise TaskDataError(
                f"task {task}: {source.dataset} is not in the Hugging Face cache, and HF_HUB_OFFLINE keeps "
                f"the hub from being asked; give local files with {LOCAL_FILES}"
            ) from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskDataError(
            f"task {task}: cannot load {source.dataset} from the Hugging Face hub ({first_line}); "
            f"for local files use {LOCAL_FILES}"
        ) from None
    return rows_to_problems(task, rows, source)


@functools.cache
def _hub_silent() -> str | None:
    """Why the hub's endpoint does not answer one request, or None when it answers at all. Asked once
    per process: huggingface_hub retries each of its requests, 30 to 90 s before it gives up offline."""
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except httpx.TransportError as exc:  # no DNS, refused, timed out
        return f"{constants.ENDPOINT}: {type(exc).__name__}"
    return None
