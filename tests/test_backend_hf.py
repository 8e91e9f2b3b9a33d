"""The transformers backend on a tiny locally built model, inside the real rollout loop."""

import pytest

from cortbench.harness.backends import BackendError, get_backend
from cortbench.harness.hints import get_hint_policy
from cortbench.harness.rollout import Limits, run_rollout


def test_unknown_backend_and_missing_model_fail_clearly(tmp_path):
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        get_backend("nope")
    pytest.importorskip("transformers")
    with pytest.raises(BackendError, match="cannot load model"):
        get_backend("hf", model=str(tmp_path / "missing"))


async def test_completion_respects_the_token_budget(tiny_model_dir):
    gen = get_backend("hf", model=tiny_model_dir, temperature=0.0)
    completion = await gen.complete("Let me compute", max_tokens=7, stop=("```\n",))
    assert completion.tokens <= 7
    assert completion.finish_reason in ("stop", "length")
    assert gen.count_tokens("print(2 ** 10)") > 0


async def test_stop_string_ends_the_completion(tiny_model_dir):
    import torch

    torch.manual_seed(0)
    gen = get_backend("hf", model=tiny_model_dir, temperature=1.0, top_p=1.0)
    # A stop string of one frequent character makes a stop near certain within the budget.
    completions = [await gen.complete("Let me", max_tokens=60, stop=(" ",)) for _ in range(8)]
    stopped = [c for c in completions if c.stop == " "]
    assert stopped and all(c.text.endswith(" ") and c.finish_reason == "stop" for c in stopped)


async def test_rollout_with_a_real_model_and_sandbox(tiny_model_dir, sandbox):
    gen = get_backend("hf", model=tiny_model_dir, temperature=0.0)
    prompt = "Let me compute this with python.\n"
    async with sandbox.session() as kernel:
        limits = Limits(max_total_tokens=120, max_tool_calls=2)
        out = await run_rollout(prompt, gen, kernel, limits, hints=get_hint_policy("code"))
    assert out.finish_reason in ("stop", "length")
    assert out.generated_tokens > 0 and out.total_tokens >= out.generated_tokens + gen.count_tokens(prompt)
    assert len(out.tool_calls) <= 2


def test_backend_args_reach_the_backend_and_unknown_ones_fail_in_one_line(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"problem": "1+1?", "gt_answer": "2"}\n')
    done = subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "run", "--tasks", str(tasks), "--backend",
                           "hf", "--model", tiny_model_dir, "--backend-arg", "no_such_option=3", "-o",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: cannot load model") and "no_such_option" in done.stderr


def test_an_option_a_backend_does_not_take_is_a_backend_error():
    with pytest.raises(
        BackendError, match=r"backend 'openai': .*unexpected keyword argument 'no_such_option'"
    ):
        get_backend("openai", base_url="http://127.0.0.1:9/v1", no_such_option=3)
