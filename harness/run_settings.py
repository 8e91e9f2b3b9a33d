"""What a run samples, resolved once for every front end (`cortbench run`, the trainers' sampling
and evaluation): the tasks' problems, each task's k and instruction, the hint policy, and the
protocol values an option left unset, taken from the tasks (which must then agree); and the
run.json configuration a run folder records, so every run folder reads the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..tasks.loading import data_dir as resolve_data_dir
from ..tasks.loading import load_problems, source_of
from ..tasks.problems import Problem, TaskDataError
from ..tasks.registry import resolve_tasks
from ..tasks.spec import TaskSpec
from .hints import HintError, HintPolicy, get_hint_policy

# The run.json keys a resume must find unchanged (RunStore.open(identity=...)).
RUN_IDENTITY = ("tasks", "backend", "model", "samples", "hint", "temperature", "top_p", "max_tool_calls",
                "max_tokens")  # fmt: skip


class RunSettingsError(ValueError):
    """Tasks, data or settings that cannot make a run; the message is one line."""


@dataclass
class ResolvedRun:
    """The problems to sample and the protocol to sample them with."""

    specs: list[TaskSpec]
    problems: list[Problem]
    samples: dict[str, tuple[int, str]]  # task -> (k, instruction)
    temperature: float
    top_p: float
    max_tool_calls: int
    max_tokens: int
    timeout_s: float
    hints: HintPolicy
    folder: Path | None  # the local data folder (None: the hub)

    def config(self, **fields: Any) -> dict[str, Any]:
        """run.json's configuration: the resolved protocol plus the front end's `fields` (backend,
        model, limit, hint, ...)."""
        return {
            "tasks": ",".join(s.name for s in self.specs),
            "samples": {name: k for name, (k, _) in self.samples.items()},
            "temperature": self.temperature, "top_p": self.top_p, "max_tool_calls": self.max_tool_calls,
            "max_tokens": self.max_tokens, "timeout_s": self.timeout_s,
            "sources": {s.name: source_of(s, self.folder) for s in self.specs},
            "cortbench": version("cortbench"),
            **fields,
        }  # fmt: skip


def resolve_run(
    tasks: str | list[str],
    data_dir: str | Path | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
    n: int | None = None,
    hint: str = "none",
    temperature: float | None = None,
    top_p: float | None = None,
    max_tool_calls: int | None = None,
    max_tokens: int | None = None,
    timeout_s: float | None = None,
) -> ResolvedRun:
    """Load each task's problems (skipping `offset`, keeping `limit`); an explicit setting wins,
    otherwise the tasks' protocol value, which must then agree."""
    folder = resolve_data_dir(data_dir)
    try:
        specs = resolve_tasks(tasks)
        end = None if limit is None else offset + limit
        problems = [p for spec in specs for p in load_problems(spec, folder, limit=end)[offset:]]
        hints = get_hint_policy(hint)
    except (TaskDataError, HintError) as exc:
        raise RunSettingsError(str(exc)) from None

    def protocol(name: str, given: Any) -> Any:
        if given is not None:
            return given
        values = {getattr(spec.protocol, name) for spec in specs}
        if len(values) > 1:
            raise RunSettingsError(f"the tasks disagree on {name} ({sorted(values)}): set {name} explicitly")
        return values.pop()

    return ResolvedRun(
        specs,
        problems,
        {spec.name: (n or spec.protocol.k, spec.instruction) for spec in specs},
        protocol("temperature", temperature),
        protocol("top_p", top_p),
        protocol("max_tool_calls", max_tool_calls),
        protocol("max_tokens", max_tokens),
        protocol("timeout_s", timeout_s),
        hints,
        folder,
    )
