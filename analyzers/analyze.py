"""Analyse a saved run: tokens by segment, code statistics and library adoption, as tables.

`analyze_run` reads runs/<name>/samples.jsonl (nothing is regenerated) and writes three parquet
tables under runs/<name>/analysis/, one row per trajectory, per code cell and per (trajectory,
module), plus a summary under the key "analysis" of runs/<name>/results.json (the other keys,
written by `cortbench score`, are kept). See docs/analyzers.md.

Extension point: further analyses add columns without touching this module. A *cell labeler*
(`CellLabeler`) returns, for one record, one dict per cell it labels, holding `cell_index` (an
executed cell's position in `tool_calls`; see `code.cells_of`) and its columns (e.g. `purpose`, `purpose_evidence`); a *trajectory
labeler* (`TrajectoryLabeler`) returns one dict of columns for the record (e.g. behaviour spans as
a list of dicts). Both are joined on (task, problem_id, sample_idx[, cell_index]). Labels computed
elsewhere in one batch (an LLM judge) join the same way with `join_labels`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing as mp
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..harness.records import TrajectoryRecord
from ..harness.store import read_run
from .behaviours import KINDS, label_behaviours
from .code import cells_of, code_stats, summarize_code
from .heuristics import label_record
from .libraries import CHEMISTRY_MODULE, imports_in, module_rows
from .purpose import CellPurpose, label_cells, purpose_rows
from .results_file import GRADES, replace_atomically, update_results
from .scorers import is_chemistry
from .tokens import Counter as TokenCounter
from .tokens import hf_counter, locate_segments, record_tokenizer, token_split

if TYPE_CHECKING:
    from .judge import CellJudge

SCHEMA_VERSION = 1
ANALYSIS_DIR = "analysis"
TRAJECTORY_KEY = ("task", "problem_id", "sample_idx")
CELL_KEY = (*TRAJECTORY_KEY, "cell_index")
TOKEN_PARTS = ("reasoning", "code", "output", "final_answer", "hints", "generated", "response")

CellLabeler = Callable[[TrajectoryRecord], list[dict[str, Any]]]  # one dict per cell: cell_index + columns
TrajectoryLabeler = Callable[[TrajectoryRecord], dict[str, Any]]  # columns for the trajectory's row


class AnalysisError(RuntimeError):
    """The run cannot be analysed as asked (bad tokenizer, unreadable results.json, bad labels)."""


@dataclass
class Analysis:
    """The tables of one run and their summary (the "analysis" key of results.json)."""

    trajectories: pd.DataFrame
    cells: pd.DataFrame
    imports: pd.DataFrame
    summary: dict[str, Any]
    directory: Path | None  # where the parquet files are, None when not written


def analyze_run(
    run_dir: str | Path,
    tokenizer: str | None = None,
    *,
    cell_labelers: Sequence[CellLabeler] | None = None,
    trajectory_labelers: Sequence[TrajectoryLabeler] | None = None,
    write: bool = True,
    judge: CellJudge | None = None,
) -> Analysis:
    """Analyse a saved run. `tokenizer` (a Hugging Face name or path) counts the records that carry
    no segment counts; without it those are approximated and labelled `approx:chars/4`.

    By default each executed cell gets the heuristic purpose label (purpose.label_cells) and each
    trajectory its behaviour spans (behaviours.label_behaviours); pass other labelers (or `()`) to
    change that. A `judge` (judge.CellJudge, e.g. `get_judge("llm", ...)`) labels every cell first,
    in one batch, and is closed after: its labels are the `purpose` columns (beside other
    `cell_labelers` given, as `judge_purpose`), and its report is the summary's "judge"."""
    run_dir = Path(run_dir)
    config, records = read_run(run_dir)
    counter: TokenCounter | None = None
    if tokenizer is not None:
        try:
            counter = hf_counter(tokenizer)
        except ValueError as exc:
            raise AnalysisError(str(exc)) from None
    judge_report = None
    if judge is not None:
        prefix = "purpose" if cell_labelers is None else "judge_purpose"
        cell_labelers = (*(cell_labelers or ()), _judge_labels(judge, records, prefix))
        judge_report = {"model": judge.model_name, **judge.report()}
    record_label = record_tokenizer(config)
    count = (lambda text: counter([text])[0]) if counter is not None else None
    joint = None  # one function giving every labeler's output for a record, when the defaults are used
    if cell_labelers is None and trajectory_labelers is None:  # both heuristics share their reading
        joint = partial(label_record, count_tokens=count, tokenizer=f"hf:{tokenizer}")
    if cell_labelers is None:
        cell_labelers = (label_cells,)
    if trajectory_labelers is None:
        trajectory_labelers = (partial(label_behaviours, count_tokens=count, tokenizer=f"hf:{tokenizer}"),)
    max_calls = config.get("max_tool_calls")
    correct = _grades(run_dir)

    # heavy: starts in the background
    labels = _Labels(records, [*cell_labelers, *trajectory_labelers], joint)
    traj_rows: list[dict[str, Any]] = []
    cell_rows: list[dict[str, Any]] = []
    import_rows: list[dict[str, Any]] = []
    try:
        for record in records:
            row, cells, modules = _analyze_record(record, record_label, counter, f"hf:{tokenizer}", max_calls)
            row["correct"] = correct.get(record.key)
            traj_rows.append(row)
            cell_rows.extend(cells)
            import_rows.extend(modules)
        outputs = labels.get()
    finally:
        labels.close()

    trajectories = pd.DataFrame(traj_rows, columns=_TRAJ_COLUMNS if not traj_rows else None)
    cells_df = pd.DataFrame(cell_rows, columns=_CELL_COLUMNS if not cell_rows else None)
    imports_df = pd.DataFrame(import_rows, columns=_IMPORT_COLUMNS if not import_rows else None)
    cells_df = _apply_cell_labelers(cells_df, records, cell_labelers, outputs[: len(cell_labelers)])
    trajectories = _apply_trajectory_labelers(trajectories, records, outputs[len(cell_labelers) :])

    summary = summarize(traj_rows, imports_df, config)
    summary.update(label_summaries(trajectories, cells_df))
    summary["labelers"] = {
        "cell": [_name(f) for f in cell_labelers],
        "trajectory": [_name(f) for f in trajectory_labelers],
    }
    if judge_report is not None:
        summary["judge"] = judge_report
    directory = None
    if write:
        directory = run_dir / ANALYSIS_DIR
        directory.mkdir(exist_ok=True)
        for name, frame in (("trajectories", trajectories), ("cells", cells_df), ("imports", imports_df)):
            replace_atomically(directory / f"{name}.parquet", partial(frame.to_parquet, index=False))
        summary["files"] = {n: f"{ANALYSIS_DIR}/{n}.parquet" for n in ("trajectories", "cells", "imports")}
        update_results(run_dir, {"analysis": summary})
    return Analysis(trajectories, cells_df, imports_df, summary, directory)


def label_summaries(trajectories: pd.DataFrame, cells: pd.DataFrame) -> dict[str, Any]:
    """Per task and overall: the Calculation / Verification split of executed cells, and the rate of
    each behaviour with the tokens spent inside its spans (when those labels are present)."""
    out: dict[str, Any] = {}
    if "purpose" in cells:
        labelled = cells.dropna(subset=["purpose"])
        out["purpose"] = {
            name: {"cells": len(group), **{p: float((group["purpose"] == p).mean()) if len(group) else None
                                          for p in ("calculation", "verification")}}
            for name, group in [*labelled.groupby("task"), ("all", labelled)]
        }  # fmt: skip
    if all(kind in trajectories for kind in KINDS):
        out["behaviours"] = {
            name: {
                kind: {"rate": float(group[kind].mean()) if len(group) else None,
                       "trajectories": int(group[kind].sum()), "spans": int(group[f"{kind}_spans"].sum()),
                       "span_tokens": int(group[f"{kind}_tokens"].sum())}
                for kind in KINDS
            }
            for name, group in [*trajectories.groupby("task"), ("all", trajectories)]
        }  # fmt: skip
        out["behaviour_tokenizer"] = (
            str(trajectories["behaviour_tokenizer"].iloc[0]) if len(trajectories) else None
        )
    return out


def _analyze_record(
    record: TrajectoryRecord,
    record_label: str,
    counter: TokenCounter | None,
    counter_label: str,
    max_calls: int | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One trajectory's row, its cell rows and its (trajectory, module) rows."""
    key = dict(zip(TRAJECTORY_KEY, record.key))
    segments = locate_segments(record)
    split = token_split(
        record, segments, record_label=record_label, counter=counter, counter_label=counter_label
    )
    cells = cells_of(record, segments)
    stats = code_stats(record, cells, max_calls)
    rows: list[dict[str, Any]] = []
    for cell in cells:
        found = imports_in(cell.code)
        call = cell.call
        rows.append({
            **key,
            "cell_index": cell.index,
            "call_index": cell.call_index,
            "state": cell.state,
            "executed": cell.state == "executed",
            "status": cell.status,
            "error_kind": cell.error_kind,
            "error_name": call.error_name if call else None,
            "kernel_restarted": bool(call and call.kernel_restarted),
            "duration_s": call.duration_s if call else None,
            "offset": cell.offset,
            "code_chars": len(cell.code),
            "code_lines": cell.code.count("\n") + 1 if cell.code else 0,
            "parseable": found.parseable,
            "imports": list(dict.fromkeys(i.top for i in found.imports)),
            "import_names": list(dict.fromkeys(i.name for i in found.imports)),
            "import_list": found.imports,
        })  # fmt: skip
    modules = module_rows(rows)
    for row in rows:
        del row["import_list"]
    trajectory = {
        **key,
        "finish_reason": record.finish_reason,
        "chemistry": is_chemistry(record),
        "correct": None,
        **split.columns(),
        "record_generated": record.tokens.generated,
        "record_response": record.tokens.response,
        "record_total": record.tokens.total,
        "record_prompt": record.tokens.prompt,
        **stats.columns(),
        "unparseable_cells": sum(not r["parseable"] for r in rows),
        "modules": [m["module"] for m in modules],
    }
    return trajectory, rows, [{**key, **m} for m in modules]


_TRAJ_COLUMNS = [*TRAJECTORY_KEY, "finish_reason", "tokenizer"]
_CELL_COLUMNS = [*CELL_KEY, "state", "status", "error_kind", "imports"]
_IMPORT_COLUMNS = [
    *TRAJECTORY_KEY,
    "module",
    "stdlib",
    "first_cell_index",
    "first_offset",
    "cells",
    "executed",
]


def summarize(
    traj_rows: list[dict[str, Any]], imports: pd.DataFrame, config: dict[str, Any]
) -> dict[str, Any]:
    """The "analysis" summary: per task and over the whole run, plus RDKit adoption on chemistry."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in traj_rows:
        by_task[row["task"]].append(row)
    tasks = {task: _section(rows, imports[imports["task"] == task]) for task, rows in by_task.items()}
    chem = [r for r in traj_rows if r["chemistry"]]
    rdkit = None
    if chem:
        users = set(
            imports.loc[imports["module"] == CHEMISTRY_MODULE, list(TRAJECTORY_KEY)].itertuples(
                index=False, name=None
            )
        )
        chem_by_task: dict[str, list[bool]] = defaultdict(list)
        for r in chem:
            chem_by_task[r["task"]].append((r["task"], r["problem_id"], r["sample_idx"]) in users)
        rdkit = {
            "chemistry_trajectories": len(chem),
            "adoption": sum(sum(v) for v in chem_by_task.values()) / len(chem),
            "by_task": {
                t: {"trajectories": len(v), "adoption": sum(v) / len(v)} for t, v in chem_by_task.items()
            },
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "analyzed_at": time.time(),
        "model": config.get("model"),
        "backend": config.get("backend"),
        "trajectories": len(traj_rows),
        "tokenizers": dict(Counter(r["tokenizer"] for r in traj_rows).most_common()),
        "all": _section(traj_rows, imports),
        "tasks": tasks,
        "rdkit": rdkit,
    }


def _section(rows: list[dict[str, Any]], imports: pd.DataFrame) -> dict[str, Any]:
    n = len(rows)
    tokens: dict[str, Any] = {
        p: (sum(r[f"tokens_{p}"] for r in rows) / n if n else None) for p in TOKEN_PARTS
    }
    response = sum(r["tokens_response"] for r in rows)
    tokens["generated_share"] = sum(r["tokens_generated"] for r in rows) / response if response else None
    tokens["final_answer_found"] = sum(r["final_answer_chars"] > 0 for r in rows) / n if n else None
    libraries = {}
    if len(imports):
        grouped = imports.groupby("module", sort=False).agg(
            trajectories=("module", "size"),
            executed=("executed", "sum"),
            stdlib=("stdlib", "first"),
            first_cell=("first_cell_index", "median"),
        )
        grouped = grouped.sort_values(["trajectories", "executed"], ascending=False, kind="stable")
        for module, g in grouped.iterrows():
            libraries[str(module)] = {
                "trajectories": int(g["trajectories"]),
                "adoption": int(g["trajectories"]) / n if n else None,
                "executed_adoption": int(g["executed"]) / n if n else None,
                "stdlib": bool(g["stdlib"]),
                "median_first_cell": float(g["first_cell"]),
            }
    return {
        "trajectories": n,
        "tokens": tokens,
        "code": summarize_code(rows),
        "unparseable_cells": sum(r["unparseable_cells"] for r in rows),
        "libraries": libraries,
    }


def join_labels(frame: pd.DataFrame, labels: pd.DataFrame, key: Iterable[str] = CELL_KEY) -> pd.DataFrame:
    """Left-join `labels` (computed elsewhere, e.g. a batch LLM judge) onto `frame` by `key`;
    rows without a label get nulls. Refuses duplicate keys and columns that already exist."""
    key = list(key)
    missing = [k for k in key if k not in labels.columns]
    if missing:
        raise AnalysisError(f"labels lack the key columns {missing}")
    if labels.duplicated(key).any():
        raise AnalysisError("labels hold more than one row for some key")
    clash = [c for c in labels.columns if c not in key and c in frame.columns]
    if clash:
        raise AnalysisError(f"label columns {clash} already exist")
    unknown = len(labels) - len(labels[key].merge(frame[key], on=key))
    if unknown:
        raise AnalysisError(f"{unknown} label rows match no row of the table (wrong {key[-1]}?)")
    if not len(labels):
        return frame.assign(**{c: None for c in labels.columns if c not in key})
    return frame.merge(labels, on=key, how="left", validate="one_to_one")


def _apply_cell_labelers(
    cells: pd.DataFrame, records: list[TrajectoryRecord], labelers, outputs
) -> pd.DataFrame:
    for labeler, per_record in zip(labelers, outputs):
        rows = []
        for record, labels in zip(records, per_record):
            key = dict(zip(TRAJECTORY_KEY, record.key))
            for label in labels:
                if "cell_index" not in label:
                    raise AnalysisError(f"cell labeler {_name(labeler)} returned a row without cell_index")
                rows.append({**key, **label})
        if rows:
            cells = join_labels(cells, pd.DataFrame(rows), CELL_KEY)
    return cells


def _apply_trajectory_labelers(frame: pd.DataFrame, records: list[TrajectoryRecord], outputs) -> pd.DataFrame:
    for per_record in outputs:
        rows = [{**dict(zip(TRAJECTORY_KEY, r.key)), **out} for r, out in zip(records, per_record)]
        if rows:
            frame = join_labels(frame, pd.DataFrame(rows), TRAJECTORY_KEY)
    return frame


PARALLEL_FROM = 400  # records; below this, forking costs more than it saves
CHUNK = 200  # records a worker labels at a time (about a second)
# What forked workers read: the records and the function that labels one.
_shared: tuple[list[TrajectoryRecord], Callable[[TrajectoryRecord], tuple]] | None = None


class _Labels:
    """Each labeler's output for each record. The heuristics are pure Python and CPU-bound, so for
    big runs they start in forked processes (one per CPU) before the main pass and run beside it;
    records and labelers reach the workers by fork, unpickled, and only the labels come back.

    `joint`, when given, computes all the labelers' outputs for a record in one call (the default
    heuristics share their reading of a record: `heuristics.label_record`); otherwise each labeler
    runs on its own."""

    def __init__(
        self,
        records: list[TrajectoryRecord],
        labelers: Sequence[Callable],
        joint: Callable[[TrajectoryRecord], tuple] | None = None,
    ) -> None:
        global _shared
        self.records, self.count, self.pool, self.futures = records, len(labelers), None, []
        self.label = joint or partial(_each, labelers)
        workers = min(len(os.sched_getaffinity(0)), 8)
        if (
            not labelers
            or len(records) < PARALLEL_FROM
            or workers < 2
            or "fork" not in mp.get_all_start_methods()
        ):
            return
        # Chunks of about CHUNK records, so that no worker is left alone with a long last chunk.
        chunks = max(4 * workers, len(records) // CHUNK)
        bounds = [len(records) * i // chunks for i in range(chunks + 1)]
        _shared = (records, self.label)
        # The records live as long as the analysis: freezing them keeps the garbage collector from
        # walking millions of objects in every process, and the workers' copy-on-write pages intact.
        gc.freeze()
        self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
        self.futures = [self.pool.submit(_label_chunk, span) for span in zip(bounds, bounds[1:])]

    def close(self) -> None:
        global _shared
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool, _shared = None, None
            gc.unfreeze()

    def get(self) -> list[list[Any]]:
        """One list per labeler, one output per record."""
        if self.pool is None:
            rows = [self.label(r) for r in self.records] if self.count else []
        else:
            rows = [row for future in self.futures for row in future.result()]
        return [[row[i] for row in rows] for i in range(self.count)]


def _each(labelers: Sequence[Callable], record: TrajectoryRecord) -> tuple:
    return tuple(labeler(record) for labeler in labelers)


def _label_chunk(span: tuple[int, int]) -> list[tuple]:
    records, label = _shared  # type: ignore[misc]
    return [label(r) for r in records[span[0] : span[1]]]


def _judge_labels(judge: CellJudge, records: list[TrajectoryRecord], prefix: str) -> CellLabeler:
    """Run `judge` over every record (one batch, then close it) and return a cell labeler that
    gives its labels as columns named after `prefix`."""

    async def go() -> list[list[CellPurpose]]:
        try:
            return await judge.classify_many(records)
        finally:
            await judge.aclose()

    labels = dict(zip((r.key for r in records), asyncio.run(go())))

    def labeler(record: TrajectoryRecord) -> list[dict[str, Any]]:
        return purpose_rows([record], [labels[record.key]], prefix)

    labeler.__qualname__ = f"judge:{judge.model_name}"
    return labeler


def _grades(run_dir: Path) -> dict[tuple[str, str, int], bool]:
    """Correctness per sample from grades.jsonl when `cortbench score` has run (else empty)."""
    path = run_dir / GRADES
    if not path.is_file():
        return {}
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                g = json.loads(line)
                out[(g["task"], g["problem_id"], g["sample_idx"])] = bool(g["correct"])
            except (ValueError, KeyError, TypeError):
                continue
    return out


def _name(fn: Callable) -> str:
    """A labeler's name for the summary: a partial is named by its function (its repr holds an address)."""
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
