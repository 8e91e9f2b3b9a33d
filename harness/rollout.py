"""The tool-integrated rollout loop: generate until a python block closes, run it, append the
output block, continue. Each trajectory is its own coroutine, so trajectories never wait for each
other (no synchronous rounds where the whole batch waits for its slowest sample).

Protocol facts (CoRT): at most 15 tool calls, the last allowed one's output ends with the limit
message, after which code is no longer executed; at most 32,768 tokens per call and in total.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .fences import STOP_STRINGS, closed_code, output_block, restore_stop
from .records import ToolCall
from .sandbox import KernelSession

TOOL_LIMIT_MESSAGE = (
    "\n\n[SYSTEM]\nYou have exceeded the allowed number of code executions. You can no longer write or "
    "run code. Please continue solving the problem using your reasoning and analytical skills."
)

FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class Limits:
    """Protocol limits; defaults are the paper's evaluation settings."""

    max_tool_calls: int = 15
    max_tokens_per_call: int = 32768
    max_total_tokens: int = 32768  # prompt + all turns + interpreter outputs
    tool_limit_message: str = TOOL_LIMIT_MESSAGE


@dataclass
class Completion:
    """One backend call's result."""

    text: str  # without the stop string if the server strips it (restored by the loop)
    finish_reason: Literal["stop", "length"]
    tokens: int  # generated tokens
    stop: str | None = None  # the stop string that ended it (None at end of sequence); backends must say


class Generator(Protocol):
    """What the loop needs from a backend: render a chat, continue a raw prompt, count tokens."""

    def render_chat(self, messages: list[dict[str, str]]) -> str: ...

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...


@dataclass
class Rollout:
    """A finished trajectory, before it becomes a record."""

    generation: str = ""
    finish_reason: FinishReason = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)
    generated_tokens: int = 0
    total_tokens: int = 0
    generation_s: float = 0.0
    tools_s: float = 0.0


async def run_rollout(
    prompt: str, generator: Generator, kernel: KernelSession, limits: Limits = Limits(), *, start: str = ""
) -> Rollout:
    """Drive one trajectory to its end; the kernel keeps the state of all its cells.

    `start` opens the assistant's turn (a hint such as CoRT's Prompt-Hint, or "```python\n" to make a
    small model write code): it is part of the trajectory, but not counted as model-written.
    """
    out = Rollout(generation=start)
    prompt_tokens = generator.count_tokens(prompt)
    inserted_tokens = generator.count_tokens(start) if start else 0  # hints and interpreter outputs
    while True:
        budget = min(
            limits.max_tokens_per_call,
            limits.max_total_tokens - prompt_tokens - out.generated_tokens - inserted_tokens,
        )
        if budget <= 0:
            out.finish_reason = "length"
            break
        can_run = len(out.tool_calls) < limits.max_tool_calls
        start = time.perf_counter()
        completion = await generator.complete(
            prompt + out.generation, max_tokens=budget, stop=STOP_STRINGS if can_run else ()
        )
        out.generation_s += time.perf_counter() - start
        out.generated_tokens += completion.tokens
        out.generation += restore_stop(completion.text, completion.stop)  # servers strip the fence
        code = closed_code(out.generation) if completion.finish_reason == "stop" and can_run else None
        if code is None:
            out.finish_reason = completion.finish_reason
            break
        start = time.perf_counter()
        result = await kernel.run(code)
        out.tools_s += time.perf_counter() - start
        out.tool_calls.append(
            ToolCall(
                code,
                result.output,
                str(result.status),
                result.duration_s,
                result.error_name,
                result.kernel_restarted,
            )
        )
        shown = result.output
        if len(out.tool_calls) == limits.max_tool_calls:
            shown += limits.tool_limit_message
        block = output_block(shown)
        out.generation += block
        inserted_tokens += generator.count_tokens(block)
    out.total_tokens = prompt_tokens + out.generated_tokens + inserted_tokens
    return out
