"""The rollout loop against the real sandbox, with a scripted generator standing in for a model.

The generator replays fixed model text the way an OpenAI-style server does (it stops at the stop
string and strips it), so the loop's protocol behaviour can be pinned exactly: stops, state,
limits, the limit message, and what is never executed.
"""

from cortbench.harness.rollout import TOOL_LIMIT_MESSAGE, Completion, Limits, run_rollout


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
        words = text.split(" ")
        if len(text.split()) > max_tokens:
            return Completion(" ".join(words[:max_tokens]), "length", max_tokens)
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


async def test_unclosed_block_at_the_length_limit_is_not_executed(sandbox):
    gen = ScriptedGenerator(["```python\nimport os\nos.remove('x') and more and more words here"])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, Limits(max_total_tokens=6))
    assert out.finish_reason == "length"
    assert out.tool_calls == []


async def test_only_a_closing_python_fence_runs_code(sandbox):
    gen = ScriptedGenerator(["Use `x`\n```\nnot python\n```\n", "The end."])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel)
    assert out.tool_calls == [] and out.finish_reason == "stop"
    assert len(gen.calls) == 1


async def test_total_token_budget_counts_interpreter_output(sandbox):
    gen = ScriptedGenerator(["```python\nprint('w ' * 50)\n```\n", "more words here"])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, Limits(max_total_tokens=40))
    assert len(out.tool_calls) == 1
    assert out.finish_reason == "length"  # the 50-word output used up the budget


async def test_start_hint_opens_the_turn_and_is_not_counted_as_generated(sandbox):
    gen = ScriptedGenerator(["print(6 * 7)\n```\n", "It is \\boxed{42}."])
    async with sandbox.session() as kernel:
        out = await run_rollout("Q: ", gen, kernel, start="```python\n")
    assert out.generation.startswith("```python\nprint(6 * 7)\n```\n```output\n42\n```\n")
    assert out.generated_tokens == gen.count_tokens("print(6 * 7)\n```\n") + gen.count_tokens(
        "It is \\boxed{42}."
    )
    assert gen.calls[0]["prompt"] == "Q: ```python\n"
