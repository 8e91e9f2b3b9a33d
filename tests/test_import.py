"""`cortbench import`: lm-eval's --log_samples files and any JSONL of problem / gold / generation
become run folders that score, analyze, check and the leaderboard read; bad rows are one line each.

The lm-eval fixture (tests/data/lm_eval/scripted/) was written by the real `lm_eval` CLI
(tests/data/lm_eval/make_fixture.py): cort_aime24_avgk (16 repeats) and cort_amc23, two problems
each, with transcripts whose cells ran in cortbench's sandbox."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cortbench.analyzers.grading import Grader
from cortbench.analyzers.scoring import score_run
from cortbench.harness.cli import app
from cortbench.harness.fences import output_block
from cortbench.harness.importers import (
    ImportFailed,
    cortbench_task_name,
    import_run,
    importer_names,
    parse_fields,
)
from cortbench.harness.store import read_run
from cortbench.harness.text_calls import error_name_in, tool_calls_from_text
from cortbench.tasks.prompts import TOOL_LIMIT_MESSAGE

LM_EVAL = Path(__file__).resolve().parent / "data" / "lm_eval" / "scripted"


def _cortbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


def _samples(pattern: str) -> list[dict]:
    [path] = LM_EVAL.glob(pattern)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


OK_CELL = "```python\nprint(6 * 7)\n```\n```output\n42\n```\n"
FAILING_CELL = (
    "```python\nprint(x)\n```\n```output\nTraceback (most recent call last):\n"
    '  File "<cell-1>", line 1, in <module>\n    print(x)\n          ^\n'
    "NameError: name 'x' is not defined\n```\n"
)


def test_formats_and_task_names():
    assert {"lm-eval", "jsonl"} <= set(importer_names())
    assert cortbench_task_name("cort_aime24") == "aime24"
    assert cortbench_task_name("cort_olympiad_bench_avgk") == "olympiad_bench"
    assert cortbench_task_name("cort_chem") == "cort_chem"  # cortbench's own name, kept
    assert cortbench_task_name("gsm8k") == "gsm8k"
    assert parse_fields(["gold=meta.answer", "generation = outs"]) == {
        "gold": "meta.answer",
        "generation": "outs",
    }
    for bad in (["gold"], ["colour=x"], ["gold=a", "gold=b"]):
        with pytest.raises(ImportFailed):
            parse_fields(bad)


def test_lm_eval_samples_become_records_that_score_as_lm_eval_did(tmp_path):
    run = tmp_path / "runs" / "lm"
    report = import_run("lm-eval", [LM_EVAL], run)
    assert (report.rows, report.bad, dict(report.samples)) == (4, 0, {"aime24": 32, "amc23": 2})
    config, records = read_run(run)
    assert config["model"] == "scripted"  # lm-eval's model_name, from the results file beside the samples
    assert config["backend"] == "lm-eval import" and config["tasks"] == "aime24,amc23"
    assert config["import"]["format"] == "lm-eval" and len(config["import"]["files"]) == 2

    aime = _samples("samples_cort_aime24_avgk_*.jsonl")
    first = [r for r in records if (r.task, r.problem_id) == ("aime24", "0")]
    assert [r.sample_idx for r in first] == list(range(16))  # one sample per repeat, in order
    assert [r.generation for r in first] == aime[0]["resps"][0]
    assert first[0].prompt == aime[0]["arguments"]["gen_args_0"]["arg_0"]
    assert first[0].gold == aime[0]["doc"]["gt_answer"] == "204"
    assert {r.finish_reason for r in records} == {"stop"}
    assert all(
        r.tokens.generated is None and r.tokens.prompt is None for r in records
    )  # unknown: null, not 0
    failing = first[1]
    assert [s.kind for s in failing.segments] == ["text", "code", "output", "text", "code", "output", "text"]
    assert [(c.status, c.error_name) for c in failing.tool_calls] == [("error", "NameError"), ("ok", None)]
    assert all(c.duration_s == 0.0 for c in failing.tool_calls)

    # cortbench's grading of the imported run gives lm-eval's own numbers for the same transcripts
    lm_eval_results = json.loads(next(LM_EVAL.glob("results_*.json")).read_text())["results"]
    with Grader(workers=1) as grader:
        results = score_run(run, grader)
    assert results["tasks"]["aime24"]["avg@k"]["value"] == pytest.approx(
        lm_eval_results["cort_aime24_avgk"]["acc,samples"]
    )
    assert results["tasks"]["aime24"]["code"]["code_success_rate"] == pytest.approx(
        lm_eval_results["cort_aime24_avgk"]["code_success,samples"]
    )
    assert results["tasks"]["amc23"]["avg@k"]["value"] == lm_eval_results["cort_amc23"]["acc,none"] == 1.0
    assert results["tasks"]["aime24"]["k"] == 16 and results["tasks"]["aime24"]["complete"]


def test_lm_eval_lines_of_other_filters_are_read_once_and_other_request_kinds_are_bad_rows(tmp_path):
    """lm-eval logs each problem once per filter (same resps); loglikelihood tasks have no generation."""
    rows = _samples("samples_cort_amc23_*.jsonl")
    again = [{**r, "filter": "strict-match", "filtered_resps": ["27"]} for r in rows]
    loglikelihood = {**rows[0], "doc_id": 9, "arguments": {"gen_args_0": {"arg_0": "Q", "arg_1": " A"}}}
    source = _write_jsonl(tmp_path / "samples_cort_amc23_2026-01-02T03-04-05.123456.jsonl",
                          [*rows, *again, loglikelihood])  # fmt: skip
    skipped = []
    report = import_run("lm-eval", [source], tmp_path / "run", on_skip=skipped.append, model="m")
    assert (report.rows, report.repeated, report.bad) == (2, 2, 1)
    assert skipped == [
        f"{source}:5: a loglikelihood request (not generate_until): lm-eval logs no generation for it"
    ]
    config, records = read_run(tmp_path / "run")
    assert config["model"] == "m"
    assert [(r.task, r.problem_id, r.sample_idx) for r in records] == [("amc23", "0", 0), ("amc23", "1", 0)]
    assert (
        "1 rows repeated" not in report.summary()
        and "2 rows repeated another lm-eval filter" in report.summary()
    )

    other = import_run("lm-eval", [source], tmp_path / "other", task="amc23_copy", fields={"gold": "target"})
    assert {r.task for r in read_run(tmp_path / "other")[1]} == {"amc23_copy"} and other.rows == 2


def test_generic_jsonl_with_mapped_nested_fields_and_lists_of_generations(tmp_path):
    source = _write_jsonl(tmp_path / "answers.jsonl", [
        {"item": {"question": "What is 6 * 7?", "answer": 42}, "outputs": [OK_CELL + "\\boxed{42}",
         FAILING_CELL + "\\boxed{41}"], "why": ["stop", "length"], "uid": "q1"},
        {"item": {"question": "What is 1 + 1?", "answer": "2"}, "outputs": "\\boxed{2}",
         "why": "stop"},  # no uid
        {"item": {"question": "What is 6 * 7?", "answer": 42}, "outputs": "\\boxed{42}", "why": "stop",
         "uid": "q1"},
    ])  # fmt: skip
    fields = {
        "problem": "item.question",
        "gold": "item.answer",
        "generation": "outputs",
        "finish_reason": "why",
    }
    fields_given = [f"--field={k}={v}" for k, v in fields.items()]
    done = _cortbench(
        "import", "jsonl", str(source), "-o", str(tmp_path / "run"), *fields_given, "--model", "x/y"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"imported 3 rows from 1 file into {tmp_path / 'run'}: 4 samples (answers 4), 2 tool calls "
        "(1 failed); skipped 0 bad rows"
    )
    config, records = read_run(tmp_path / "run")
    assert config["model"] == "x/y" and config["import"]["fields"] == fields
    keys = [(r.task, r.problem_id, r.sample_idx, r.gold, r.finish_reason) for r in records]
    assert keys == [
        ("answers", "0", 0, "42", "stop"),  # no problem_id field mapped or found: the row number, from 0
        ("answers", "0", 1, "42", "length"),
        ("answers", "1", 0, "2", "stop"),
        ("answers", "2", 0, "42", "stop"),
    ]

    # the problem_id mapped: rows of one problem add samples to it; the task from --task
    report = import_run(
        "jsonl", [source], tmp_path / "by_id", fields={**fields, "problem_id": "uid"}, task="toy"
    )
    assert report.bad == 1  # the row without uid: named explicitly, so it is missing
    records = read_run(tmp_path / "by_id")[1]
    assert [(r.task, r.problem_id, r.sample_idx) for r in records] == [
        ("toy", "q1", 0),
        ("toy", "q1", 1),
        ("toy", "q1", 2),
    ]
    assert records[0].prompt == "What is 6 * 7?"

    # the default names (cortbench grade's gold / response, a task field) need no --field; a finish
    # reason the row does not give is read from the text: the tool-limit message, else "stop"
    limited = "```python\nprint(1)\n```\n" + output_block("1" + TOOL_LIMIT_MESSAGE) + "\\boxed{1}"
    plain = _write_jsonl(tmp_path / "plain.jsonl", [
        {"task": "cort_aime24", "problem": "P", "gold": "1", "response": "\\boxed{1}", "meta": {"level": 3}},
        {"task": "cort_aime24", "problem": "P", "gold": "1", "response": limited, "id": 0},
    ])  # fmt: skip
    import_run("jsonl", [plain], tmp_path / "plain")
    first, second = read_run(tmp_path / "plain")[1]
    assert (first.task, first.problem_meta, first.generation) == ("aime24", {"level": 3}, "\\boxed{1}")
    assert (first.finish_reason, second.finish_reason) == ("stop", "tool_limit")
    assert (second.problem_id, second.sample_idx) == ("0", 1)  # row 0's problem: its second sample


def test_tool_calls_are_read_from_the_text_with_failures_flagged():
    text = (
        "Compute.\n" + OK_CELL + FAILING_CELL
        + "```python\nimport time\ntime.sleep(99)\n```\n```output\nTimeout Error\n```\n"
        + "```python\nprint(1)\n```\nnot run: no output block\n\\boxed{42}"
    )  # fmt: skip
    calls = tool_calls_from_text(text)
    assert [(c.status, c.error_name) for c in calls] == [
        ("ok", None),
        ("error", "NameError"),
        ("error", "TimeoutError"),
    ]
    assert [not c.ok for c in tool_calls_from_text(text)] == [
        False,
        True,
        True,
    ]  # the analyzers read the same
    assert (
        error_name_in('File "<cell-2>", line 1\n    def f(:\n          ^\nSyntaxError: invalid syntax')
        == "SyntaxError"
    )
    assert error_name_in("sympy.core.sympify.SympifyError: bad") == "SympifyError"


def test_bad_rows_are_one_line_each_and_counted(tmp_path):
    good = {"problem": "What is 6 * 7?", "gold": "42", "generation": OK_CELL + "\\boxed{42}"}
    source = _write_jsonl(tmp_path / "mixed.jsonl", [
        good, "not json {", "[1, 2]", {"problem": "P", "gold": "1"}, {**good, "generation": ["a", 3]},
        {**good, "gold": {"value": 1}}, {**good, "problem": None}, {**good, "generation": []}, "",
        {**good, "finish_reason": ["stop", "stop"]}, good,
    ])  # fmt: skip
    done = _cortbench("import", "jsonl", str(source), "-o", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"skipped {source}:2: not JSON (Expecting value: line 1 column 1 (char 0))",
        f"skipped {source}:3: not a JSON object but a list",
        f"skipped {source}:4: no generation field (looked for generation, generations, response, responses, "
        "completion; name it with --field generation=NAME)",
        f"skipped {source}:5: generation[1] is a number, not a string",
        f"skipped {source}:6: gold is an object, not a string or a number",
        f"skipped {source}:7: problem is null, not a string",
        f"skipped {source}:8: generation is an empty list: no generation",
        f"skipped {source}:10: finish_reason is a list: give a string, or one string per generation (1)",
    ]
    assert done.stdout.strip().endswith("skipped 8 bad rows")
    assert done.stdout.startswith("imported 2 rows from 1 file")
    assert len(read_run(tmp_path / "run")[1]) == 2


def test_a_file_without_a_good_row_is_an_error_and_no_run_is_left(tmp_path):
    good = _write_jsonl(tmp_path / "good.jsonl", [{"problem": "P", "gold": "1", "generation": "\\boxed{1}"}])
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "P"}, "oops"])
    run = tmp_path / "runs" / "new"
    done = _cortbench("import", "jsonl", str(good), str(bad), "-o", str(run))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.splitlines()[-1]
        == f"error: {bad}: none of its 2 rows could be imported; nothing was written"
    )
    assert len(done.stderr.splitlines()) == 3  # the two bad rows, then the error
    assert not (tmp_path / "runs").exists()  # nor the folders made for it

    empty = _write_jsonl(tmp_path / "empty.jsonl", [""])
    done = _cortbench("import", "jsonl", str(empty), "-o", str(run))
    assert (done.returncode, done.stderr.strip()) == (
        1,
        f"error: {empty}: it holds no rows; nothing was written",
    )

    for args, message in [
        (["csv", str(good)], "error: unknown import format 'csv'; known: jsonl, lm-eval"),
        (["jsonl", str(tmp_path / "absent.jsonl")],
         f"error: {tmp_path / 'absent.jsonl'}: no such file or folder"),
        (["lm-eval", str(tmp_path)], f"error: {tmp_path}: no samples_*.jsonl files in this folder (lm_eval "
                                     "--log_samples --output_path DIR writes them)"),
        (["jsonl", str(good), "--field", "gold"],
         "error: --field takes KEY=NAME (e.g. gold=answer), not 'gold'"),
    ]:  # fmt: skip
        done = CliRunner().invoke(app, ["import", *args, "-o", str(run)])  # in process: faster, same lines
        assert (done.exit_code, done.stderr.strip()) == (1, message)
    assert not (tmp_path / "runs").exists()


def test_an_existing_run_is_replaced_only_with_overwrite(tmp_path):
    source = _write_jsonl(tmp_path / "a.jsonl", [{"problem": "P", "gold": "1", "generation": "\\boxed{1}"}])
    run = tmp_path / "run"
    import_run("jsonl", [source], run)
    with pytest.raises(ImportFailed, match="already holds a run; pass --overwrite"):
        import_run("jsonl", [source], run)
    bad = _write_jsonl(tmp_path / "b.jsonl", ["oops"])
    with pytest.raises(ImportFailed, match="its one row is bad; nothing was written"):
        import_run("jsonl", [bad], run, overwrite=True)
    assert len(read_run(run)[1]) == 1  # a failed --overwrite keeps the old run
    import_run("jsonl", [source, source], run, overwrite=True, task="again")  # a file given twice: read once
    assert [r.task for r in read_run(run)[1]] == ["again"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ImportFailed, match="holds files but no run"):
        import_run("jsonl", [source], tmp_path / "other", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.jsonl",
        "b.jsonl",
        "other",
        "run",
    ]  # no leftovers


@pytest.mark.slow  # about 10 s: four commands, each a Python process
def test_an_imported_run_is_read_by_score_analyze_leaderboard_and_check(tmp_path):
    run = tmp_path / "runs" / "lm"
    done = _cortbench("import", "lm-eval", str(LM_EVAL), "-o", str(run))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"imported 4 rows from 2 files into {run}: 34 samples (aime24 32, amc23 2), 34 tool calls "
        "(10 failed); skipped 0 bad rows"
    )
    site = tmp_path / "site"
    for args in (["score", str(run)], ["analyze", str(run)], ["leaderboard", str(run), "-o", str(site)],
                 ["check", str(run), "--baseline", str(run)]):  # fmt: skip
        done = _cortbench(*args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["tasks"]["aime24"]["code"]["code_success_rate"] == pytest.approx(22 / 32)
    assert results["analysis"]["trajectories"] == 34
    page = (site / "index.html").read_text()
    assert "lm-eval import: scripted" in page
