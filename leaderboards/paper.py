"""The paper's published Table 1 (data/paper_results.yaml): the "reported" rows of the leaderboard."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

PAPER_FILE = "paper_results.yaml"


@dataclass(frozen=True)
class PaperRow:
    """One published model: avg@k in percent per task, and the paper's own average."""

    model: str
    size: str
    tool: bool
    scores: dict[str, float]  # task name -> percent
    avg: float


@dataclass(frozen=True)
class PaperTable:
    title: str
    url: str
    metric: str
    rows: tuple[PaperRow, ...]


@cache
def paper_table() -> PaperTable:
    """The published rows, read once from the package data."""
    data: Any = yaml.safe_load(files(__package__).joinpath("data", PAPER_FILE).read_text(encoding="utf-8"))
    columns = data["columns"]
    rows = tuple(
        PaperRow(r["model"], str(r["size"]), bool(r["tool"]), dict(zip(columns, r["scores"])), r["avg"])
        for r in data["rows"]
    )
    source = data["source"]
    return PaperTable(source["title"], source["url"], source["metric"], rows)
