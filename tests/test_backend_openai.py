"""The OpenAI-compatible backend against a real llama.cpp server (SmolLM2) on loopback."""

import pytest
from conftest import free_port, llama_cpp_server, smollm2_path

from cortbench.harness.backends import BackendError, get_backend
from cortbench.harness.hints import get_hint_policy
from cortbench.harness.rollout import Limits, run_rollout


@pytest.fixture(scope="module")
def llama_server():
    with llama_cpp_server(smollm2_path()) as url:
        yield url


async def test_unreachable_server_fails_in_one_line():
    gen = get_backend(
        "openai", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", retries=2, backoff_s=0.01
    )
    with pytest.raises(BackendError, match="cannot reach"):
        await gen.complete("hi", max_tokens=4, stop=())


async def test_rollout_through_a_real_server_executes_code(llama_server, sandbox):
    gen = get_backend("openai", base_url=llama_server, temperature=0.0)
    problem = "What is 2**10? Compute it with python."
    # SmolLM2 opens a code block only when the prompt ends inside one (a code-inducing hint).
    prompt = f"<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
    async with sandbox.session() as kernel:
        limits = Limits(max_total_tokens=600, max_tool_calls=2)
        out = await run_rollout(prompt, gen, kernel, limits, hints=get_hint_policy("code"))
    assert out.tool_calls, out.generation  # the stripped fence was restored and the cell ran
    assert "```output\n" in out.generation
    assert out.generated_tokens > 0 and out.finish_reason in ("stop", "length")
