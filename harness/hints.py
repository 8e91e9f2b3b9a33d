"""Hint policies: text the rollout loop inserts into a trajectory at defined points.

CoRT steers models with short inserted hints rather than instructions: the Prompt-Hint opens the
assistant's turn (right after `<think>` for reasoning models whose chat template ends with it), and
Hint-Engineering inserts hints before a code block and after an interpreter output. A policy sees
the trajectory so far at each point and returns the text to insert there ("" for nothing).
Inserted text is part of the trajectory the model continues, is recorded (`TrajectoryRecord.hints`)
and counts as inserted, not model-written, tokens.

    @register_hint("distrust")
    class Distrust(HintPolicy):
        def after_output(self, generation, call):
            return "We don't need to doubt the accuracy of python calculations." if call.ok else ""

    cortbench run --hint distrust ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..tasks.prompts import CODE_HINT, PROMPT_HINT
from .records import ToolCall
from .registry import Registry

HintPoint = Literal["opening", "before_code", "after_output"]


class HintError(ValueError):
    """An unknown hint policy."""


class HintPolicy:
    """No hints. Subclasses override the points they use.

    `before_code` is only consulted when `watches_code` is true: the loop then also stops when the
    model opens a python block, which costs one more backend call per block. It needs a backend that
    says which stop string ended a completion (hf, vllm, and OpenAI-compatible servers that return
    `stop_reason`, such as vLLM's). llama.cpp (in process or its servers) strips stop strings
    without saying which one matched, so an opening fence there reads as the end of the turn: use
    policies without `before_code` with llama.cpp.
    """

    watches_code: bool = False

    def opening(self) -> str:
        """Opens the assistant's turn."""
        return ""

    def before_code(self, generation: str) -> str:
        """Goes on its own line(s) right before the "```python" line the model just wrote (the loop
        ends it with a newline); `generation` ends before that line."""
        return ""

    def after_output(self, generation: str, call: ToolCall) -> str:
        """Follows the ```output block of `call`; `generation` ends with that block."""
        return ""


@dataclass
class FixedHints(HintPolicy):
    """The same text at every occurrence of each point; empty strings leave a point alone."""

    opening_text: str = ""
    before_code_text: str = ""
    after_output_text: str = ""

    def __post_init__(self) -> None:
        self.watches_code = bool(self.before_code_text)

    def opening(self) -> str:
        return self.opening_text

    def before_code(self, generation: str) -> str:
        return self.before_code_text

    def after_output(self, generation: str, call: ToolCall) -> str:
        return self.after_output_text


def _load_builtins() -> None:
    pass  # registered below


HINT_POLICIES: Registry[HintPolicy] = Registry(
    "hint policy", HintError, _load_builtins, group="cortbench.hints"
)


def register_hint(name: str):
    """Register a hint policy factory under `name` (usable as `cortbench run --hint name`); a package
    registers one through the `cortbench.hints` entry-point group (docs/extending.md)."""
    return HINT_POLICIES.register(name)


def get_hint_policy(name: str) -> HintPolicy:
    return HINT_POLICIES.create(name)


def hint_names() -> list[str]:
    return HINT_POLICIES.names()


register_hint("none")(HintPolicy)
register_hint("prompt-hint")(lambda: FixedHints(opening_text=PROMPT_HINT))
# Small models (SmolLM2) write code only when their turn opens inside a python block.
register_hint("code")(lambda: FixedHints(opening_text=CODE_HINT))
