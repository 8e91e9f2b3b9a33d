"""Delayed code computation and code result distrust: the detector against hand-labelled trajectories,
its spans, and the per-run summary."""

import json
import time
from pathlib import Path

import pytest

from cortbench.analyzers.behaviours import (
    KINDS,
    BehaviourSpan,
    approximate_tokens,
    detect_behaviours,
    label_behaviours,
    summarize_behaviours,
)
from cortbench.harness.records import InsertedHint, ToolCall, TrajectoryRecord
from cortbench.harness.text_calls import tool_calls_from_text

LABELS = Path(__file__).parent / "data" / "behaviour_labels.jsonl"
ROWS = [json.loads(line) for line in LABELS.read_text().splitlines()]
BY_ID = {r["id"]: r for r in ROWS}


def record_of(row: dict) -> TrajectoryRecord:
    gen = row["generation"]
    calls = [ToolCall(c.code, c.output, "ok" if c.ok else "error", 0.0) for c in tool_calls_from_text(gen)]
    hints = [InsertedHint(**h) for h in row["hints"]]
    return TrajectoryRecord(
        "labels", row["id"], 0, row["problem"], gen, "stop", tool_calls=calls, hints=hints
    )


def scores(rows):
    counts = {k: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for k in KINDS}
    for row in rows:
        found = {s.kind for s in detect_behaviours(record_of(row))}
        for kind in KINDS:
            counts[kind][{(True, True): "tp", (True, False): "fp", (False, True): "fn", (False, False): "tn"}[
                (kind in found, row[kind])]] += 1  # fmt: skip
    return counts


def test_labelled_set_has_both_behaviours_and_clean_trajectories():
    assert len(ROWS) >= 30 and len(BY_ID) == len(ROWS)
    for kind in KINDS:
        positives = sum(r[kind] for r in ROWS)
        assert positives >= 10 and len(ROWS) - positives >= 10
    assert sum(not r["delayed_computation"] and not r["result_distrust"] for r in ROWS) >= 12
    assert all(r["split"] in ("dev", "heldout") and r["reason"] for r in ROWS)


def test_precision_and_recall_on_the_labelled_set():
    """Measured (docs/purpose.md): delayed computation P 12/13, R 12/12; result distrust P 13/13, R 13/13.
    Held-out alone: delayed P 5/6, R 5/5; distrust P 6/6, R 6/6."""
    counts = scores(ROWS)
    delayed, distrust = counts["delayed_computation"], counts["result_distrust"]
    assert delayed["tp"] / (delayed["tp"] + delayed["fp"]) >= 0.92 and delayed["fn"] == 0, delayed
    assert distrust["fp"] == 0 and distrust["fn"] == 0, distrust
    held = scores([r for r in ROWS if r["split"] == "heldout"])
    assert held["delayed_computation"]["tp"] == 5 and held["delayed_computation"]["fp"] <= 1
    assert held["result_distrust"]["tp"] == 6 and held["result_distrust"]["fp"] == 0


def test_spans_point_at_the_text_that_shows_the_behaviour():
    rec = record_of(BY_ID["rd-manual"])
    (span,) = detect_behaviours(rec)
    assert span.kind == "result_distrust" and span.cell_index == 0
    text = rec.generation[span.start : span.end]
    assert "let me double-check this manually" in text and "91 + 125 = 216" in text and "216" in span.evidence
    assert span.start > rec.generation.index("```output") and text.endswith("$x = 216$.")

    rec = record_of(BY_ID["dc-trib"])
    (span,) = detect_behaviours(rec)
    text = rec.generation[span.start : span.end]
    assert span.kind == "delayed_computation" and span.cell_index == 0 and "274" in span.evidence
    assert "$T_{10} = 149 + 81 + 44 = 274$" in text and "```" not in text
    assert span.end <= rec.generation.index("```python")

    rec = record_of(BY_ID["rd-rerun"])
    (span,) = detect_behaviours(rec)
    assert span.cell_index == 0 and rec.generation[span.start : span.end].startswith("```python")
    assert span.start > rec.generation.index("run that again") and "cell 1 recomputes 14833" in span.evidence

    both = detect_behaviours(record_of(BY_ID["both-aces"]))
    assert [s.kind for s in both] == ["delayed_computation", "result_distrust"]
    assert all(isinstance(s, BehaviourSpan) and 0 <= s.start < s.end for s in both)


def test_inserted_hints_are_not_the_models_doubt():
    rec = record_of(BY_ID["neg-hint"])
    assert "doubt the accuracy" in rec.generation and detect_behaviours(rec) == []
    unhinted = TrajectoryRecord("t", "p", 0, "", rec.generation, "stop", tool_calls=rec.tool_calls)
    assert detect_behaviours(unhinted) == []  # "we don't need to doubt" is no doubt either


def test_doubt_long_after_the_output_must_name_the_result():
    gen = (
        "```python\nprint(pow(2, 2024, 1000))\n```\n```output\n216\n```\n"
        + "So the remainder is 216. Now the second part of the problem asks for the digit sum. " * 8
        + "Wait, is that right? The digit sum of 125 is 8.\n"
    )
    rec = TrajectoryRecord(
        "t", "p", 0, "", gen, "stop", tool_calls=[ToolCall("print(pow(2, 2024, 1000))", "216", "ok", 0.0)]
    )
    assert detect_behaviours(rec) == []
    near = gen.replace("So the remainder is 216. Now", "Wait, is that right? Now", 1)
    rec = TrajectoryRecord("t", "p", 0, "", near, "stop", tool_calls=rec.tool_calls)
    assert [s.kind for s in detect_behaviours(rec)] == ["result_distrust"]


def test_failed_cells_are_not_results():
    gen = "A lot of work: 1 + 1 = 2, 2 + 2 = 4, 4 + 4 = 8, 8 + 8 = 16.\n```python\nprint(16\n```\n```output\nSyntaxError\n```\n"
    rec = TrajectoryRecord(
        "t", "p", 0, "", gen, "stop", tool_calls=[ToolCall("print(16", "SyntaxError", "error", 0.0)]
    )
    assert detect_behaviours(rec) == []


def test_summary_rates_and_tokens():
    recs = [record_of(r) for r in ROWS]
    found = [detect_behaviours(r) for r in recs]
    summary = summarize_behaviours(recs, detections=found)
    assert set(summary) == set(KINDS)
    delayed = summary["delayed_computation"]
    assert (
        delayed.trajectories == len(ROWS) and delayed.with_behaviour == 13 and delayed.rate == 13 / len(ROWS)
    )
    assert delayed.approximate and delayed.tokenizer == "approx:chars/4"
    assert delayed.span_tokens > 0 and 0 < delayed.token_share < 1
    distrust = summarize_behaviours(recs, count_tokens=len, tokenizer="chars")["result_distrust"]
    expected = sum(s.end - s.start for spans in found for s in spans if s.kind == "result_distrust")
    assert distrust.tokenizer == "chars" and not distrust.approximate
    assert distrust.with_behaviour == 13 and distrust.span_tokens == expected
    assert distrust.token_share == pytest.approx(expected / sum(len(r.generation) for r in recs))
    with pytest.raises(ValueError):
        summarize_behaviours(recs, detections=found[:1])
    assert approximate_tokens("abcdefgh") == 2


def test_overlapping_spans_count_once():
    row = BY_ID["both-aces"]
    rec = record_of(row)
    span = detect_behaviours(rec)[1]
    twice = [[span, BehaviourSpan(span.kind, span.start + 5, span.end + 10, span.cell_index, "overlap")]]
    summary = summarize_behaviours([rec], count_tokens=len, detections=twice)["result_distrust"]
    assert summary.spans == 2 and summary.span_tokens == span.end + 10 - span.start


def test_detection_is_fast_on_a_long_trajectory():
    rows = [r for r in ROWS if r["split"] == "dev"]
    gen = "".join(r["generation"] + "\n\n" for r in rows)  # ~22 trajectories joined: ~25k characters
    calls = [ToolCall(c.code, c.output, "ok", 0.0) for c in tool_calls_from_text(gen)]
    rec = TrajectoryRecord("t", "p", 0, "", gen, "stop", tool_calls=calls)
    start = time.perf_counter()
    spans = detect_behaviours(rec)
    assert time.perf_counter() - start < 5 and len(spans) >= 10  # ~0.3 s here


def test_columns_for_the_analyze_pipeline(tmp_path):
    import pandas as pd

    from cortbench.analyzers.analyze import analyze_run, join_labels
    from cortbench.analyzers.judge import JUDGE_FAILED
    from cortbench.analyzers.purpose import CellPurpose, classify_cells, label_cells, purpose_rows
    from cortbench.harness.store import RunStore

    recs = [record_of(BY_ID[i]) for i in ("both-aces", "neg-clean", "rd-rerun")]
    row = label_behaviours(recs[0], count_tokens=len, tokenizer="chars")
    assert row["delayed_computation"] and row["result_distrust"] and row["behaviour_tokenizer"] == "chars"
    assert [s["kind"] for s in row["behaviour_spans"]] == ["delayed_computation", "result_distrust"]
    assert (
        row["result_distrust_tokens"] == row["behaviour_spans"][1]["end"] - row["behaviour_spans"][1]["start"]
    )

    with RunStore.open(tmp_path / "run", {"model": "m", "backend": "hf"}) as store:
        for rec in recs:
            store.append(rec)
    analysis = analyze_run(
        tmp_path / "run", cell_labelers=[label_cells], trajectory_labelers=[label_behaviours]
    )
    assert (tmp_path / "run" / "analysis" / "cells.parquet").exists()
    traj = analysis.trajectories.set_index("problem_id")
    assert traj.loc["both-aces", "result_distrust"] and not traj.loc["neg-clean", "result_distrust"]
    assert traj.loc["rd-rerun", "behaviour_spans"][0]["cell_index"] == 0
    cells = analysis.cells.set_index(["problem_id", "cell_index"])
    assert cells.loc[("rd-rerun", 1), "purpose"] == "verification"
    assert cells["purpose_method"].eq("heuristic").all()

    # labels from a batch judge join the same way, in columns beside the heuristic's
    judged = [[CellPurpose(p.cell_index, p.purpose, p.categories, "j", JUDGE_FAILED) for p in classify_cells(r)]
              for r in recs]  # fmt: skip
    joined = join_labels(analysis.cells, pd.DataFrame(purpose_rows(recs, judged, prefix="judge_purpose")))
    assert joined["judge_purpose"].tolist() == joined["purpose"].tolist()
    assert joined["judge_purpose_method"].eq(JUDGE_FAILED).all()


def test_both_heuristics_from_one_view_equal_each_on_its_own():
    """`label_record` (what `analyze_run` runs) reads each record once for both heuristics; the labels
    are those of the two labelers run one after the other, on both labelled sets."""
    from cortbench.analyzers.heuristics import label_record
    from cortbench.analyzers.purpose import label_cells

    purpose_rows = [
        json.loads(line) for line in (LABELS.parent / "purpose_labels.jsonl").read_text().splitlines()
    ]
    records = [record_of(r) for r in ROWS] + [
        TrajectoryRecord("p", r["id"], 0, r["problem"], text, "stop",
                         tool_calls=[ToolCall(c.code, c.output, "ok" if c.ok else "error", 0.0)
                                     for c in tool_calls_from_text(text)])
        for r in purpose_rows
        for text in [r["context"] + f"```python\n{r['code']}\n```\n```output\n{r['output']}\n```\n"]
    ]  # fmt: skip
    for record in records:
        assert label_record(record, tokenizer="t") == (
            label_cells(record),
            label_behaviours(record, tokenizer="t"),
        )
