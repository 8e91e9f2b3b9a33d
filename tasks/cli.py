"""`cortbench tasks`: the registered benchmarks, their sizes and protocol defaults."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the tasks' commands to the `cortbench` app (entry point `cortbench.commands`)."""
