"""`cortbench tasks`: the registered benchmarks, their sizes and protocol defaults; `cortbench
chem-generate`: (re)build the chemistry set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the tasks' commands to the `cortbench` app (entry point `cortbench.commands`)."""
    app.command("tasks")(list_tasks)
    app.command("chem-generate")(generate_chem)


def list_tasks(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Local folder with the task files (default: $CORTBENCH_DATA_DIR, else the hub)."),
    ] = None,
    check: Annotated[bool, typer.Option(help="Load every task and check its rows.")] = False,
) -> None:
    """List the registered tasks and groups with their sizes and protocol defaults."""
    from rich.table import Table

    from ..tasks.loading import data_dir as resolve_dir
    from ..tasks.loading import load_problems, source_of
    from ..tasks.problems import TaskDataError
    from ..tasks.registry import get_task, groups, task_names
    from .console import console, fail

    folder = resolve_dir(data_dir)
    table = Table(title="cortbench tasks")
    for column in ("task", "problems", "k", "temp", "top_p", "calls", "tokens", "answers"):
        table.add_column(column, justify="left" if column in ("task", "answers") else "right", no_wrap=True)
    # Sources (paths, hub names) are long: listed under the table, so that it keeps one line a task at
    # 80 columns, each whole on its own line (a folded path cannot be copied; an installed package's
    # path alone can pass 80 columns).
    sources = []
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
                      str(p.max_tokens), spec.answer_type)  # fmt: skip
        sources.append((name, source_of(spec, folder)))
    console.print(table)
    console.print("sources:")
    width = max(len(name) for name, _ in sources)
    for name, source in sources:
        console.print(f"{name:<{width}}  {source}", markup=False, highlight=False, soft_wrap=True)
    for group in groups().values():
        console.print(f"group [bold]{group.name}[/]: {', '.join(group.tasks)} — {group.description}")


def generate_chem(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the jsonl (default: the file cortbench ships)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the set's own).")] = None,
    check: Annotated[
        bool, typer.Option(help="Write nothing: regenerate and compare with the file, byte for byte.")
    ] = False,
) -> None:
    """Generate the chemistry set (cort_chem) with RDKit, deterministically (needs RDKit)."""
    from rich.markup import escape

    from ..tasks import cort_chem
    from .console import console, fail

    path = out or cort_chem.DATA_FILE
    try:
        if check:
            status, ids = cort_chem.compare(path, cort_chem.CHEM_SEED if seed is None else seed)
        else:
            rows = cort_chem.generate(cort_chem.CHEM_SEED if seed is None else seed)
    except (RuntimeError, ValueError) as exc:
        fail(escape(str(exc)))  # the message names cortbench[chem], not rich markup
    except OSError as exc:
        fail(escape(f"cannot read {path}: {exc.strerror}"))
    if check:
        import rdkit

        if status == "different":
            shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
            message = f"{path}: {len(ids)} rows differ from the set generated with RDKit {rdkit.__version__}"
            fail(escape(f"{message}: {shown}"))
        note = "" if status == "identical" else " apart from the RDKit version each row records"
        console.print(escape(f"{path}: identical to the set generated with RDKit {rdkit.__version__}{note}"))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cort_chem.dumps(rows), encoding="utf-8")
    console.print(escape(f"wrote {len(rows)} problems to {path}"))
