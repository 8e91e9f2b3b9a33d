"""One run folder as the leaderboard sees it: its records, its scores and its analysis.

The leaderboard only reads what `cortbench run`, `score` and `analyze` wrote. A run that was never
scored or analysed (or whose results.json no longer matches its samples.jsonl) is scored and
analysed here, in memory, through `cortbench.analyzers`; nothing is written back to the run, and
the run's `notes` say what was computed so that the page can show it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ..analyzers.analyze import ANALYSIS_DIR, AnalysisError, analyze_run
from ..analyzers.grading import Grader, GradingError
from ..analyzers.results_file import GRADES, ResultsFileError, read_results
from ..analyzers.scoring import GradesFileError, grade_records, read_grades, summarize
from ..harness.records import TrajectoryRecord
from ..harness.store import SAMPLES, RunStoreError, read_run

Key = tuple[str, str, int]  # (task, problem_id, sample_idx)

# The parquet columns the pages use; the others stay on disk.
TRAJECTORY_COLUMNS = ("task", "problem_id", "sample_idx", "behaviour_spans")
CELL_COLUMNS = ("task", "problem_id", "sample_idx", "cell_index", "purpose", "purpose_evidence")


class LeaderboardError(RuntimeError):
    """A run folder cannot be read (not a run, unreadable or malformed files)."""


@dataclass
class Run:
    """Everything the pages of one run need."""

    path: Path
    name: str
    config: dict[str, Any]
    records: list[TrajectoryRecord]
    results: dict[str, Any]  # results.json's scores (tasks, groups, ...) and "analysis"
    grades: dict[Key, dict[str, Any]]  # grades.jsonl rows by sample
    behaviour_spans: dict[Key, list[dict[str, Any]]] = field(default_factory=dict)
    purposes: dict[Key, dict[int, dict[str, Any]]] = field(default_factory=dict)  # labels by cell_index
    notes: list[str] = field(default_factory=list)  # what was missing and computed here

    @property
    def analysis(self) -> dict[str, Any]:
        return self.results.get("analysis") or {}


GraderFactory = Callable[[], Grader]


def load_run(path: Path, grader: GraderFactory) -> Run:
    """Read a run folder; score and analyse it in memory where its saved files are missing or stale.

    `grader` is called only when grading is needed (starting math-verify workers costs seconds)."""
    if not path.is_dir() or not (path / SAMPLES).is_file():
        raise LeaderboardError(f"{path} is not a run folder (no {SAMPLES}): give runs/<name> folders")
    try:
        config, records = read_run(path)
    except RunStoreError as exc:
        raise LeaderboardError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LeaderboardError(f"cannot read {path / SAMPLES}: {_reason(exc)}") from None
    if not records:
        raise LeaderboardError(f"{path / SAMPLES} holds no records yet")
    run = Run(path, path.resolve().name, config, records, _read_results(path), {})

    grades = _read_grades(path, len(records))
    if not run.results.get("tasks") or grades is None or run.results.get("samples") != len(records):
        why = (
            "never scored" if not run.results.get("tasks") else "its saved scores do not match samples.jsonl"
        )
        run.notes.append(f"{why}: scored here in memory (`cortbench score {path}` saves the scores)")
        try:
            fresh = grade_records(records, grader())
        except GradingError as exc:
            raise LeaderboardError(f"cannot grade {path}: {exc}") from None
        grades = {(g.task, g.problem_id, g.sample_idx): asdict(g) for g in fresh}
        analysis = run.results.get("analysis")
        run.results = summarize(fresh, config)
        if analysis:
            run.results["analysis"] = analysis
    run.grades = grades

    if run.analysis.get("trajectories") != len(records) or not (path / ANALYSIS_DIR).is_dir():
        why = "never analysed" if not run.analysis else "its saved analysis does not match samples.jsonl"
        run.notes.append(f"{why}: analysed here in memory (`cortbench analyze {path}` saves it)")
        try:
            fresh_analysis = analyze_run(path, write=False)
        except (AnalysisError, RunStoreError, OSError) as exc:
            raise LeaderboardError(f"cannot analyse {path}: {exc}") from None
        run.results["analysis"] = fresh_analysis.summary
        trajectories, cells = fresh_analysis.trajectories, fresh_analysis.cells
    else:
        trajectories = _read_table(path / ANALYSIS_DIR / "trajectories.parquet", TRAJECTORY_COLUMNS)
        cells = _read_table(path / ANALYSIS_DIR / "cells.parquet", CELL_COLUMNS)
    run.behaviour_spans = _spans(trajectories)
    run.purposes = _purposes(cells)
    return run


def _read_results(path: Path) -> dict[str, Any]:
    try:
        return read_results(path)
    except ResultsFileError as exc:
        raise LeaderboardError(str(exc)) from None


def _read_grades(path: Path, expected: int) -> dict[Key, dict[str, Any]] | None:
    """grades.jsonl by sample; None when it is absent or does not cover the records."""
    if not (path / GRADES).is_file():
        return None
    try:
        grades = {(g.task, g.problem_id, g.sample_idx): asdict(g) for g in read_grades(path)}
    except GradesFileError as exc:
        raise LeaderboardError(str(exc)) from None
    return grades if len(grades) == expected else None


def _read_table(file: Path, wanted: tuple[str, ...]) -> pd.DataFrame:
    try:
        present = set(pq.read_schema(file).names)
        return pd.read_parquet(file, columns=[c for c in wanted if c in present])
    except FileNotFoundError:
        return pd.DataFrame()
    except (OSError, ValueError) as exc:
        raise LeaderboardError(f"cannot read {file}: {_reason(exc)}") from None


def _spans(trajectories: pd.DataFrame) -> dict[Key, list[dict[str, Any]]]:
    if "behaviour_spans" not in trajectories:
        return {}
    out = {}
    for task, pid, idx, spans in trajectories[list(TRAJECTORY_COLUMNS)].itertuples(index=False, name=None):
        if spans is not None and len(spans):
            out[(task, pid, int(idx))] = [dict(s) for s in spans]
    return out


def _purposes(cells: pd.DataFrame) -> dict[Key, dict[int, dict[str, Any]]]:
    if "purpose" not in cells:
        return {}
    labelled = cells.dropna(subset=["purpose"])
    evidence = labelled["purpose_evidence"] if "purpose_evidence" in labelled else [None] * len(labelled)
    out: dict[Key, dict[int, dict[str, Any]]] = defaultdict(dict)
    for task, pid, idx, cell, purpose, ev in zip(
        labelled["task"], labelled["problem_id"], labelled["sample_idx"], labelled["cell_index"],
        labelled["purpose"], evidence,
    ):  # fmt: skip
        out[(task, pid, int(idx))][int(cell)] = {"purpose": purpose, "evidence": ev}
    return dict(out)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)
