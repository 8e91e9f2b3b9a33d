"""The rollout loop against the real sandbox, with a scripted generator standing in for a model.

The generator replays fixed model text the way an OpenAI-style server does (it stops at the stop
string and strips it), so the loop's protocol behaviour can be pinned exactly: stops, state,
limits, the limit message, and what is never executed.
"""

import re

import pytest

from cortbench.harness.fences import split_segments
from cortbench.harness.hints import FixedHints, HintError, get_hint_policy
from cortbench.harness.rollout import Completion, Limits, run_rollout
from cortbench.tasks.prompts import TOOL_LIMIT_MESSAGE


class ScriptedGenerator:
    """Returns the next scripted turn on each call; counts a token per whitespace-separated word."""

    def __init__(self, turns: list[str]) -> None:
        self.turns = list(turns)
        self.calls: list[dict] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        self.calls.append({"prompt": prompt, "max_tokens": max_tokens, "stop": stop})
        text = self.turns.pop(0)
        if len(text.split()) > max_tokens:
            cut = re.match(rf"(?:\s*\S+){{{max_tokens}}}", text).group(0)
            return Completion(cut, "length", max_tokens)
        for s in stop:
            if text.endswith(s):
                return Completion(text[: -len(s)], "stop", self.count_tokens(text), stop=s)
        return Completion(text, "stop", self.count_tokens(text))


async def test_cells_run_in_one_stateful_kernel(sandbox):
    gen = ScriptedGenerator(
        [
            "Let me compute.\n```python\nx = 2 ** 10\nprint(x)\n```\n",
            "Now double it.\n```python\nprint(2 * x)\n```\n",
            "So the answer is \\boxed{2048}.",
        ]
    )
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel)
    assert out.generation == (
        "Let me compute.\n```python\nx = 2 ** 10\nprint(x)\n```\n```output\n1024\n```\n"
        "Now double it.\n```python\nprint(2 * x)\n```\n```output\n2048\n```\n"
        "So the answer is \\boxed{2048}."
    )
    assert [c.output for c in out.tool_calls] == ["1024", "2048"]
    assert out.finish_reason == "stop"
    assert gen.calls[1]["prompt"].endswith("```output\n1024\n```\n")  # the model continues after the output
    assert out.total_tokens > out.generated_tokens > 0


async def test_tool_limit_message_and_no_execution_after_it(sandbox):
    gen = ScriptedGenerator(
        [
            "```python\nprint(1)\n```\n",
            "```python\nprint(2)\n```\n",
            "```python\nprint(3)\n```\nDone \\boxed{3}",
        ]
    )
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, Limits(max_tool_calls=2))
    assert [c.output for c in out.tool_calls] == ["1", "2"]
    assert f"```output\n2{TOOL_LIMIT_MESSAGE}\n```\n" in out.generation
    assert gen.calls[2]["stop"] == ()  # after the limit, generation no longer stops at code
    assert out.generation.endswith("```python\nprint(3)\n```\nDone \\boxed{3}")
    assert out.finish_reason == "tool_limit"  # it ended on its own, after its last allowed call


async def test_unclosed_block_at_the_length_limit_is_not_executed(sandbox):
    gen = ScriptedGenerator(["```python\nimport os\nos.remove('x') and more and more words here"])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, Limits(max_total_tokens=6))
    assert out.finish_reason == "length"
    assert out.tool_calls == []


async def test_a_block_closed_at_the_end_of_the_sequence_runs_and_its_output_starts_a_line(sandbox):
    gen = ScriptedGenerator(["```python\nprint(1)\n```", "Done."])  # no newline: the model ended there
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel)
    assert out.generation == "```python\nprint(1)\n```\n```output\n1\n```\nDone."
    assert [s.kind for s in split_segments(out.generation)] == ["code", "output", "text"]


async def test_only_a_closing_python_fence_runs_code(sandbox):
    gen = ScriptedGenerator(["Use `x`\n```\n", "not python\n```\n", "The end."])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel)
    assert out.tool_calls == [] and out.finish_reason == "stop"
    assert out.generation == "Use `x`\n```\nnot python\n```\nThe end."  # the fences did not end the turn


async def test_a_bash_block_does_not_end_the_trajectory(sandbox):
    """Real models write `pip install` in a bash block first: the loop goes on, runs nothing for it,
    spends no tool call on it, and the python block after it runs."""
    gen = ScriptedGenerator(
        [
            "I need scipy.\n```bash\npip install scipy\n```\n",
            "Without it, then.\n```python\nprint(sum(range(5)))\n```\n",
            "So \\boxed{10}.",
        ]
    )
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, Limits(max_tool_calls=1))
    assert [c.code for c in out.tool_calls] == ["print(sum(range(5)))"]
    assert out.generation.endswith("```output\n10" + TOOL_LIMIT_MESSAGE + "\n```\nSo \\boxed{10}.")
    assert "```bash\npip install scipy\n```\nWithout it" in out.generation
    assert out.finish_reason == "tool_limit" and len(gen.calls) == 3


async def test_total_token_budget_counts_interpreter_output(sandbox):
    gen = ScriptedGenerator(["```python\nprint('w ' * 50)\n```\n", "more words here"])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, Limits(max_total_tokens=40))
    assert len(out.tool_calls) == 1  # the cell ran and is recorded
    assert out.finish_reason == "length"  # its 50-word output does not fit the budget
    assert out.total_tokens <= 40 and "```output" not in out.generation


async def test_the_token_budget_holds_exactly_with_outputs_and_hints(sandbox):
    policy = FixedHints(opening_text="Let me think.\n", after_output_text="Check it again.\n")
    for budget in range(2, 30):  # every place the budget can run out: hint, turn, output, hint
        gen = ScriptedGenerator(["a b\n```python\nprint('x y z')\n```\n"] * 10)
        async with sandbox.session() as kernel:
            out = await run_rollout("Q: ", gen, kernel, Limits(max_total_tokens=budget), hints=policy)
        assert out.total_tokens <= budget, budget
        assert out.total_tokens == 1 + gen.count_tokens(out.generation), budget  # each token counted once
        assert out.finish_reason == "length", budget


async def test_opening_hint_starts_the_turn_and_is_not_counted_as_generated(sandbox):
    gen = ScriptedGenerator(["print(6 * 7)\n```\n", "It is \\boxed{42}."])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, hints=get_hint_policy("code"))
    assert out.generation.startswith("```python\nprint(6 * 7)\n```\n```output\n42\n```\n")
    assert out.generated_tokens == gen.count_tokens("print(6 * 7)\n```\n") + gen.count_tokens(
        "It is \\boxed{42}."
    )
    assert gen.calls[0]["prompt"] == "Q: ```python\n"
    assert [(h.point, h.offset, h.text) for h in out.hints] == [("opening", 0, "```python\n")]


async def test_hints_before_code_and_after_output_are_inserted_and_recorded(sandbox):
    gen = ScriptedGenerator(
        [
            "Summing by hand: 1+2+...+100 is long.\n```python",  # stops as the block opens
            "\nprint(sum(range(101)))\n```\n",
            "So \\boxed{5050}.",
        ]
    )
    policy = FixedHints(before_code_text="Let me use code.", after_output_text="Trust it.\n")
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, hints=policy)
    assert out.generation == (
        "Summing by hand: 1+2+...+100 is long.\nLet me use code.\n```python\nprint(sum(range(101)))\n```\n"
        "```output\n5050\n```\nTrust it.\nSo \\boxed{5050}."
    )
    assert [(h.point, out.generation[h.offset : h.offset + len(h.text)]) for h in out.hints] == [
        ("before_code", "Let me use code.\n"),
        ("after_output", "Trust it.\n"),
    ]
    assert "```python" in gen.calls[0]["stop"]
    assert gen.calls[1]["prompt"].endswith("Let me use code.\n```python")
    assert out.generated_tokens == sum(gen.count_tokens(t) for t in (
        "Summing by hand: 1+2+...+100 is long.\n```python", "\nprint(sum(range(101)))\n```\n", "So \\boxed{5050}."
    ))  # fmt: skip
    assert out.total_tokens == 1 + out.generated_tokens + out.inserted_tokens


async def test_code_openings_are_only_watched_when_the_policy_asks(sandbox):
    gen = ScriptedGenerator([".\n```python\nprint(1)\n```\n", "Done."])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, hints=get_hint_policy("prompt-hint"))
    assert "```python" not in gen.calls[0]["stop"]
    assert out.hints[0].point == "opening" and out.generation.startswith("Okay, let's try")
    assert len(out.tool_calls) == 1


def test_unknown_hint_policy_is_a_clear_error():
    with pytest.raises(HintError, match="unknown hint policy 'nope'; known: code, none, prompt-hint"):
        get_hint_policy("nope")
