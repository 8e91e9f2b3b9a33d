"""The tool-integrated rollout loop: generate until a python block closes, run it, append the
output block, continue. Each trajectory is its own coroutine, so trajectories never wait for each
other (no synchronous rounds where the whole batch waits for its slowest sample). A hint policy
(hints.py) may insert text when the turn opens, before a code block and after an output.

Protocol facts (CoRT): at most 15 tool calls, the last allowed one's output ends with the limit
message, after which code is no longer executed; at most 32,768 tokens per call and in total.

The total budget holds exactly: an interpreter output or hint that would not fit ends the
trajectory with finish_reason "length" (the cell that produced it is still recorded). A fence
that closes or opens a block other than python (```bash, ```text, a plain ```) does not end the
turn: generation continues, as in CoRT's own loop, but unlike CoRT it spends no tool call (only
executed cells count toward the 15); the token budget bounds such continuations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..tasks.prompts import TOOL_LIMIT_MESSAGE
from ..tasks.spec import CORT_PROTOCOL
from .fences import OPEN_PYTHON, STOP_STRINGS, closed_code, output_block, restore_stop
from .hints import HintPoint, HintPolicy
from .records import FinishReason, InsertedHint, ToolCall
from .sandbox import KernelSession, SandboxError

NO_HINTS = HintPolicy()

ERROR_CHARS = 2000  # of an exception's text kept in a record's `error`


class GenerationUnavailable(RuntimeError):
    """Raised by a Generator whose backend cannot be reached at all (down, unreachable, failing
    every retry): the whole run stops, resumably. Any other exception a trajectory meets (a
    request the backend rejects, a hint policy's bug, a tokenizer error) ends only that
    trajectory, recorded with finish_reason "error" and the exception in `error`."""


# What stops a whole run (resumably) instead of one trajectory: a backend or a sandbox that is down.
OUTAGES = (GenerationUnavailable, SandboxError)


@dataclass(frozen=True)
class Limits:
    """Protocol limits; defaults are the paper's evaluation settings (tasks.spec.CORT_PROTOCOL)."""

    max_tool_calls: int = CORT_PROTOCOL.max_tool_calls
    max_tokens_per_call: int = CORT_PROTOCOL.max_tokens
    max_total_tokens: int = CORT_PROTOCOL.max_tokens  # prompt + all turns + interpreter outputs
    tool_limit_message: str = TOOL_LIMIT_MESSAGE

    @classmethod
    def within_context(
        cls, generator: object, *, max_tool_calls: int = CORT_PROTOCOL.max_tool_calls,
        max_tokens: int = CORT_PROTOCOL.max_tokens, max_tokens_per_call: int | None = None,
    ) -> Limits:  # fmt: skip
        """The limits of a run on `generator`: the token budgets (`max_tokens` in total,
        `max_tokens_per_call` per call, default the same) capped by the model's context length
        where the backend knows it (`context_length`): a small model's window may be shorter."""
        context = getattr(generator, "context_length", None) or max_tokens
        per_call = max_tokens if max_tokens_per_call is None else max_tokens_per_call
        return cls(max_tool_calls=max_tool_calls, max_tokens_per_call=min(per_call, context),
                   max_total_tokens=min(max_tokens, context))  # fmt: skip


@dataclass
class Completion:
    """One backend call's result."""

    text: str  # without the stop string if the server strips it (restored by the loop)
    finish_reason: Literal["stop", "length"]
    tokens: int  # generated tokens
    stop: str | None = None  # the stop string that ended it (None at end of sequence); backends must say


class Generator(Protocol):
    """What the loop needs from a backend: render a chat, continue a raw prompt, count tokens.

    A backend may also declare `max_concurrency`: the completions it can serve at once (1 for an
    in-process engine that generates one sequence at a time; absent or None: no limit). The runner
    never keeps more trajectories in flight than that (runner.concurrency_for).
    """

    def render_chat(self, messages: list[dict[str, str]]) -> str: ...

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...


@dataclass
class Rollout:
    """A finished trajectory, before it becomes a record."""

    generation: str = ""
    finish_reason: str = FinishReason.STOP.value  # a FinishReason value
    tool_calls: list[ToolCall] = field(default_factory=list)
    hints: list[InsertedHint] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    inserted_tokens: int = 0  # interpreter outputs and hints
    total_tokens: int = 0
    generation_s: float = 0.0
    tools_s: float = 0.0
    error: str | None = None  # why the trajectory ended early ("error" finish), one line


def error_text(exc: BaseException) -> str:
    """An exception as a record keeps it: its type and the start of its message."""
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


async def run_rollout(
    prompt: str,
    generator: Generator,
    kernel: KernelSession,
    limits: Limits = Limits(),
    *,
    hints: HintPolicy = NO_HINTS,
) -> Rollout:
    """Drive one trajectory to its end; the kernel keeps the state of all its cells.

    Only a backend or a sandbox that is down (GenerationUnavailable, SandboxError) raises; any
    other failure ends the trajectory where it is, with finish_reason "error" and `error`.
    """
    out = Rollout()
    try:
        await _drive(out, prompt, generator, kernel, limits, hints)
    except OUTAGES:
        raise
    except Exception as exc:  # noqa: BLE001 - one trajectory's failure must not stop the run
        out.finish_reason, out.error = FinishReason.ERROR.value, error_text(exc)
    if out.finish_reason == FinishReason.STOP and len(out.tool_calls) >= limits.max_tool_calls:
        out.finish_reason = FinishReason.TOOL_LIMIT.value  # it ended on its own, after the limit message
    out.total_tokens = out.prompt_tokens + out.generated_tokens + out.inserted_tokens
    return out


async def _drive(out: Rollout, prompt: str, generator: Generator, kernel: KernelSession, limits: Limits,
                 hints: HintPolicy) -> None:  # fmt: skip
    out.prompt_tokens = prompt_tokens = generator.count_tokens(prompt)

    def left() -> int:
        return limits.max_total_tokens - prompt_tokens - out.generated_tokens - out.inserted_tokens

    def insert(text: str, point: HintPoint | None = None) -> bool:
        """Append an output block or hint if it fits the budget; False (nothing appended) if not."""
        tokens = generator.count_tokens(text) if text else 0
        if tokens > left():
            out.finish_reason = "length"
            return False
        if point is not None and text:
            out.hints.append(InsertedHint(point, len(out.generation), text))
        out.generation += text
        out.inserted_tokens += tokens
        return True

    if not insert(hints.opening(), "opening"):
        return
    while True:
        budget = min(limits.max_tokens_per_call, left())
        if budget <= 0:
            out.finish_reason = "length"
            break
        can_run = len(out.tool_calls) < limits.max_tool_calls
        stop = (STOP_STRINGS + (OPEN_PYTHON,) if hints.watches_code else STOP_STRINGS) if can_run else ()
        start = time.perf_counter()
        completion = await generator.complete(prompt + out.generation, max_tokens=budget, stop=stop)
        out.generation_s += time.perf_counter() - start
        out.generated_tokens += completion.tokens
        text = restore_stop(completion.text, completion.stop)  # servers strip the fence
        if completion.finish_reason == "stop" and completion.stop == OPEN_PYTHON:
            out.generation += text.removesuffix(OPEN_PYTHON)
            if out.generation == "" or out.generation.endswith("\n"):  # a real block opening
                hint = hints.before_code(out.generation)
                fits = insert(
                    hint if not hint or hint.endswith("\n") else hint + "\n", "before_code"
                )  # fence: own line
                if not fits:
                    out.generation += OPEN_PYTHON  # what the model wrote stays; the budget is spent
                    break
            out.generation += OPEN_PYTHON
            continue
        out.generation += text
        code = closed_code(out.generation) if completion.finish_reason == "stop" and can_run else None
        if code is None:
            if (
                completion.finish_reason == "stop"
                and completion.stop in STOP_STRINGS
                and completion.tokens > 0
            ):
                continue  # a fence of another block (```bash, ```, ```text): the model goes on writing
            out.finish_reason = completion.finish_reason
            break
        start = time.perf_counter()
        result = await kernel.run(code)
        out.tools_s += time.perf_counter() - start
        call = ToolCall(
            code,
            result.output,
            str(result.status),
            result.duration_s,
            result.error_name,
            result.kernel_restarted,
        )
        out.tool_calls.append(call)
        shown = result.output
        if len(out.tool_calls) == limits.max_tool_calls:
            shown += limits.tool_limit_message
        block = ("" if out.generation.endswith("\n") else "\n") + output_block(
            shown
        )  # fence ended the sequence
        if not insert(block) or not insert(hints.after_output(out.generation, call), "after_output"):
            break  # the budget holds exactly: the cell ran (it is recorded), the model sees no more
