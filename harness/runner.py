"""Run many trajectories: every (problem, sample) not yet in the store, concurrently, each record
appended the moment its trajectory ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..tasks.problems import Problem
from .fences import split_segments
from .hints import HintPolicy
from .records import Timing, TokenCounts, TrajectoryRecord
from .rollout import NO_HINTS, OUTAGES, Generator, Limits, Rollout, error_text, run_rollout
from .sandbox import Sandbox
from .store import RunStore


@dataclass(frozen=True)
class SamplingPlan:
    """What to run for each problem: `n` samples, with `instruction` after the problem in the user
    message; `per_task` overrides both for named tasks (each benchmark has its own k)."""

    n: int = 1
    instruction: str = ""
    hints: HintPolicy = NO_HINTS
    limits: Limits = Limits()
    concurrency: int = 64
    per_task: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # task -> (n, instruction)

    def samples(self, task: str) -> int:
        return self.per_task.get(task, (self.n, self.instruction))[0]

    def instruction_for(self, task: str) -> str:
        return self.per_task.get(task, (self.n, self.instruction))[1]


def concurrency_for(generator: Generator, requested: int) -> int:
    """Trajectories to keep in flight: what was asked, capped by what the backend can serve at once
    (more only queue inside the backend, holding kernels and writing nothing)."""
    limit = getattr(generator, "max_concurrency", None)
    return max(1, min(requested, limit) if limit else requested)


def build_record(problem: Problem, sample_idx: int, prompt: str, rollout: Rollout, generator: Generator,
                 started_at: float) -> TrajectoryRecord:  # fmt: skip
    segments = split_segments(rollout.generation)
    for segment in segments:
        segment.tokens = generator.count_tokens(segment.text)
    return TrajectoryRecord(
        task=problem.task,
        problem_id=problem.problem_id,
        sample_idx=sample_idx,
        prompt=prompt,
        generation=rollout.generation,
        finish_reason=rollout.finish_reason,
        gold=problem.gold,
        problem_meta=dict(problem.meta),
        scorer=problem.scorer,
        segments=segments,
        tool_calls=rollout.tool_calls,
        hints=rollout.hints,
        tokens=TokenCounts(
            generated=rollout.generated_tokens, total=rollout.total_tokens, prompt=rollout.prompt_tokens
        ),
        timing=Timing(
            started_at=started_at,
            generation_s=rollout.generation_s,
            tools_s=rollout.tools_s,
            total_s=time.time() - started_at,
        ),
        error=rollout.error,
    )


async def run_samples(
    problems: Iterable[Problem],
    generator: Generator,
    sandbox: Sandbox,
    store: RunStore,
    plan: SamplingPlan,
    on_record: Callable[[TrajectoryRecord], None] | None = None,
) -> int:
    """Run every sample the store does not hold yet; returns how many were written now.

    Trajectories run concurrently up to `plan.concurrency` (capped by the backend's
    `max_concurrency`), each in its own kernel, and never wait
    for each other. A trajectory that fails is written with finish_reason "error" and the
    exception in `error`; only a backend or sandbox that is down (rollout.OUTAGES) or a store
    that cannot write stops the run. What was written stays written, and
    a resume continues from there.
    """
    todo = [
        (p, i)
        for p in problems
        for i in range(plan.samples(p.task))
        if not store.is_done(p.task, p.problem_id, i)
    ]
    slots = asyncio.Semaphore(concurrency_for(generator, plan.concurrency))
    written = 0

    async def one(problem: Problem, idx: int) -> None:
        nonlocal written
        async with slots:
            started_at, prompt = time.time(), ""
            try:
                prompt = generator.render_chat(
                    [{"role": "user", "content": problem.problem + plan.instruction_for(problem.task)}]
                )
                async with sandbox.session() as kernel:
                    rollout = await run_rollout(prompt, generator, kernel, plan.limits, hints=plan.hints)
                record = build_record(problem, idx, prompt, rollout, generator, started_at)
            except OUTAGES:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded; the other trajectories go on
                failed = Rollout(finish_reason="error", error=error_text(exc))  # no text: nothing to count
                record = build_record(problem, idx, prompt, failed, generator, started_at)
            await asyncio.to_thread(store.append, record)  # fsync off the event loop
            written += 1
            if on_record is not None:
                on_record(record)

    tasks = [asyncio.create_task(one(p, i)) for p, i in todo]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return written
