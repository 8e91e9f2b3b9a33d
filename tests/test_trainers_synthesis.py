"""Hint-Engineering synthesis: a hint goes where a behaviour was detected, the trajectory is cut
there and the model continues through the real rollout loop with the interpreter."""

from __future__ import annotations

import asyncio
import json

import pytest

from cortbench.harness.records import InsertedHint, ToolCall, TrajectoryRecord
from cortbench.harness.rollout import Completion, Limits
from cortbench.harness.sandbox import LocalSandbox, SandboxConfig
from cortbench.tasks.prompts import COT_INSTRUCTION, DELAYED_CODE_HINT, DISTRUST_HINT
from cortbench.trainers.config import ConfigError
from cortbench.trainers.synthesis import (
    DEFAULT_HINTS,
    engineer,
    engineered_hints,
    from_annotated,
    read_annotated,
)

PROMPT = "<user>What is 2^10 + 3^5?<eos><assistant>"
WORKED = "By hand: 2^2 = 4, 4 * 4 = 16, 16 * 16 = 256, 256 * 4 = 1024, so 2^10 = 1024.\n"
DELAYED = (
    "We need 2^10 first.\n" + WORKED
    + "```python\nx = 2 ** 10\nprint(x)\n```\n```output\n1024\n```\nSo the answer is \\boxed{1267}."
)  # fmt: skip
DISTRUST = (
    "```python\nx = 2 ** 10\nprint(x)\n```\n```output\n1024\n```\n"
    "Wait, is that right? Let me double-check manually: 2^5 = 32, 32 * 32 = 1024.\nSo \\boxed{1267}."
)


class Scripted:
    """A backend that answers each call with the next scripted completion and records its prompts."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.prompts = list(texts), []

    def render_chat(self, messages):
        return f"<user>{messages[0]['content']}<eos><assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, prompt, *, max_tokens, stop):
        self.prompts.append(prompt)
        text = self.texts.pop(0)
        fence = next((s for s in stop if text.endswith(s)), None)
        return Completion(text, "stop", len(text.split()), stop=fence)


def record(generation: str) -> TrajectoryRecord:
    calls = [ToolCall("x = 2 ** 10\nprint(x)", "1024", "ok", 0.0)]
    return TrajectoryRecord("toy", "1", 0, PROMPT, generation, "stop", gold="1267", tool_calls=calls)


def run(coro_factory):
    async def go():
        async with LocalSandbox(SandboxConfig(timeout_s=5, warm_kernels=1)) as sandbox:
            return await coro_factory(sandbox)

    return asyncio.run(go())


def test_delayed_computation_gets_the_code_hint_and_the_model_continues_with_the_interpreter():
    generator = Scripted(["print(2 ** 10 + 3 ** 5)\n```\n", "So the answer is \\boxed{1267}."])
    out = run(lambda sb: engineer(record(DELAYED), generator, sb, Limits(), max_hints=3))
    cut = DELAYED.index("By hand")
    hint = DEFAULT_HINTS["delayed_computation"]
    assert hint == DELAYED_CODE_HINT + "\n```python\n"
    assert out.generation == (
        "We need 2^10 first.\n"
        + hint
        + "print(2 ** 10 + 3 ** 5)\n```\n```output\n1267\n```\nSo the answer is \\boxed{1267}."
    )
    assert [(h.point, h.offset, h.text) for h in out.hints] == [("before_code", cut, hint)]
    assert generator.prompts[0] == PROMPT + "We need 2^10 first.\n" + hint  # continued from the hint
    assert [c.output for c in out.tool_calls] == ["1267"]  # the cell before the cut is gone; the new one ran


def test_distrust_gets_its_hint_and_earlier_cells_keep_their_state():
    generator = Scripted(["So the answer is 1024 + 243.\n```python\nprint(x + 243)\n```\n", "\\boxed{1267}"])
    out = run(lambda sb: engineer(record(DISTRUST), generator, sb, Limits(), max_hints=3))
    cut = DISTRUST.index("Wait")
    assert out.generation.startswith(DISTRUST[:cut] + DISTRUST_HINT + "\nSo the answer is 1024 + 243.")
    assert [(h.point, h.offset) for h in out.hints] == [("after_output", cut)]
    assert [c.output for c in out.tool_calls] == ["1024", "1267"]  # x survived from the first cell
    assert out.generation.endswith("```output\n1267\n```\n\\boxed{1267}")
    assert out.segments and out.tokens.total > out.tokens.generated


def test_a_sampling_policys_own_hint_is_not_a_hint_engineering_hint():
    generator = Scripted(["So the answer is 1024 + 243.\n```python\nprint(x + 243)\n```\n", "\\boxed{1267}"])
    sampled = record("```python\n" + DISTRUST.removeprefix("```python\n"))
    sampled.hints = [InsertedHint("opening", 0, "```python\n")]  # the `code` policy opened the turn
    assert engineered_hints(sampled) == []
    out = run(lambda sb: engineer(sampled, generator, sb, Limits(), max_hints=3))
    assert [h.point for h in out.hints] == ["opening", "after_output"]
    assert [h.text for h in engineered_hints(out)] == [DISTRUST_HINT + "\n"]


def test_clean_trajectories_are_left_alone():
    clean = "```python\nx = 2 ** 10\nprint(x)\n```\n```output\n1024\n```\nSo \\boxed{1267}."
    generator = Scripted([])
    out = run(lambda sb: engineer(record(clean), generator, sb, Limits()))
    assert out.generation == clean and out.hints == [] and generator.prompts == []


def test_annotated_rows_continue_from_their_hint_or_stay_as_written(tmp_path):
    as_written = "Compute it.\n" + DISTRUST_HINT + "\nSo \\boxed{4}."
    rows = [
        {"problem": "What is 2 + 2?", "gt_answer": "4", "generation": "Adding by hand: 2 + 2 = 4.",
         "hints": [{"offset": 0, "kind": "delayed_computation"}]},
        {"prompt": PROMPT, "generation": as_written, "mode": "as_written",
         "hints": [{"offset": len("Compute it.\n"), "text": DISTRUST_HINT}]},
    ]  # fmt: skip
    path = tmp_path / "annotated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    generator = Scripted(["print(2 + 2)\n```\n", "So the answer is \\boxed{4}."])
    annotated = read_annotated(path, render=lambda text: generator.render_chat([{"content": text}]))
    out = run(lambda sb: asyncio.gather(*(from_annotated(a, generator, sb) for a in annotated)))
    assert out[0].generation.startswith(
        DEFAULT_HINTS["delayed_computation"] + "print(2 + 2)\n```\n```output\n4\n```\n"
    )
    assert out[0].prompt.startswith("<user>What is 2 + 2?") and out[0].gold == "4"
    assert out[0].hints[0].point == "before_code" and out[0].tool_calls[0].output == "4"
    assert out[1].generation == as_written and out[1].hints[0].offset == len("Compute it.\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "generation": "abc", "mode": "as_written",
                               "hints": [{"offset": 1, "kind": "result_distrust"}]}) + "\n")  # fmt: skip
    with pytest.raises(ConfigError, match="bad.jsonl:1: hints\\[0\\]: the generation does not hold its text"):
        read_annotated(bad)


def test_synthesis_with_the_code_writing_model_continues_through_the_loop(code_writing_model_dir):
    pytest.importorskip("transformers")
    from cortbench.harness.backends.hf import HFGenerator
    from cortbench.trainers.encoding import encode_trajectory

    generator = HFGenerator(code_writing_model_dir, temperature=0, device="cpu")
    prompt = generator.render_chat([{"role": "user", "content": "What is 12 * 2?" + COT_INSTRUCTION}])
    worked = "So 12 * 2 = 24, 24 * 1 = 24, 24 + 0 = 24, 24 - 0 = 24.\n"
    delayed = worked + "```python\nprint(12 * 2)\n```\n```output\n24\n```\nSo the answer is \\boxed{24}."
    start = TrajectoryRecord("toy", "1", 0, prompt, delayed, "stop", gold="24",
                             tool_calls=[ToolCall("print(12 * 2)", "24", "ok", 0.0)])  # fmt: skip
    # a hint in the words the warm start taught (the tiny BPE cannot spell the paper's hint)
    hint = "Let me compute this with python.\n```python\n"
    limits = Limits(max_total_tokens=300, max_tokens_per_call=300)
    out = run(lambda sb: engineer(start, generator, sb, limits, hints={"delayed_computation": hint}))
    assert out.generation.startswith(hint) and [(h.point, h.offset) for h in out.hints] == [
        ("before_code", 0)
    ]
    assert len(out.tool_calls) == 1 and out.tool_calls[0].ok  # the model's cell ran in the interpreter
    assert f"```\n```output\n{out.tool_calls[0].output}\n```\n" in out.generation[len(hint) :]
    encoded = encode_trajectory(generator.tokenizer, out, train_on_hints=True)
    trained = generator.tokenizer.decode(
        [t for t, m in zip(encoded.completion_ids, encoded.completion_mask) if m]
    )
    assert trained.startswith(hint) and "```output" not in trained  # hint trained, output never
