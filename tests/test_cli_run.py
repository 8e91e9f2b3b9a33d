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
