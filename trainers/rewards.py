"""CoRT's RL reward as TRL reward functions: R = Ra + 0.1 * Rc.

Ra (`CorrectnessReward`) is 1 when the answer is right, graded exactly as evaluation grades it
with the problem's scorer: math-verify over the whole generation, the chemistry set's own grader,
or one a user registered; analyzers/scorers.py). Rc
(`code_execution_reward`) is -1 when the trajectory ran code and every cell failed, else 0. The 0.1
is a reward weight (`GRPOConfig(reward_weights=[1.0, 0.1])`), so TRL logs both terms separately.

TRL calls each function as `f(prompts=..., completions=..., completion_ids=..., **kwargs)`; kwargs
carry every dataset column (`gold`, `scorer`, `meta_json`) and every extra key the rollout returned
(`tool_statuses`, `generation`, ...; see `rl.CortRollout`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cortbench.analyzers.grading import DEFAULT_TIMEOUT_S, Grader
from cortbench.analyzers.scorers import DEFAULT_SCORER, Item, grade_items
from cortbench.harness.sandbox import SUCCEEDED


def all_code_failed(statuses: Sequence[str]) -> bool:
    """The trajectory ran at least one cell and none of them succeeded (as `ToolCall.ok`)."""
    return bool(statuses) and not any(s in SUCCEEDED for s in statuses)


def code_execution_reward(
    completions: list, tool_statuses: list[Sequence[str]], *, penalize_no_code: bool = False, **_: Any
) -> list[float]:
    """Rc: -1 when every executed cell failed, else 0. `penalize_no_code` also gives -1 to a
    trajectory without code, as CoRT's public code does (the paper's formula does not)."""
    return [
        -1.0 if all_code_failed(statuses) or (penalize_no_code and not statuses) else 0.0
        for statuses in tool_statuses
    ]


class CodeExecutionReward:
    """`code_execution_reward` with its option bound, under one logged name."""

    __name__ = "code_execution"

    def __init__(self, penalize_no_code: bool = False) -> None:
        self.penalize_no_code = penalize_no_code

    def __call__(self, completions: list, tool_statuses: list[Sequence[str]], **_: Any) -> list[float]:
        return code_execution_reward(completions, tool_statuses, penalize_no_code=self.penalize_no_code)


class CorrectnessReward:
    """Ra: 1.0 if the final answer matches `gold`, else 0.0 (a grading timeout counts wrong).

    Math answers go through a persistent `Grader` pool (math-verify, killed and replaced if a
    sample hangs), started on first use; call `close()` when training ends.
    """

    __name__ = "correctness"  # TRL names each reward's logged metric after its function

    def __init__(self, workers: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.workers, self.timeout_s = workers, timeout_s
        self._grader: Grader | None = None

    def __call__(
        self,
        completions: list,
        gold: list[str | None],
        generation: list[str] | None = None,
        meta_json: list[str | None] | None = None,
        scorer: list[str | None] | None = None,
        **_: Any,
    ) -> list[float]:
        texts = generation if generation is not None else [_text(c) for c in completions]
        metas = [json.loads(m) if m else {} for m in (meta_json or [None] * len(texts))]
        names = [s or DEFAULT_SCORER for s in (scorer or [None] * len(texts))]
        graded = [i for i in range(len(texts)) if gold[i] is not None]
        items = [Item(str(gold[i]), texts[i], metas[i]) for i in graded]
        scores = [0.0] * len(texts)
        for i, g in zip(graded, grade_items(items, [names[i] for i in graded], self.grader)):
            scores[i] = float(g.correct)
        return scores

    @property
    def grader(self) -> Grader:
        if self._grader is None:
            self._grader = Grader(workers=self.workers, timeout_s=self.timeout_s)
        return self._grader

    def close(self) -> None:
        if self._grader is not None:
            self._grader.close()
            self._grader = None


def cort_rewards(
    correctness_weight: float = 1.0,
    code_weight: float = 0.1,
    *,
    penalize_no_code: bool = False,
    grading_workers: int = 1,
    grading_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[list, list[float]]:
    """The reward functions and their weights for `GRPOTrainer(reward_funcs=...)` and
    `GRPOConfig(reward_weights=...)`. Defaults: the paper's R = Ra + 0.1 * Rc."""
    correctness = CorrectnessReward(grading_workers, grading_timeout_s)
    return [correctness, CodeExecutionReward(penalize_no_code)], [correctness_weight, code_weight]


def _text(completion: Any) -> str:
    """A completion as TRL passes it: plain text, or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


def verl_compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None, **_: Any
) -> float:
    """The same reward for verl (`custom_reward_function.path` = this module's file,
    `custom_reward_function.name` = verl_compute_score): Ra graded in this process (math-verify,
    with the scorer `extra_info["scorer"]` names, e.g. the chemistry set's), plus 0.1 x Rc when
    the agent loop reports the cells' statuses in `extra_info["tool_statuses"]` (without them, Ra).
    `extra_info` may set `code_weight` and `penalize_no_code` too."""
    info = extra_info or {}
    meta = json.loads(info["meta_json"]) if info.get("meta_json") else {}
    [graded] = grade_items(
        [Item(str(ground_truth), solution_str, meta)], [info.get("scorer") or DEFAULT_SCORER], None
    )
    score = float(graded.correct)
    statuses = info.get("tool_statuses")
    if statuses is not None:
        penalty = code_execution_reward(
            [solution_str], [statuses], penalize_no_code=info.get("penalize_no_code", False)
        )
        score += info.get("code_weight", 0.1) * penalty[0]
    return score
