"""The vLLM backend: runs only on a CUDA host with vLLM installed (skipped elsewhere)."""

import importlib.util

import pytest

from cortbench.harness.backends import get_backend
from cortbench.harness.hints import get_hint_policy
from cortbench.harness.rollout import Limits, run_rollout

pytestmark = pytest.mark.gpu


def _cuda() -> bool:
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="needs vLLM and a CUDA GPU")
async def test_vllm_rollout_with_the_tiny_model(tiny_model_dir, sandbox):
    gen = get_backend(
        "vllm", model=tiny_model_dir, temperature=0.0, max_model_len=512, gpu_memory_utilization=0.3
    )
    async with sandbox.session() as kernel:
        out = await run_rollout(
            "Let me compute.\n", gen, kernel, Limits(max_total_tokens=200), hints=get_hint_policy("code")
        )
    assert out.generated_tokens > 0 and out.finish_reason in ("stop", "length")
