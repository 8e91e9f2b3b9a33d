"""`cortbench grade`, `cortbench score`, `cortbench analyze`: grading, metrics and code-behaviour
analyses from the command line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, BinaryIO

import typer


class MajEmpty(StrEnum):
    """ScoringOptions.maj_empty, as the command line spells it."""

    abstain = "abstain"
    own_group = "own-group"


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
        if temporary is not None and output is not None:  # (the one comes with the other)
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
    require_box: Annotated[
        bool, typer.Option(help="A response without \\boxed{} is wrong (default: math-verify's fallback).")
    ] = False,
    maj_empty: Annotated[
        MajEmpty,
        typer.Option(help="In maj@k, samples without an answer abstain, or each is its own group (CoRT)."),
    ] = MajEmpty.abstain,
) -> None:
    """Regrade saved runs and recompute their metrics (nothing is regenerated): writes
    runs/<name>/grades.jsonl and results.json (docs/results.md) and prints the paper's columns."""
    from cortbench.harness.console import console, fail, plural
    from cortbench.harness.store import RunStoreError

    from .grading import Grader, GradingError
    from .results_file import ResultsFileError
    from .scoring import NothingToScore, ScoringOptions, score_run

    try:
        with Grader(workers=workers, timeout_s=timeout) as grader:
            for run in runs:
                options = ScoringOptions(require_box=require_box, maj_empty=maj_empty.value)
                results = score_run(run, grader, seed=seed, options=options)
                console.print(results_table(results, title=f"cortbench score {run}"))
                for note in unfinished(results):
                    console.print(f"[yellow]{note}[/]", highlight=False)
                if results.get("samples_without_gold"):
                    console.print(f"[yellow]{plural(results['samples_without_gold'], 'record')} of "
                                  f"{results['samples']:,} have no gold answer: not scored[/]", highlight=False)  # fmt: skip
                if results["grading_errors"]:
                    console.print(f"[yellow]{plural(results['grading_errors'], 'sample')} could not be graded "
                                  "(counted wrong; see grading_error in grades.jsonl)[/]", highlight=False)  # fmt: skip
    except (RunStoreError, GradingError, ResultsFileError, NothingToScore) as exc:
        fail(str(exc))


def results_table(results: dict, title: str):
    """The paper's columns (AIME24 ... Olympiad, Avg) as rows of metrics, with 95% intervals; a task
    short of its samples shows "k=1 of 16". Labels are short enough for 80 columns."""
    from rich.table import Table

    def pct(e: dict | None) -> str:
        if not e:
            return "-"
        low, high = e["ci"]
        return f"{100 * e['value']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    def number(value, digits: int = 0, scale: float = 1.0) -> str:
        return "-" if value is None else f"{scale * value:,.{digits}f}"

    def k_of(t: dict) -> str:
        expected = t.get("k_expected", t["k"])
        return f"k={t['k']}" if t["k"] >= expected else f"k={t['k']} of {expected}"

    tasks = results["tasks"]
    group = next(iter(results["groups"].values()), None)
    names = [*(group["tasks"] if group else []), *(t for t in tasks if not group or t not in group["tasks"])]
    table = Table(title=title)
    table.add_column("metric")
    for name in names:
        table.add_column(f"{_title_of(name)}\n({k_of(tasks[name])})", justify="right")
    if group:
        table.add_column("Avg", justify="right")
    rows = {
        "avg@k (pass@1) %": lambda t: pct(t["avg@k"]),
        "pass@k %": lambda t: pct(t["pass@k"][str(t["k"])]),
        "maj@k %": lambda t: pct(t["maj@k"][str(t["k"])]),
        "tokens: all": lambda t: number(t["tokens"]["all"]),
        "tokens: correct": lambda t: number(t["tokens"]["correct"]),
        "tokens: wrong": lambda t: number(t["tokens"]["incorrect"]),
        "tool calls / sample": lambda t: number(t["code"]["tool_calls_per_sample"], 2),
        "code success %": lambda t: number(t["code"]["code_success_rate"], 1, 100),
        "problems / samples": lambda t: f"{t['problems']} / {t['samples']}",
        "grading errors": lambda t: str(t["grading_errors"]),
    }
    for label, cell in rows.items():
        extra = [pct(group["avg@k"])] if group and label.startswith("avg@k") else [""] if group else []
        table.add_row(label, *(cell(tasks[n]) for n in names), *extra)
    return table


def _title_of(name: str) -> str:
    from cortbench.tasks.problems import TaskDataError
    from cortbench.tasks.registry import get_task

    try:
        return get_task(name).title
    except TaskDataError:
        return name


def unfinished(results: dict) -> list[str]:
    """One line per task short of what run.json asked for, and how to finish the run."""
    from .scoring import shortfall

    tasks = results["tasks"]
    lines = [f"{_title_of(n)} is incomplete: {shortfall(t)}" for n, t in tasks.items() if shortfall(t)]
    if results.get("tasks_missing"):
        lines.append("no samples yet: " + ", ".join(_title_of(n) for n in results["tasks_missing"]))
    if lines and results["config"].get("samples"):
        lines.append("the same `cortbench run` with --resume samples the rest")
    return lines


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
    judge: Annotated[
        str | None,
        typer.Option(
            help="Label each cell's purpose with this judge instead of the heuristic: llm (an LLM behind "
            "any backend, the paper's method; docs/purpose.md) or a plug-in's."
        ),
    ] = None,
    judge_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--judge-arg",
            help="KEY=VALUE passed to the judge, repeatable (llm: base_url=http://host:8000/v1, model=NAME, "
            "tokenizer=HF_ID, cache_path=FILE, concurrency=8, prefill=true, backend=openai, ...).",
        ),
    ] = None,
) -> None:
    """Tokens by segment, code statistics and library adoption of a saved run: writes
    runs/<name>/analysis/*.parquet and the "analysis" key of results.json (docs/analyzers.md)."""
    from cortbench.harness.console import console, fail
    from cortbench.harness.registry import OptionError, parse_options
    from cortbench.harness.store import SAMPLES, RunStoreError

    from .analyze import AnalysisError, analyze_run
    from .results_file import ResultsFileError

    if not (run / SAMPLES).is_file():
        fail(f"{run} is not a run directory (no {SAMPLES})")
    cell_judge = None
    if judge is not None or judge_arg:
        from .judge import JudgeError, get_judge

        try:
            cell_judge = get_judge(judge or "llm", **parse_options(judge_arg, "--judge-arg"))
        except (JudgeError, OptionError) as exc:
            fail(str(exc))
    try:
        analysis = analyze_run(run, tokenizer, judge=cell_judge)
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
    if "judge" in summary:
        console.print(
            f"judge {summary['judge']['model']}: {summary['judge']['summary']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"tables: {analysis.directory}/{{trajectories,cells,imports}}.parquet; "
                  f"summary: {run / 'results.json'} (key \"analysis\")", highlight=False)  # fmt: skip


def analysis_tables(summary: dict, top: int = 15) -> list:
    """Rich tables of an analysis summary: code per task, its failures, error kinds, token split,
    libraries, cell purpose and behaviours. Each fits in 80 columns: tables have at most six
    columns, and what varies per task in a table keyed by something else goes in a "by task" cell
    (one task a line) rather than a column per task."""
    from rich.table import Table

    tasks = summary["tasks"]
    names = list(tasks)
    several = len(names) > 1
    scopes = [(n, tasks[n]) for n in names] + ([("all", summary["all"])] if several else [])

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    def num(value, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    def table(title: str, first: str, *columns: str, caption: str | None = None) -> Table:
        out = Table(title=title, caption=caption)
        out.add_column(first, overflow="fold")  # a long task or module name folds, never "…"
        for column in columns:  # one task a line in "by task", never split
            out.add_column(column, justify="left" if column in ("by task", "stdlib") else "right",
                           no_wrap=column == "by task")  # fmt: skip
        return out

    code = table("code per task", "task", "trajectories", "usage %", "success %", "calls /\nresponse",
                 "blocks /\nresponse")  # fmt: skip
    failures = table("failed and unfinished code per task", "task", "failed\ncalls", "tool-limit\nhits",
                     "unclosed\nat length", "unparseable\ncells")  # fmt: skip
    for name, s in scopes:
        c = s["code"]
        code.add_row(name, str(s["trajectories"]), pct(c["code_usage_rate"]), pct(c["code_success_rate"]),
                     num(c["calls_per_response"], 2), num(c["blocks_per_response"], 2))  # fmt: skip
        failures.add_row(name, str(c["failed_calls"]), str(c["tool_limit_hits"]), str(c["unclosed_at_length"]),
                         str(s["unparseable_cells"]))  # fmt: skip

    errors = table("error kinds (failed calls)", "kind", "failed calls", *(["by task"] if several else []))
    kinds = summary["all"]["code"]["error_kinds"]
    for kind, count in kinds.items():
        by_task = "\n".join(f"{n} {s['code']['error_kinds'][kind]}" for n, s in scopes[:-1]
                            if s["code"]["error_kinds"].get(kind))  # fmt: skip
        errors.add_row(kind, str(count), *([by_task] if several else []))
    if not kinds:
        errors.add_row("(none)", "0", *([""] if several else []))

    label = ", ".join(f"{k} ({v})" for k, v in summary["tokenizers"].items()) or "-"
    segments = table("tokens per trajectory by segment (mean)", "task", "reasoning", "code", "output",
                     "final answer", "hints")  # fmt: skip
    totals = table("tokens per trajectory (mean)", "task", "response", "generated", "generated %",
                   caption=f"tokenizer: {label}")  # fmt: skip
    for name, s in scopes:
        t = s["tokens"]
        segments.add_row(name, *(num(t[p]) for p in ("reasoning", "code", "output", "final_answer", "hints")))
        totals.add_row(name, num(t["response"]), num(t["generated"]), pct(t["generated_share"]))

    libraries = table(f"library adoption (top {top}; % of trajectories importing the module)", "module",
                      "stdlib", "imported\n%", "executed\n%", "first cell\n(median)",
                      *(["by task"] if several else []))  # fmt: skip
    for module, m in list(summary["all"]["libraries"].items())[:top]:
        by_task = "\n".join(f"{n} {pct(s['libraries'][module]['adoption'])}" for n, s in scopes[:-1]
                            if module in s["libraries"])  # fmt: skip
        libraries.add_row(module, "yes" if m["stdlib"] else "no", pct(m["adoption"]), pct(m["executed_adoption"]),
                          num(m["median_first_cell"], 1), *([by_task] if several else []))  # fmt: skip
    out = [code, failures, errors, segments, totals, libraries]
    if "purpose" in summary:
        by = f"judge {summary['judge']['model']}" if "judge" in summary else "heuristic"
        purpose = table(f"purpose of executed cells ({by}; docs/purpose.md)", "task", "cells",
                        "calculation %", "verification %")  # fmt: skip
        for name, p in summary["purpose"].items():
            purpose.add_row(name, str(p["cells"]), pct(p["calculation"]), pct(p["verification"]))
        out.append(purpose)
    if "behaviours" in summary:
        behaviours = table("inefficient behaviours (tokens: inside their spans)", "task", "behaviour",
                           "% of\ntrajectories", "spans", "tokens",
                           caption=f"tokenizer: {summary.get('behaviour_tokenizer')}")  # fmt: skip
        behaviours.columns[1].justify = "left"
        for name, b in summary["behaviours"].items():
            for i, (kind, key) in enumerate((("delayed computation", "delayed_computation"),
                                             ("result distrust", "result_distrust"))):  # fmt: skip
                d = b[key]
                behaviours.add_row(name if i == 0 else "", kind, pct(d["rate"]), str(d["spans"]),
                                   num(d["span_tokens"]), end_section=i == 1)  # fmt: skip
        out.append(behaviours)
    rdkit = summary.get("rdkit")
    if rdkit:
        chem = table("RDKit adoption on chemistry problems (CoRT: 81.3%)", "task", "trajectories", "rdkit %")
        for task, r in rdkit["by_task"].items():
            chem.add_row(task, str(r["trajectories"]), pct(r["adoption"]))
        chem.add_row("all", str(rdkit["chemistry_trajectories"]), pct(rdkit["adoption"]))
        out.append(chem)
    return out
