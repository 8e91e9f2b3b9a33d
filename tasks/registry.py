"""The task registry: built-in benchmarks, groups, and tasks users add.

Users add a task in three ways:
- a jsonl file of `problem` / `gt_answer` rows, named directly: `--tasks path/to/set.jsonl`;
- a YAML definition (docs/tasks.md), named directly (`--tasks my_task.yaml`) or put in a folder
  listed in $CORTBENCH_TASKS_PATH, where it is registered under its `name`;
- Python: `register_task(TaskSpec(...))`, in a package that declares the module (or the spec:
  `mytask = "mypkg.tasks:SPEC"`) in the `cortbench.tasks` entry-point group so that it loads with
  cortbench (docs/extending.md). Groups register with `register_group` the same way.

Tasks and groups are two registries of the one mechanism (`cortbench.tasks.plugins`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .plugins import Registry
from .problems import TaskDataError
from .spec import HubSource, Protocol, TaskGroup, TaskSpec


class UnknownTaskError(TaskDataError):
    """A task name that is neither registered nor a file."""


def _load_builtins() -> None:
    from . import cort_math  # noqa: F401 - registers the paper's tasks
    from .cort_chem import SPEC as _chem  # noqa: F401 - registers the chemistry set (its data ships with cortbench)

    for folder in filter(None, os.environ.get("CORTBENCH_TASKS_PATH", "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.y*ml")):
            register_task(task_from_yaml(path))


def _load_tasks() -> None:
    TASKS.names()  # the tasks' modules (built in, and plug-ins') register the groups


TASKS: Registry[TaskSpec] = Registry("task", UnknownTaskError, _load_builtins)  # cortbench.tasks
GROUPS: Registry[TaskGroup] = Registry("task group", UnknownTaskError, _load_tasks)  # cortbench.task_groups


def register_task(spec: TaskSpec) -> TaskSpec:
    TASKS.register(spec.name)(lambda: spec)
    return spec


def register_group(group: TaskGroup) -> TaskGroup:
    GROUPS.register(group.name)(lambda: group)
    return group


def task_names() -> list[str]:
    return TASKS.names()


def groups() -> dict[str, TaskGroup]:
    return {name: GROUPS.create(name) for name in GROUPS.names() if GROUPS.has(name)}


def get_task(name: str) -> TaskSpec:
    if TASKS.has(name):
        return TASKS.create(name)
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return task_from_yaml(path)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise UnknownTaskError(f"task file {name} does not exist")
        return TaskSpec(path.stem.removeprefix("test_"), f"problems from {path}", file=str(path.resolve()))
    known = [*GROUPS.names(), *TASKS.names()]
    raise UnknownTaskError(TASKS.missing(name, known, "(or a .jsonl / .yaml file)"))


def resolve_tasks(names: str | list[str]) -> list[TaskSpec]:
    """Task specs for comma-separated names, groups expanded, each task once, in order."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise UnknownTaskError("no task given")
    specs: dict[str, TaskSpec] = {}
    for name in names:
        for member in GROUPS.create(name).tasks if GROUPS.has(name) else (name,):
            spec = get_task(member)
            specs.setdefault(spec.name, spec)
    return list(specs.values())


_YAML_KEYS = {
    "name",
    "description",
    "file",
    "hub",
    "size",
    "answer_type",
    "scorer",
    "instruction",
    "protocol",
}


def task_from_yaml(path: str | Path) -> TaskSpec:
    """A task from a small YAML file (docs/tasks.md); `file` is relative to the YAML's folder."""
    path = Path(path)
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskDataError(f"cannot read task definition {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise TaskDataError(f"{path}: a task definition is a mapping with at least a 'name'")
    if unknown := set(data) - _YAML_KEYS:
        raise TaskDataError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_YAML_KEYS)}")
    if ("file" in data) == ("hub" in data):
        raise TaskDataError(f"{path}: give exactly one of 'file' (a jsonl) or 'hub' (a dataset)")
    try:
        hub = None
        if "hub" in data:
            hub_data = dict(data["hub"])
            for key in ("problem", "answer", "id"):
                if isinstance(hub_data.get(key), str):
                    hub_data[key] = (hub_data[key],)
                elif key in hub_data:
                    hub_data[key] = tuple(hub_data[key])
            hub = HubSource(**hub_data)
        file = str((path.parent / data["file"]).resolve()) if "file" in data else None
        extra = {k: data[k] for k in ("size", "answer_type", "scorer", "instruction") if k in data}
        return TaskSpec(
            data["name"],
            data.get("description", f"defined in {path}"),
            file=file,
            hub=hub,
            protocol=Protocol(**data.get("protocol", {})),
            **extra,
        )
    except TypeError as exc:
        raise TaskDataError(f"{path}: {exc}") from None
