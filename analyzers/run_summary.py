"""What `cortbench run` shows when it ends: the run graded (seconds) and avg@k per task with its
95% interval, as `cortbench score` computes it (and writes: grades.jsonl, results.json).

Plugged into the harness's `cortbench.run_summaries` entry points, so the harness never imports
the analyzers (data flows one way).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .grading import Grader
from .scoring import NothingToScore, score_run, shortfall


def summarize_run(run_dir: Path, console: Console) -> None:
    try:
        with Grader() as grader:
            results = score_run(run_dir, grader)
    except NothingToScore:
        console.print("no gold answers in these records: not scored", highlight=False)
        return
    table = Table(title=f"accuracy ({run_dir}; cortbench score for every metric)")
    for column in ("task", "k", "avg@k %", "95% CI", "samples"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, task in results["tasks"].items():
        low, high = task["avg@k"]["ci"]
        k = task["k"] if task.get("complete", True) else f"{task['k']} of {task.get('k_expected', task['k'])}"
        table.add_row(name, str(k), f"{100 * task['avg@k']['value']:.1f}", f"{100 * low:.1f}-{100 * high:.1f}",
                      f"{task['samples']:,}")  # fmt: skip
    for name, group in results["groups"].items():
        low, high = group["avg@k"]["ci"]
        table.add_row(
            f"{name} (mean)",
            "",
            f"{100 * group['avg@k']['value']:.1f}",
            f"{100 * low:.1f}-{100 * high:.1f}",
            "",
        )
    console.print(table)
    for name, task in results["tasks"].items():
        if missing := shortfall(task):
            console.print(f"{name} is unfinished: {missing} (continue with --resume)", highlight=False)
