"""`cortbench grade`, `cortbench score`, `cortbench analyze`: grading, metrics and code-behaviour
analyses from the command line."""

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
    app.command("analyze")(analyze_command)


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
    from .results_file import ResultsFileError
    from .scoring import score_run

    try:
        with Grader(workers=workers, timeout_s=timeout) as grader:
            for run in runs:
                results = score_run(run, grader, seed=seed)
                console.print(results_table(results, title=f"cortbench score {run}"))
                if results["grading_errors"]:
                    console.print(f"[yellow]{results['grading_errors']} samples could not be graded "
                                  "(counted wrong; see grading_error in grades.jsonl)[/]")  # fmt: skip
    except (RunStoreError, GradingError, ResultsFileError) as exc:
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


def analyze_command(
    run: Annotated[Path, typer.Argument(help="Run directory (runs/<name>).")],
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="HF tokenizer (name or path) for records without token counts; "
            "without it they are approximated as chars/4 and labelled so."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Modules shown in the library table.")] = 15,
) -> None:
    """Tokens by segment, code statistics and library adoption of a saved run: writes
    runs/<name>/analysis/*.parquet and the "analysis" key of results.json (docs/analyzers.md)."""
    from cortbench.harness.console import console, fail
    from cortbench.harness.store import SAMPLES, RunStoreError

    from .analyze import AnalysisError, analyze_run
    from .results_file import ResultsFileError

    if not (run / SAMPLES).is_file():
        fail(f"{run} is not a run directory (no {SAMPLES})")
    try:
        analysis = analyze_run(run, tokenizer)
    except (RunStoreError, AnalysisError, ResultsFileError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot analyse {run}: {exc.strerror or exc} ({exc.filename or run})")
    summary = analysis.summary
    if not summary["trajectories"]:
        console.print(f"{run} holds no trajectories yet")
    else:
        for table in analysis_tables(summary, top=top):
            console.print(table)
    console.print(f"tables: {analysis.directory}/{{trajectories,cells,imports}}.parquet; "
                  f"summary: {run / 'results.json'} (key \"analysis\")", highlight=False)  # fmt: skip


def analysis_tables(summary: dict, top: int = 15) -> list:
    """Rich tables of an analysis summary: code per task, error kinds, token split, libraries, cell
    purpose and behaviours."""
    from rich.table import Table

    tasks = summary["tasks"]
    names = list(tasks)
    scopes = [(n, tasks[n]) for n in names] + ([("all", summary["all"])] if len(names) > 1 else [])

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    def num(value, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    code = Table(title="code per task")
    for column in ("task", "trajectories", "usage %", "success %", "calls / resp.", "blocks / resp.",
                   "failed calls", "tool-limit hits", "unclosed at length", "unparseable cells"):  # fmt: skip
        code.add_column(column, justify="left" if column == "task" else "right")
    for name, s in scopes:
        c = s["code"]
        code.add_row(name, str(s["trajectories"]), pct(c["code_usage_rate"]), pct(c["code_success_rate"]),
                     num(c["calls_per_response"], 2), num(c["blocks_per_response"], 2), str(c["failed_calls"]),
                     str(c["tool_limit_hits"]), str(c["unclosed_at_length"]), str(s["unparseable_cells"]))  # fmt: skip

    errors = Table(title="error kinds (failed calls)")
    errors.add_column("kind")
    for name, _ in scopes:
        errors.add_column(name, justify="right")
    kinds = list(summary["all"]["code"]["error_kinds"])
    for kind in kinds:
        errors.add_row(kind, *(str(s["code"]["error_kinds"].get(kind, 0)) for _, s in scopes))
    if not kinds:
        errors.add_row("(none)", *("0" for _ in scopes))

    label = ", ".join(f"{k} ({v})" for k, v in summary["tokenizers"].items()) or "-"
    tokens = Table(title="tokens per trajectory (mean)", caption=f"tokenizer: {label}")
    tokens.add_column("task")
    for column in ("reasoning", "code", "output", "final answer", "hints", "generated", "response",
                   "generated %"):  # fmt: skip
        tokens.add_column(column, justify="right")
    for name, s in scopes:
        t = s["tokens"]
        tokens.add_row(name, *(num(t[p]) for p in ("reasoning", "code", "output", "final_answer", "hints",
                                                    "generated", "response")), pct(t["generated_share"]))  # fmt: skip

    libraries = Table(title=f"library adoption (top {top}; % of trajectories importing the module)")
    libraries.add_column("module")
    libraries.add_column("stdlib")
    for name, _ in scopes:
        libraries.add_column(f"{name} %", justify="right")
    libraries.add_column("executed %", justify="right")
    libraries.add_column("first cell (median)", justify="right")
    overall = summary["all"]["libraries"]
    for module, m in list(overall.items())[:top]:
        per_scope = [pct(s["libraries"][module]["adoption"]) if module in s["libraries"] else "0.0"
                     for _, s in scopes]  # fmt: skip
        libraries.add_row(module, "yes" if m["stdlib"] else "no", *per_scope, pct(m["executed_adoption"]),
                          num(m["median_first_cell"], 1))  # fmt: skip
    out = [code, errors, tokens, libraries]
    if "purpose" in summary:
        purpose = Table(title="purpose of executed cells (heuristic; docs/purpose.md)")
        for column in ("task", "cells", "calculation %", "verification %"):
            purpose.add_column(column, justify="left" if column == "task" else "right")
        for name, p in summary["purpose"].items():
            purpose.add_row(name, str(p["cells"]), pct(p["calculation"]), pct(p["verification"]))
        out.append(purpose)
    if "behaviours" in summary:
        behaviours = Table(title="inefficient behaviours (% of trajectories; tokens inside their spans)",
                           caption=f"tokenizer: {summary.get('behaviour_tokenizer')}")  # fmt: skip
        behaviours.add_column("task")
        for column in ("delayed computation %", "spans", "tokens", "result distrust %", "spans ", "tokens "):
            behaviours.add_column(column, justify="right")
        for name, b in summary["behaviours"].items():
            d, r = b["delayed_computation"], b["result_distrust"]
            behaviours.add_row(name, pct(d["rate"]), str(d["spans"]), num(d["span_tokens"]), pct(r["rate"]),
                               str(r["spans"]), num(r["span_tokens"]))  # fmt: skip
        out.append(behaviours)
    rdkit = summary.get("rdkit")
    if rdkit:
        chem = Table(title="RDKit adoption on chemistry problems (CoRT: 81.3%)")
        chem.add_column("task")
        chem.add_column("trajectories", justify="right")
        chem.add_column("rdkit %", justify="right")
        for task, r in rdkit["by_task"].items():
            chem.add_row(task, str(r["trajectories"]), pct(r["adoption"]))
        chem.add_row("all", str(rdkit["chemistry_trajectories"]), pct(rdkit["adoption"]))
        out.append(chem)
    return out
