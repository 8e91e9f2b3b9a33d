"""`cortbench grade`, `cortbench score`: grading and metrics from the command line."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the analyzers' commands to the `cortbench` app (entry point `cortbench.commands`)."""
