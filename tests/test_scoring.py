"""Scoring a saved run: regrading records, per-sample grades, the paper's metrics and groups."""

import json
import os
import subprocess
import sys

import pytest

from cortbench.analyzers.grading import Grader
from cortbench.analyzers.scorers import answer_classes
from cortbench.analyzers.scoring import score_run
from cortbench.harness.records import TokenCounts, ToolCall, TrajectoryRecord
from cortbench.harness.store import RunStore


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, timeout_s=10) as g:
        yield g


def _record(task, pid, idx, answer, gold, calls=(), prompt=10):
    generation = (
        f"Let me think.\n```python\nprint(1)\n```\n```output\n1\n```\nSo the answer is \\boxed{{{answer}}}."
    )
    tool_calls = [ToolCall("print(1)", "1", status, 0.01) for status in calls]
    return TrajectoryRecord(task, pid, idx, "prompt", generation, "stop", gold=gold, tool_calls=tool_calls,
                            tokens=TokenCounts(generated=20 + idx, total=prompt + 30 + idx, prompt=prompt))  # fmt: skip


def _write_run(path, records, config=None):
    with RunStore.open(path, config or {"model": "m", "backend": "hf"}) as store:
        for r in records:
            store.append(r)


def test_answer_classes_group_equivalent_answers(grader):
    assert answer_classes(["1/2", "0.5", "\\frac{1}{2}", "3", None, "3"], grader) == [0, 0, 0, 1, None, 1]


def test_score_run_writes_grades_and_results(tmp_path, grader):
    records = [
        # problem 0 (gold 025): 3 of 4 correct, zero padding does not matter
        _record("aime24", "0", 0, "25", "025", calls=["ok"]),
        _record("aime24", "0", 1, "25", "025", calls=["ok", "error"]),
        _record("aime24", "0", 2, "24", "025"),
        _record("aime24", "0", 3, "025", "025"),
        # problem 1 (gold 7): 1 of 4 correct, the majority (9) is wrong
        _record("aime24", "1", 0, "9", "7"),
        _record("aime24", "1", 1, "9", "7"),
        _record("aime24", "1", 2, "7", "7"),
        _record("aime24", "1", 3, "9", "7", calls=["error"]),
    ]
    _write_run(tmp_path / "run", records)
    results = score_run(tmp_path / "run", grader)
    task = results["tasks"]["aime24"]
    assert (task["problems"], task["samples"], task["k"], task["complete"]) == (2, 8, 4, True)
    assert task["avg@k"]["value"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert task["pass@k"]["1"]["value"] == pytest.approx(0.5)
    assert task["pass@k"]["4"]["value"] == 1.0
    assert task["maj@k"]["4"]["value"] == 0.5  # problem 0 by majority, problem 1 not
    assert task["maj@k"]["1"]["value"] == 0.5  # the first sample alone: right, then wrong
    assert task["tokens"]["all"] == pytest.approx(sum(30 + r.sample_idx for r in records) / 8)
    assert task["code"] == {"tool_calls_per_sample": 0.5, "code_usage_rate": 0.375, "code_success_rate": 0.5}
    assert task["grading_errors"] == 0 and results["groups"] == {}
    lines = [json.loads(line) for line in (tmp_path / "run" / "grades.jsonl").read_text().splitlines()]
    assert [g["correct"] for g in lines] == [True, True, False, True, False, False, True, False]
    assert lines[0]["extracted"] == "25" and lines[0]["answer_class"] == lines[3]["answer_class"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["tasks"]["aime24"]["k"] == 4


def test_samples_without_gold_are_kept_but_not_scored_and_counted(tmp_path, grader):
    _write_run(tmp_path / "run", [_record("mine", "0", 0, "2", "2"), _record("mine", "1", 0, "2", None)])
    results = score_run(tmp_path / "run", grader)
    assert (results["samples"], results["samples_without_gold"], results["grading_errors"]) == (2, 1, 0)
    assert results["tasks"]["mine"]["avg@k"]["value"] == 1.0 and results["tasks"]["mine"]["samples"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "grades.jsonl").read_text().splitlines()]
    assert [r["has_gold"] for r in rows] == [True, False]  # one line per record, still


def test_records_without_any_gold_are_not_scored_as_zero(tmp_path):
    """`cortbench serve --record` of requests that sent no gold: one line, not a 0% score."""
    _write_run(
        tmp_path / "run", [_record("serve", str(p), 0, "2", None) for p in range(3)], {"served_model": "x"}
    )
    done = _score(tmp_path / "run")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'run'}: no gold answers in these records: nothing to score (a request to "
        '`cortbench serve --record` carries one in its "gold" field)'
    ]
    assert (
        not (tmp_path / "run" / "grades.jsonl").exists() and not (tmp_path / "run" / "results.json").exists()
    )


def _score(run, columns="80"):
    return subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "score", str(run)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": columns})  # fmt: skip


def _planned(samples, limit=None, **more):
    """run.json's config as `cortbench run --tasks aime24 --n ... --limit ...` writes it."""
    return {"model": "m", "backend": "hf", "samples": samples, "limit": limit,
            "sources": {t: f"/data/test_{t}.jsonl" for t in samples}, **more}  # fmt: skip


def test_an_unfinished_run_is_scored_as_incomplete_not_as_a_smaller_k(tmp_path):
    """Interrupted at 1 of 4 samples: results.json says so, and so does score's table."""
    _write_run(tmp_path / "run", [_record("aime24", str(p), 0, "1", "1") for p in range(2)],
               _planned({"aime24": 4}, limit=2))  # fmt: skip
    done = _score(tmp_path / "run")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    task = results["tasks"]["aime24"]
    assert (task["k"], task["complete"], task["k_expected"], task["problems_expected"], task["samples_expected"]) == (
        1, False, 4, 2, 8
    )  # fmt: skip
    assert (results["complete"], results["samples_expected"], results["tasks_missing"]) == (False, 8, [])
    assert "(k=1 of 4)" in done.stdout
    out = " ".join(done.stdout.split())
    assert "AIME24 is incomplete: 1 of 4 samples for 2 problems" in out and "--resume" in out


def test_missing_problems_and_tasks_make_a_run_incomplete(tmp_path, grader):
    # problem-major order: interrupted after problem 0 of 3 (all 4 samples); aime25 never started
    records = [_record("aime24", "0", i, "1", "1") for i in range(4)]
    _write_run(tmp_path / "run", records, _planned({"aime24": 4, "aime25": 4}, limit=3))
    results = score_run(tmp_path / "run", grader)
    task = results["tasks"]["aime24"]
    assert (task["k"], task["complete"], task["problems_expected"]) == (4, False, 3)
    assert (results["tasks_missing"], results["samples_expected"], results["complete"]) == (
        ["aime25"],
        24,
        False,
    )
    from cortbench.analyzers.scoring import shortfall

    assert shortfall(task) == "4 of 12 samples (1 of 3 problems)"
    # a task file of one's own: its size is unknown, its k is not
    _write_run(tmp_path / "own", [_record("toy", "0", 0, "1", "1"), _record("toy", "1", 0, "1", "1")],
               {"samples": {"toy": 2}, "sources": {"toy": "/tmp/toy.jsonl"}, "limit": 10})  # fmt: skip
    toy = score_run(tmp_path / "own", grader)["tasks"]["toy"]
    assert (toy["complete"], toy["problems_expected"], shortfall(toy)) == (
        False,
        2,
        "1 of 2 samples for 2 problems",
    )
    # a complete run is complete
    _write_run(tmp_path / "done", [_record("aime24", str(p), i, "1", "1") for p in range(2) for i in range(2)],
               _planned({"aime24": 2}, limit=2))  # fmt: skip
    finished = score_run(tmp_path / "done", grader)
    assert (
        finished["complete"]
        and finished["tasks"]["aime24"]["complete"]
        and shortfall(finished["tasks"]["aime24"]) is None
    )


def test_the_group_appears_when_all_its_tasks_are_scored(tmp_path, grader):
    names = ["aime24", "aime25", "amc23", "math500", "olympiad_bench"]
    records = [
        _record(t, str(p), 0, "1" if (i + p) % 2 else "2", "1") for i, t in enumerate(names) for p in range(2)
    ]
    records += [_record("aime24", "9", 0, "1", "1")]
    _write_run(tmp_path / "run", records)
    results = score_run(tmp_path / "run", grader)
    group = results["groups"]["cort_math"]
    task_scores = [results["tasks"][t]["avg@k"]["value"] for t in names]
    assert group["avg@k"]["value"] == pytest.approx(sum(task_scores) / 5)  # plain mean, not by size
    assert group["tasks"] == names


def test_cortbench_score_prints_the_papers_columns_with_intervals(tmp_path):
    names = ["aime24", "aime25", "amc23", "math500", "olympiad_bench"]
    _write_run(tmp_path / "run", [_record(t, str(p), i, "1", "1" if p else "2") for t in names for p in range(3)
                                  for i in range(2)])  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "score", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    header = " ".join(line for line in done.stdout.splitlines()[:4])  # the header spans two lines
    assert [c for c in ("AIME24", "AIME25", "AMC23", "MATH500", "Olympiad", "Avg") if c in header] == [
        "AIME24", "AIME25", "AMC23", "MATH500", "Olympiad", "Avg"
    ]  # fmt: skip
    avg_row = next(line for line in done.stdout.splitlines() if line.lstrip("│ ").startswith("avg@k"))
    assert avg_row.count("66.7 [") == 6  # every task and the group: 2 of 3 problems right, with an interval
    assert (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "grades.jsonl").exists()


def test_the_score_table_is_readable_in_80_columns(tmp_path):
    """Piped (no TTY) at COLUMNS=80: no line wider, no label or header cut to "…"."""
    names = ["aime24", "aime25", "amc23", "math500", "olympiad_bench"]
    _write_run(tmp_path / "run", [_record(t, str(p), i, "1", "1" if p else "2", calls=["ok", "error"]) for t in names
                                  for p in range(3) for i in range(2)], _planned({t: 4 for t in names}))  # fmt: skip
    done = _score(tmp_path / "run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in done.stdout, done.stdout
    words = ("Olympiad", "(k=2 of", "(pass@1)", "correct", "wrong", "sample", "success", "errors")
    assert all(word in done.stdout for word in words), done.stdout


def test_cortbench_score_on_a_missing_run_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "score", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {tmp_path / 'nope'} is not a run directory (no samples.jsonl)"


def test_chemistry_problems_are_graded_with_their_tolerance_and_types(tmp_path, grader):
    meta = {"grader": "chem", "answer_type": "number", "tolerance": {"abs": 0.02, "rel": 1e-4}}
    records = [
        _record("cort_chem", "0", 0, "180.17", "180.16"),  # within tolerance: math-verify alone says no
        _record("cort_chem", "0", 1, "180.16 g/mol", "180.16"),
        _record("cort_chem", "0", 2, "181.5", "180.16"),
    ]
    for r in records:
        r.problem_meta = meta
    _write_run(tmp_path / "run", records)
    results = score_run(tmp_path / "run", grader)
    task = results["tasks"]["cort_chem"]
    assert task["grader"] == "chem" and task["avg@k"]["value"] == pytest.approx(2 / 3)
    assert task["maj@k"]["3"]["value"] == 1.0


def test_where_cortbench_and_cort_differ_both_are_available(tmp_path, grader):
    """maj@k with samples that have no answer (abstain, or CoRT's own group each), a response
    without a box (math-verify's fallback, or --require-box), unknown token counts (null, never 0)."""
    from cortbench.analyzers.metrics import majority_correct
    from cortbench.analyzers.scoring import ScoringOptions

    assert majority_correct([False, False, True], [None, None, 0])  # the answered sample wins
    assert not majority_correct(
        [False, False, True], [None, None, 0], empty="own-group"
    )  # a tie: first group
    assert majority_correct([True, True, False], [0, 0, None], empty="own-group")
    assert not majority_correct([False, False], [None, None], empty="own-group")
    with pytest.raises(ValueError, match="maj_empty"):
        ScoringOptions(maj_empty="vote")

    unboxed = TrajectoryRecord("aime24", "0", 0, "p", "I think the answer is 42 here", "stop", gold="42")
    imported = TrajectoryRecord("aime24", "1", 0, "p", "So \\boxed{7}.", "stop", gold="7")  # no token counts
    assert imported.tokens.generated is None and imported.tokens.response is None
    _write_run(tmp_path / "run", [unboxed, imported])
    protocol = score_run(tmp_path / "run", grader)
    strict = score_run(tmp_path / "run", grader, options=ScoringOptions(require_box=True))
    assert protocol["tasks"]["aime24"]["avg@k"]["value"] == 1.0  # math-verify falls back to the last number
    assert strict["tasks"]["aime24"]["avg@k"]["value"] == 0.5 and strict["options"]["require_box"] is True
    grades = [json.loads(line) for line in (tmp_path / "run" / "grades.jsonl").read_text().splitlines()]
    assert [g["extracted"] for g in grades] == [None, "7"] and grades[1]["generated_tokens"] is None
    assert protocol["tasks"]["aime24"]["generated_tokens"]["all"] is None  # unknown, not 0
