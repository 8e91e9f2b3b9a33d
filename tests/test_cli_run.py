"""`cortbench run` end to end on a tiny local model: records, clear errors, and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("transformers")


def _cortbench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", *args], capture_output=True, text=True, **kwargs
    )


@pytest.fixture
def toy_tasks(tmp_path):
    path = tmp_path / "toy.jsonl"
    path.write_text(
        "".join(
            json.dumps({"problem": f"What is {i} + {i}?", "gt_answer": str(2 * i)}) + "\n" for i in range(6)
        )
    )
    return str(path)


def _run_args(model: str, tasks: str, out: str) -> list[str]:
    return ["run", "--tasks", tasks, "--backend", "hf", "--model", model, "--n", "2", "--hint", "code",
            "--max-tokens", "160", "--max-tool-calls", "2", "--concurrency", "2", "-o", out]  # fmt: skip


def test_run_writes_records_and_refuses_to_overwrite(tiny_model_dir, toy_tasks, tmp_path):
    out = str(tmp_path / "run")
    done = _cortbench(*_run_args(tiny_model_dir, toy_tasks, out), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in open(os.path.join(out, "samples.jsonl"))]
    assert len(records) == 12
    assert {"task", "problem_id", "sample_idx", "prompt", "generation", "segments", "tool_calls", "finish_reason",
            "tokens", "timing"} <= set(records[0])  # fmt: skip
    assert json.load(open(os.path.join(out, "run.json")))["config"]["backend"] == "hf"
    again = _cortbench(*_run_args(tiny_model_dir, toy_tasks, out), timeout=300)
    assert again.returncode == 1 and "--resume" in again.stderr and "Traceback" not in again.stderr


def test_bad_task_file_is_one_clear_line(tmp_path):
    done = _cortbench(
        "run", "--tasks", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "r"), timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: task file {tmp_path / 'missing.jsonl'} does not exist"


def test_unknown_task_name_lists_the_known_ones(tmp_path):
    done = _cortbench("run", "--tasks", "aime42", "-o", str(tmp_path / "r"), timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "unknown task 'aime42'; known: cort_math, aime24, aime25" in done.stderr


def test_resume_after_kill_9_loses_and_duplicates_nothing(tiny_model_dir, toy_tasks, tmp_path):
    out = str(tmp_path / "run")
    samples = os.path.join(out, "samples.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "cortbench.harness.cli", *_run_args(tiny_model_dir, toy_tasks, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(samples) and sum(1 for _ in open(samples)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(line) for line in open(samples) if line.endswith("\n")]
    assert 3 <= len(before) < 12
    done = _cortbench(*_run_args(tiny_model_dir, toy_tasks, out), "--resume", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = [json.loads(line) for line in open(samples)]
    keys = [(r["task"], r["problem_id"], r["sample_idx"]) for r in after]
    assert len(keys) == len(set(keys)) == 12  # everything, each once
    assert after[: len(before)] == before  # what was written before the kill is untouched


def _one_problem(tmp_path, problem: str = "What is 2 + 2?", gold: str = "4") -> str:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"problem": problem, "gt_answer": gold}) + "\n")
    return str(path)


BASH_FIRST = [
    "I need scipy for this.\n```bash\npip install scipy\n```\n",
    "It is not there, so plain python.\n```python\nprint(2 + 2)\n```\n",
    "So the answer is \\boxed{4}.",
]


@pytest.mark.parametrize("report_stop", [True, False], ids=["server-says-stop", "server-strips-stop"])
def test_a_model_that_writes_a_bash_block_first_is_followed_to_its_answer(
    tiny_model_dir, tmp_path, report_stop
):
    from scripted_openai import scripted_server

    out = tmp_path / "run"
    with scripted_server(BASH_FIRST, report_stop=report_stop) as (url, requests):
        done = _cortbench("run", "--tasks", _one_problem(tmp_path), "--backend", "openai", "--base-url", url,
                          "--tokenizer", tiny_model_dir, "--n", "1", "-o", str(out), timeout=300,
                          env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert "```bash\npip install scipy\n```\nIt is not there" in record["generation"]
    assert record["generation"].endswith("```output\n4\n```\nSo the answer is \\boxed{4}.")
    assert [c["output"] for c in record["tool_calls"]] == ["4"] and record["finish_reason"] == "stop"
    assert len(requests) == 3
    assert "100.0" in done.stdout and "avg@k" in done.stdout  # graded at the end
    assert "1/1 samples" in done.stderr  # a plain progress line: stdout and stderr are not terminals
    assert max(map(len, done.stdout.splitlines())) <= 80


def test_the_token_budget_holds_with_interpreter_outputs(tiny_model_dir, tmp_path):
    from scripted_openai import scripted_server

    script = ["Big output.\n```python\nprint('w ' * 400)\n```\n", "Done \\boxed{1}."]
    with scripted_server(script) as (url, _):
        for budget in (100, 200, 900):  # the prompt is 78 tokens of the tiny tokenizer
            out = tmp_path / f"run{budget}"
            done = _cortbench("run", "--tasks", _one_problem(tmp_path), "--backend", "openai", "--base-url", url,
                              "--tokenizer", tiny_model_dir, "--n", "1", "--max-tokens", str(budget), "--no-score",
                              "-o", str(out), timeout=300)  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
            (record,) = [json.loads(line) for line in open(out / "samples.jsonl")]
            assert record["tokens"]["total"] <= budget, (budget, record["tokens"])


def test_a_failed_start_leaves_no_run_folder_and_the_corrected_command_runs(tiny_model_dir, tmp_path):
    from conftest import free_port

    out = tmp_path / "runs" / "x"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    done = _cortbench("run", "--tasks", _one_problem(tmp_path), "--backend", "openai", "--base-url", dead,
                      "--model", "m", "--tokenizer", tiny_model_dir, "-o", str(out), timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot reach" in done.stderr and "nothing was written" in done.stderr
    assert not out.exists()
    from scripted_openai import scripted_server

    with scripted_server(BASH_FIRST) as (url, _):
        again = _cortbench("run", "--tasks", _one_problem(tmp_path), "--backend", "openai", "--base-url", url,
                           "--tokenizer", tiny_model_dir, "--n", "1", "--no-score", "-o", str(out), timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    hide = "import sys; sys.modules['transformers'] = None; from cortbench.harness.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "run", "--tasks", _one_problem(tmp_path), "--backend", "openai",
         "--base-url", "http://127.0.0.1:9/v1", "--tokenizer", "some/tokenizer", "-o", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: the openai backend's --tokenizer needs transformers: pip install 'cortbench[hf]'"
    )


def test_ctrl_c_stops_a_run_at_once_and_keeps_every_finished_sample(tiny_model_dir, toy_tasks, tmp_path):
    out = tmp_path / "run"
    samples = out / "samples.jsonl"
    args = ["run", "--tasks", toy_tasks, "--backend", "hf", "--model", tiny_model_dir, "--n", "20", "--hint", "code",
            "--max-tokens", "512", "-o", str(out)]  # fmt: skip  # 120 samples: many minutes if not stopped
    proc = subprocess.Popen([sys.executable, "-m", "cortbench.harness.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (samples.exists() and samples.read_text()):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C did not stop the run within 60 s")
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert f"interrupted; finished samples are in {out}: continue with --resume" in stderr
    kept = [json.loads(line) for line in samples.read_text().splitlines()]
    assert 1 <= len(kept) < 120 and all(r["finish_reason"] != "error" for r in kept)
