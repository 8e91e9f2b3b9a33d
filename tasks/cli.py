"""`cortbench tasks`: the registered benchmarks, their sizes and protocol defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the tasks' commands to the `cortbench` app (entry point `cortbench.commands`)."""
    app.command("tasks")(list_tasks)


def list_tasks(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Local folder with the task files (default: $CORTBENCH_DATA_DIR, else the hub)."),
    ] = None,
    check: Annotated[bool, typer.Option(help="Load every task and check its rows.")] = False,
) -> None:
    """List the registered tasks and groups with their sizes and protocol defaults."""
    from rich.table import Table

    from cortbench.harness.console import console, fail

    from .loading import data_dir as resolve_dir
    from .loading import load_problems, source_of
    from .problems import TaskDataError
    from .registry import get_task, groups, task_names

    folder = resolve_dir(data_dir)
    table = Table(title="cortbench tasks")
    for column in ("task", "problems", "k", "temp", "top_p", "calls", "tokens", "answers"):
        table.add_column(column, justify="left" if column in ("task", "answers") else "right", no_wrap=True)
    table.add_column("source", overflow="fold")
    for name in task_names():
        spec = get_task(name)
        size = str(spec.size) if spec.size is not None else "?"
        if check:
            try:
                size = f"{len(load_problems(spec, folder))} ✓"
            except TaskDataError as exc:
                fail(str(exc))
        p = spec.protocol
        table.add_row(name, size, str(p.k), str(p.temperature), str(p.top_p), str(p.max_tool_calls),
                      str(p.max_tokens), spec.answer_type, source_of(spec, folder))  # fmt: skip
    console.print(table)
    for group in groups().values():
        console.print(f"group [bold]{group.name}[/]: {', '.join(group.tasks)} — {group.description}")
