"""Analyzers: tokens by segment, code statistics, library adoption, the tables and results.json."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from cortbench.analyzers.analyze import AnalysisError, analyze_run, join_labels
from cortbench.analyzers.code import cells_of, code_stats, error_kind
from cortbench.analyzers.libraries import imports_in, is_stdlib
from cortbench.analyzers.results_file import ResultsFileError, update_results
from cortbench.analyzers.tokens import APPROX, locate_segments, token_split
from cortbench.harness.fences import output_block, split_segments
from cortbench.harness.records import InsertedHint, TokenCounts, ToolCall, TrajectoryRecord
from cortbench.harness.store import RunStore
from cortbench.tasks.prompts import TOOL_LIMIT_MESSAGE

CONFIG = {"model": "tiny", "backend": "hf", "max_tool_calls": 3}


def _cortbench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", *args], capture_output=True, text=True, **kwargs
    )


def _record(parts, *, task="aime24", pid="0", idx=0, finish="stop", counted=True, limit_at=None, meta=None,
            hints=()):  # fmt: skip
    """A record as the runner builds it. `parts`: text strings and (code, output, status, error_name)
    tuples; `counted`: segment tokens = number of words (a stand-in for the model's tokenizer)."""
    generation, calls = "", []
    for part in parts:
        if isinstance(part, str):
            generation += part
            continue
        code, output, status, error_name = part
        calls.append(ToolCall(code, output, status, 0.5, error_name, status == "kernel_restarted"))
        shown = output + (TOOL_LIMIT_MESSAGE if len(calls) == limit_at else "")
        generation += f"```python\n{code}\n```\n" + output_block(shown)
    segments = split_segments(generation)
    for s in segments:
        s.tokens = len(s.text.split()) if counted else None
    return TrajectoryRecord(task, pid, idx, "prompt", generation, finish, gold="1", problem_meta=meta or {},
                            segments=segments, tool_calls=calls, hints=list(hints),
                            tokens=TokenCounts(generated=50, total=90, prompt=10))  # fmt: skip


def _write_run(path, records, config=CONFIG):
    with RunStore.open(path, config) as store:
        for r in records:
            store.append(r)
    return path


# --- imports -------------------------------------------------------------------------------------


def test_every_import_form_is_found_with_its_position():
    code = (
        "import numpy as np, sympy.abc\n"
        "from rdkit.Chem import Descriptors\n"
        "from . import sibling\n"
        "from .. pkg import x\n"
        "def f():\n"
        "    import itertools\n"
        "    m = __import__('fractions')\n"
        "    return importlib.import_module('networkx.algorithms')\n"
        "s = 'import os'  # import sys\n"
        "x = 'é'; import math\n"
        "__import__(name)\n"
        "__import__('rel', globals(), locals(), [], 1)\n"
        "import_module('scipy.optimize')\n"
    )
    found = imports_in(code)
    assert found.parseable
    assert [(i.name, i.form) for i in found.imports] == [
        ("numpy", "import"), ("sympy.abc", "import"), ("rdkit.Chem", "from"), ("itertools", "import"),
        ("fractions", "__import__"), ("networkx.algorithms", "import_module"), ("math", "import"),
        ("scipy.optimize", "import_module"),
    ]  # fmt: skip
    assert [i.top for i in found.imports][-3:] == ["networkx", "math", "scipy"]
    by_name = {i.name: i.offset for i in found.imports}
    assert code[by_name["rdkit.Chem"] :].startswith("from rdkit.Chem")
    assert code[by_name["math"] :].startswith("import math")  # a character offset, not UTF-8 bytes
    assert code[by_name["itertools"] :].startswith("import itertools")


def test_imports_nested_in_any_statement_are_found():
    code = (
        "try:\n    import scipy\nexcept ImportError:\n    import cmath\nelse:\n    pass\nfinally:\n    import os\n"
        "class A:\n    def m(self):\n        with open('f') as fh:\n            from collections import deque\n"
        "for i in range(2):\n    if i:\n        pass\n    else:\n        import random\n"
        "match x:\n    case 1:\n        import decimal\n"
        "async def g():\n    async with h():\n        import fractions\n"
    )
    assert [i.name for i in imports_in(code).imports] == [
        "scipy", "cmath", "os", "collections", "random", "decimal", "fractions",
    ]  # fmt: skip


def test_unparseable_cell_is_flagged_and_scanned_conservatively():
    found = imports_in("from rdkit import Chem\nimport numpy as np, os.path\nx = 'import sys'\nprint(Chem\n")
    assert not found.parseable
    assert [(i.name, i.form) for i in found.imports] == [
        ("rdkit", "regex"),
        ("numpy", "regex"),
        ("os.path", "regex"),
    ]
    assert imports_in("print(").imports == [] and not imports_in("print(").parseable
    assert imports_in("print(1)") == imports_in("print(1)") and imports_in("print(1)").parseable


def test_stdlib_flag():
    assert is_stdlib("itertools") and is_stdlib("os.path") and is_stdlib("fractions")
    assert not is_stdlib("sympy") and not is_stdlib("rdkit")


# --- cells and code statistics -------------------------------------------------------------------


def test_error_kinds_from_status_and_error_name():
    calls = {
        ("ok", None): None,
        ("output_truncated", None): None,
        ("error", "SyntaxError"): "SyntaxError",
        ("error", "NameError"): "NameError",
        ("error", None): "error",
        ("timeout", "TimeoutError"): "timeout",
        ("memory", "MemoryError"): "memory",
        ("killed", "SIGSEGV"): "killed",
        ("kernel_restarted", None): None,  # it ran; the kernel was replaced after it
        ("some_other_status", None): "some_other_status",
    }
    for (status, name), kind in calls.items():
        assert error_kind(ToolCall("x", "", status, 0.1, name)) == kind


def test_cells_pair_calls_with_blocks_and_find_unexecuted_and_unclosed_ones():
    record = _record(
        ["Compute.\n", ("print(1)", "1", "ok", None), "Again.\n", ("print(2)", "2", "ok", None),
         "Now without running:\n```python\nprint(3)\n```\nAnd cut:\n```python\nimport sympy\nx = ("],
        finish="length", limit_at=2,
    )  # fmt: skip
    segments = locate_segments(record)
    cells = cells_of(record, segments)
    assert [(c.index, c.state, c.call_index) for c in cells] == [
        (0, "executed", 0), (1, "executed", 1), (2, "not_executed", None), (3, "unclosed", None),
    ]  # fmt: skip
    for cell in cells:
        assert record.generation[cell.offset :].startswith(cell.code)
    assert cells[3].code == "import sympy\nx = ("
    stats = code_stats(record, cells, max_tool_calls=15)
    assert stats.tool_limit_hit  # the limit message is in the generation
    assert stats.unclosed_at_length and stats.not_executed == 1 and stats.blocks == 3 and stats.calls == 2


def test_executed_cells_are_numbered_by_their_tool_call():
    record = _record(["```python\nprint(0)\n```\nThat one did not run.\n", ("print(1)", "1", "ok", None)])
    cells = cells_of(record)
    assert [(c.index, c.state, c.code) for c in cells] == [
        (0, "executed", "print(1)"),
        (1, "not_executed", "print(0)"),
    ]
    assert cells[1].offset < cells[0].offset


def test_tool_limit_hit_from_the_configured_limit():
    calls = [("print(1)", "1", "ok", None)] * 3
    record = _record(["a\n", *calls, "b"])
    assert code_stats(record, cells_of(record), max_tool_calls=3).tool_limit_hit
    assert not code_stats(record, cells_of(record), max_tool_calls=4).tool_limit_hit
    assert not code_stats(record, cells_of(record), max_tool_calls=None).tool_limit_hit


# --- tokens --------------------------------------------------------------------------------------


def test_token_split_uses_record_counts_and_finds_the_final_answer():
    record = _record(
        ["Let us think about it.\n", ("x = 2\nprint(x)", "2", "ok", None),
         "So it is two, I think.\nThe answer is \\boxed{2} indeed.\n"],
    )  # fmt: skip
    split = token_split(record, locate_segments(record), record_label="hf:tiny")
    assert split.tokenizer == "hf:tiny"
    assert (split.code, split.output) == (4, 1)  # "x", "=", "2", "print(x)"; "2"
    # the trailing text has 11 words; the line with the box holds 32 of its 55 characters
    assert split.final_answer_chars == len("The answer is \\boxed{2} indeed.\n") == 32
    assert split.final_answer + split.reasoning == 5 + 11
    assert split.final_answer == 6  # 11 * 32 / 55 = 6.4
    assert split.generated == split.reasoning + split.code + split.final_answer
    assert split.response == split.generated + split.output + split.hints


def test_no_box_after_the_last_output_means_no_final_answer():
    record = _record(["The answer is \\boxed{3}.\n", ("print(3)", "3", "ok", None), "Confirmed.\n"])
    split = token_split(record, locate_segments(record), record_label="hf:tiny")
    assert split.final_answer == 0 and split.final_answer_chars == 0


def test_segment_tokens_absent_are_approximated_and_labelled():
    record = _record(["abcdefgh\n", ("print(1)", "1", "ok", None), "\\boxed{1}"], counted=False)
    split = token_split(record, locate_segments(record), record_label="hf:tiny")
    assert split.tokenizer == APPROX == "approx:chars/4"
    assert split.code == 2 and split.output == 1  # ceil(8/4), ceil(1/4)
    assert split.final_answer == 3 and split.reasoning == 3  # "\boxed{1}" 9 chars; "abcdefgh\n" 9 chars
    counted = token_split(record, locate_segments(record), record_label="x", counter=lambda t: [7] * len(t),
                          counter_label="hf:other")  # fmt: skip
    assert counted.tokenizer == "hf:other" and counted.code == 7


def test_records_without_segments_are_split_again():
    record = _record(["a b c\n", ("print(1)", "1", "ok", None), "\\boxed{1}"])
    record.segments = []
    segments = locate_segments(record)
    assert [s.kind for s in segments] == ["text", "code", "output", "text"]
    assert all(s.tokens is None for s in segments)


def test_inserted_hints_are_not_model_tokens():
    hint = "It looks tedious, and we can use python code to simplify the reasoning.\n"
    text = "Let me set it up.\n" + hint
    record = _record([text, ("print(1)", "1", "ok", None), "\\boxed{1}"], counted=False,
                     hints=[InsertedHint("before_code", len("Let me set it up.\n"), hint)])  # fmt: skip
    split = token_split(record, locate_segments(record), record_label="x")
    assert split.hints == round(len(hint) * ((len(text) + 3) // 4) / len(text))
    assert split.hints + split.reasoning == (len(text) + 3) // 4
    assert split.response - split.generated == split.hints + split.output


# --- analyze_run ---------------------------------------------------------------------------------


def _run_records():
    return [
        _record(["Use sympy.\n", ("import sympy as sp\nprint(sp.sqrt(4))", "2", "ok", None),
                 ("from rdkit import Chem\nprint(Chem)", "ModuleNotFoundError", "error", "ModuleNotFoundError"),
                 "\\boxed{2}"], task="cort_chem", pid="0", idx=0),
        _record(["Loop.\n", ("print(x)", "NameError", "error", "NameError"), ("while True: pass", "Timeout Error",
                 "timeout", "TimeoutError"), ("print(1", "SyntaxError", "error", "SyntaxError"), "b"],
                task="cort_chem", pid="0", idx=1, limit_at=3),
        _record(["No code here. \\boxed{1}"], task="aime24", pid="7", idx=0, counted=False),
        _record(["Math.\n", ("import math, itertools\nprint(math.pi)", "3.14", "output_truncated", None),
                 ("import numpy as np\n", "", "kernel_restarted", None), "```python\nimport rdkit\n"],
                task="aime24", pid="7", idx=1, finish="length"),
    ]  # fmt: skip


def test_analyze_run_writes_tables_and_summary(tmp_path):
    run = _write_run(tmp_path / "run", _run_records())
    analysis = analyze_run(run)
    t, c, i = analysis.trajectories, analysis.cells, analysis.imports
    assert (
        len(t) == 4 and len(c) == 8 and set(i["module"]) == {"sympy", "rdkit", "math", "itertools", "numpy"}
    )
    for name in ("trajectories", "cells", "imports"):
        assert pd.read_parquet(run / "analysis" / f"{name}.parquet").shape == getattr(analysis, name).shape
    assert list(t["tokenizer"]) == ["hf:tiny", "hf:tiny", APPROX, "hf:tiny"]
    assert list(t["chemistry"]) == [True, True, False, False]
    assert list(t["tool_limit_hit"]) == [False, True, False, False]
    assert list(t["unclosed_at_length"]) == [False, False, False, True]
    summary = json.loads((run / "results.json").read_text())["analysis"]
    assert summary["tokenizers"] == {"hf:tiny": 3, APPROX: 1}
    chem = summary["tasks"]["cort_chem"]["code"]
    assert chem["code_usage_rate"] == 1.0 and chem["code_success_rate"] == pytest.approx(1 / 5)
    assert chem["error_kinds"] == {"ModuleNotFoundError": 1, "NameError": 1, "timeout": 1, "SyntaxError": 1}
    aime = summary["tasks"]["aime24"]["code"]
    # its one call ran, then its kernel was replaced: a success (ToolCall.ok), counted as a restart
    assert aime["code_usage_rate"] == 0.5 and aime["code_success_rate"] == 1.0
    assert aime["error_kinds"] == {} and aime["unclosed_at_length"] == 1
    assert summary["rdkit"]["adoption"] == 0.5 and summary["rdkit"]["chemistry_trajectories"] == 2
    libs = summary["all"]["libraries"]
    assert libs["rdkit"]["trajectories"] == 2 and libs["rdkit"]["executed_adoption"] == 0.25  # one unclosed
    assert libs["math"]["stdlib"] and not libs["sympy"]["stdlib"]
    assert summary["tasks"]["cort_chem"]["unparseable_cells"] == 1  # "print(1"
    first = i[(i["module"] == "rdkit") & (i["sample_idx"] == 0)].iloc[0]
    gen = _run_records()[0].generation
    assert first["first_cell_index"] == 1 and gen[first["first_offset"] :].startswith(
        "from rdkit import Chem"
    )
    row = c[(c["task"] == "aime24") & (c["sample_idx"] == 1)]
    assert list(row["state"]) == ["executed", "executed", "unclosed"]
    assert list(row["imports"].map(list)) == [["math", "itertools"], ["numpy"], ["rdkit"]]


def test_results_json_merge_keeps_other_keys(tmp_path):
    run = _write_run(tmp_path / "run", _run_records()[:1])
    (run / "results.json").write_text(json.dumps({"schema_version": 1, "tasks": {"x": 1}, "analysis": "old"}))
    grade = {"task": "cort_chem", "problem_id": "0", "sample_idx": 0, "correct": True}
    (run / "grades.jsonl").write_text(json.dumps(grade) + "\n")
    assert analyze_run(run).trajectories["correct"].tolist() == [True]
    data = json.loads((run / "results.json").read_text())
    assert data["tasks"] == {"x": 1} and data["schema_version"] == 1 and data["analysis"]["trajectories"] == 1
    (run / "results.json").write_text("{not json")
    with pytest.raises(ResultsFileError, match="not overwriting"):
        update_results(run, {"analysis": {}})
    assert (run / "results.json").read_text() == "{not json"


def test_cell_and_trajectory_labelers_join_by_key(tmp_path):
    run = _write_run(tmp_path / "run", _run_records())

    def purpose(record):
        return [{"cell_index": c.index, "purpose": "verification", "purpose_evidence": c.code[:5]}
                for c in cells_of(record) if c.state == "executed"]  # fmt: skip

    def behaviours(record):
        return {"behaviour_spans": [{"kind": "distrust", "start": 0, "end": 1}] if record.sample_idx else []}

    analysis = analyze_run(run, cell_labelers=[purpose], trajectory_labelers=[behaviours], write=False)
    assert list(analysis.cells["purpose"].isna()) == [False] * 7 + [True]  # the unclosed cell has no label
    assert analysis.trajectories["behaviour_spans"].map(len).tolist() == [0, 1, 0, 1]
    assert analysis.summary["labelers"]["cell"][0].endswith("purpose")
    bad = pd.DataFrame(
        [{"task": "aime24", "problem_id": "7", "sample_idx": 0, "cell_index": 9, "purpose": "x"}]
    )
    with pytest.raises(AnalysisError, match="match no row"):
        join_labels(analysis.cells.drop(columns=["purpose", "purpose_evidence"]), bad)


def test_labels_from_forked_workers_equal_the_serial_ones(tmp_path, monkeypatch):
    import cortbench.analyzers.analyze as analyze

    run = _write_run(tmp_path / "run", _run_records())
    serial = analyze_run(run, write=False)
    monkeypatch.setattr(analyze, "PARALLEL_FROM", 1)
    parallel = analyze_run(run, write=False)
    pd.testing.assert_frame_equal(serial.cells, parallel.cells)
    pd.testing.assert_frame_equal(serial.trajectories, parallel.trajectories)
    assert serial.summary["behaviours"] == parallel.summary["behaviours"]


def test_analyze_command_errors_are_one_line(tmp_path):
    done = _cortbench("analyze", str(tmp_path / "missing"), timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {tmp_path / 'missing'} is not a run directory (no samples.jsonl)"


@pytest.mark.slow
def test_analyze_a_real_run(tiny_model_dir, tmp_path):
    tasks = tmp_path / "toy.jsonl"
    tasks.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "gt_answer": str(2 * i)}) + "\n"
                             for i in range(2)))  # fmt: skip
    out = tmp_path / "run"
    done = _cortbench("run", "--tasks", str(tasks), "--backend", "hf", "--model", tiny_model_dir, "--n", "2",
                      "--hint", "code", "--max-tokens", "160", "--max-tool-calls", "2", "-o", str(out),
                      timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    done = _cortbench("analyze", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "code per task" in done.stdout and "tables:" in done.stdout
    assert "inefficient behaviours" in done.stdout and "library adoption" in done.stdout
    summary = json.loads((out / "results.json").read_text())["analysis"]
    assert set(summary["behaviours"]["all"]) == {"delayed_computation", "result_distrust"}
    assert {"delayed_computation", "result_distrust", "behaviour_spans"} <= set(
        pd.read_parquet(out / "analysis" / "trajectories.parquet").columns
    )  # fmt: skip
    trajectories = pd.read_parquet(out / "analysis" / "trajectories.parquet")
    assert len(trajectories) == 4 and set(trajectories["tokenizer"]) == {f"hf:{tiny_model_dir}"}
    assert (out / "analysis" / "cells.parquet").is_file() and (out / "analysis" / "imports.parquet").is_file()
    records = [json.loads(line) for line in open(out / "samples.jsonl")]
    segment_total = sum(s["tokens"] for r in records for s in r["segments"])
    assert trajectories["tokens_response"].sum() == segment_total
    assert "analysis" in json.loads((out / "results.json").read_text())
    # the same records without segment counts, counted again with the model's tokenizer
    stripped = [TrajectoryRecord.from_dict(r) for r in records]
    for r in stripped:
        for s in r.segments:
            s.tokens = None
    recount = analyze_run(_write_run(tmp_path / "stripped", stripped), tiny_model_dir, write=False)
    assert set(recount.trajectories["tokenizer"]) == {f"hf:{tiny_model_dir}"}
    assert recount.trajectories["tokens_response"].sum() == segment_total


def test_analyze_tables_are_readable_in_80_columns(tmp_path):
    """Piped (no TTY) at COLUMNS=80: no line wider, no header or task cut to "…" ("traj…")."""
    import os

    records = _run_records()
    for r in records:
        r.task = r.task.replace("aime24", "olympiad_bench")
    run = _write_run(tmp_path / "run", records)
    done = _cortbench("analyze", str(run), timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert max(map(len, done.stdout.splitlines())) <= 80 and "…" not in done.stdout, done.stdout
    for word in ("trajectories", "success %", "unparseable", "olympiad_bench", "reasoning", "generated %",
                 "first cell", "delayed computation", "ModuleNotFoundError"):  # fmt: skip
        assert word in done.stdout, word
