"""What every `cortbench` command shares: where it prints, and how it fails (one line, exit 1).

The commands of every part print through these (the tasks' commands live in the harness,
`task_commands.py`, so that `tasks` imports nothing downstream)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """ "1 run", "3 runs", "2 failed" (with `nouns` for irregular plurals)."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


def fail(message: str, code: int = 1) -> NoReturn:
    """A clear one-line error and a non-zero exit, never a traceback."""
    say_error(message)
    raise typer.Exit(code)


def say_error(message: str) -> None:
    """Print `message` as is (a message holds "[hf]" and the like, never markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
