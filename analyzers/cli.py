"""`cortbench grade`, `cortbench score`: grading and metrics from the command line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

BATCH = 4096  # lines graded at once: keeps memory flat on big runs, the pool busy


def register(app: typer.Typer) -> None:
    """Add the analyzers' commands to the `cortbench` app (entry point `cortbench.commands`)."""
    app.command("grade")(grade_command)
    app.command("score")(score_command)


def grade_command(
    path: Annotated[
        str, typer.Argument(help="JSONL file with 'gold' and 'response' on each line; '-' or none: stdin.")
    ] = "-",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Grading processes (default: one per CPU).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per answer (protocol: 30).")] = 30.0,
) -> None:
    """Grade answers with math-verify as the CoRT protocol does: each line comes back, in order, with
    `correct`, `extracted` and `grading_error` (null unless grading timed out or failed) added."""
    from cortbench.harness.console import err_console, fail

    from .grading import Grader, GradingError

    name = "stdin" if path == "-" else path
    try:
        source: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    sink, temporary = sys.stdout.buffer, None
    if output is not None:  # written next to the target and renamed at the end: never half a file
        try:
            sink = temporary = tempfile.NamedTemporaryFile(
                dir=output.parent, prefix=f".{output.name}.", delete=False
            )
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
    counts = {"answers": 0, "correct": 0, "errors": 0}
    try:
        with source, Grader(workers=workers, timeout_s=timeout) as grader:
            batch: list[dict] = []
            for number, line in enumerate(source, 1):
                if line.strip():
                    batch.append(_row(line, number, name))
                if len(batch) == BATCH:
                    _grade_batch(grader, batch, sink, counts)
                    batch = []
            _grade_batch(grader, batch, sink, counts)
        if temporary is not None:
            temporary.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary.name, 0o666 & ~umask)  # as if opened plainly, not mkstemp's 0600
            os.replace(temporary.name, output)
            temporary = None
    except GradingError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    except BrokenPipeError:  # `cortbench grade ... | head`: the reader left, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    finally:
        if temporary is not None:
            temporary.close()
            os.unlink(temporary.name)
    err_console.print(
        f"graded {counts['answers']} answers: {counts['correct']} correct, {counts['errors']} grading errors"
    )


def _row(line: bytes, number: int, name: str) -> dict:
    from cortbench.harness.console import fail

    try:
        row = json.loads(line)
    except ValueError as exc:
        fail(f"{name}, line {number}: not JSON ({exc})")
    if (
        not isinstance(row, dict)
        or not isinstance(row.get("gold"), str)
        or not isinstance(row.get("response"), str)
    ):
        fail(f"{name}, line {number}: each line needs 'gold' and 'response' as strings")
    return row


def _grade_batch(grader, rows: list[dict], sink: BinaryIO, counts: dict) -> None:
    grades = grader.grade_many((row["gold"], row["response"]) for row in rows)
    for row, grade in zip(rows, grades):
        row.update(correct=grade.correct, extracted=grade.extracted, grading_error=grade.grading_error)
        sink.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        counts["answers"] += 1
        counts["correct"] += grade.correct
        counts["errors"] += grade.grading_error is not None
    sink.flush()


def score_command(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories (runs/<name>), each scored on its own.")
    ],
    workers: Annotated[int | None, typer.Option(help="Grading processes (default: one per CPU).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per answer (protocol: 30).")] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap over problems.")] = 0,
) -> None:
    """Regrade saved runs and recompute their metrics (nothing is regenerated): writes
    runs/<name>/grades.jsonl and results.json (docs/results.md) and prints the paper's columns."""
    from cortbench.harness.console import console, fail
    from cortbench.harness.store import RunStoreError

    from .grading import Grader, GradingError
    from .scoring import score_run

    try:
        with Grader(workers=workers, timeout_s=timeout) as grader:
            for run in runs:
                results = score_run(run, grader, seed=seed)
                console.print(results_table(results, title=f"cortbench score {run}"))
                if results["grading_errors"]:
                    console.print(f"[yellow]{results['grading_errors']} samples could not be graded "
                                  "(counted wrong; see grading_error in grades.jsonl)[/]")  # fmt: skip
    except (RunStoreError, GradingError) as exc:
        fail(str(exc))


def results_table(results: dict, title: str):
    """The paper's columns (AIME24 ... Olympiad, Avg) as rows of metrics, with 95% intervals."""
    from rich.table import Table

    from cortbench.tasks.problems import TaskDataError
    from cortbench.tasks.registry import get_task

    def title_of(name: str) -> str:
        try:
            return get_task(name).title
        except TaskDataError:
            return name

    def pct(e: dict | None) -> str:
        if not e:
            return "-"
        low, high = e["ci"]
        return f"{100 * e['value']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    def number(value, digits: int = 0, scale: float = 1.0) -> str:
        return "-" if value is None else f"{scale * value:,.{digits}f}"

    tasks = results["tasks"]
    group = next(iter(results["groups"].values()), None)
    names = [*(group["tasks"] if group else []), *(t for t in tasks if not group or t not in group["tasks"])]
    table = Table(title=title)
    table.add_column("metric")
    for name in names:
        table.add_column(f"{title_of(name)}\n(k={tasks[name]['k']})", justify="right")
    if group:
        table.add_column("Avg", justify="right")
    rows = {
        "avg@k (pass@1) %": lambda t: pct(t["avg@k"]),
        "pass@k %": lambda t: pct(t["pass@k"][str(t["k"])]),
        "maj@k %": lambda t: pct(t["maj@k"][str(t["k"])]),
        "tokens (all)": lambda t: number(t["tokens"]["all"]),
        "tokens (correct)": lambda t: number(t["tokens"]["correct"]),
        "tokens (incorrect)": lambda t: number(t["tokens"]["incorrect"]),
        "tool calls / sample": lambda t: number(t["code"]["tool_calls_per_sample"], 2),
        "code success %": lambda t: number(t["code"]["code_success_rate"], 1, 100),
        "problems / samples": lambda t: f"{t['problems']} / {t['samples']}",
        "grading errors": lambda t: str(t["grading_errors"]),
    }
    for label, cell in rows.items():
        extra = [pct(group["avg@k"])] if group and label.startswith("avg@k") else [""] if group else []
        table.add_row(label, *(cell(tasks[n]) for n in names), *extra)
    return table
