"""Sampling with the harness, and the before/after evaluation every training stage ends with.

Trainers sample exactly as `cortbench run` does (the rollout loop, the sandbox, the run store), so
what a stage samples or evaluates is an ordinary run folder: OUTPUT/eval/before and
OUTPUT/eval/after are scored like any run (grades.jsonl, results.json) and the leaderboard shows
them beside everything else. The comparison pairs the two runs problem by problem: the change in
avg@k gets its error bar from the per-problem differences (analyzers.metrics.estimate), which is
tighter than two independent intervals because both runs see the same problems.

    before = evaluate(generator_for(model, tok, config.eval), config.eval, out / "eval/before", model_name=...)
    ...train...
    after = evaluate(generator_for(model, tok, config.eval), config.eval, out / "eval/after", model_name=...)
    write_report(StageReport(..., evaluation=compare(before, after)))
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analyzers.metrics import estimate
from ..analyzers.results_file import write_atomic
from ..harness.records import TrajectoryRecord
from ..harness.registry import shown_options
from ..harness.rollout import Generator, Limits
from ..harness.run_settings import RUN_IDENTITY, ResolvedRun, RunSettingsError, resolve_run
from ..harness.runner import SamplingPlan, run_samples
from ..harness.sandbox import SandboxConfig
from ..harness.store import RunStore
from .config import ConfigError, RolloutSettings, SandboxSpec, StageConfig
from .progress import PhaseProgress, say

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class Sampling(ResolvedRun):
    """A stage's `RolloutSettings` resolved by the harness (problems, each task's k, the tasks'
    protocol filled in), with the settings themselves."""

    settings: RolloutSettings = field(default_factory=RolloutSettings)
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)  # the stage's `sandbox:`

    def run_config(self, model_name: str, **extra: Any) -> dict[str, Any]:
        """run.json's configuration, with the keys `cortbench run` writes."""
        return self.config(backend="hf", model=model_name, limit=self.settings.limit, offset=self.settings.offset,
                           hint=self.settings.hint, backend_args=[], tokenizer=None, sandbox=self.sandbox.name,
                           sandbox_args=shown_options(self.sandbox.args), **extra)  # fmt: skip


def resolve_sampling(settings: RolloutSettings, sandbox: SandboxSpec | None = None) -> Sampling:
    """Load the problems (skipping `offset`, keeping `limit`) and fill unset protocol values from
    the tasks, which must then agree; `sandbox` (the stage's) runs the cells. Raises ConfigError
    with one clear line."""
    if not settings.tasks:
        raise ConfigError("no tasks given (a list of task names or .jsonl / .yaml files)")
    try:
        run = resolve_run(
            settings.tasks, settings.data_dir, limit=settings.limit, offset=settings.offset, n=settings.n,
            hint=settings.hint, temperature=settings.temperature, top_p=settings.top_p,
            max_tool_calls=settings.max_tool_calls, max_tokens=settings.max_tokens, timeout_s=settings.timeout_s,
        )  # fmt: skip
    except RunSettingsError as exc:
        raise ConfigError(str(exc)) from None
    return Sampling(**vars(run), settings=settings, sandbox=sandbox or SandboxSpec())


def generator_for(model: Any, tokenizer: Any, sampling: Sampling) -> Generator:
    """The hf backend around an already loaded model (no second copy in memory)."""
    from ..harness.backends.hf import HFGenerator

    return HFGenerator(
        model,
        tokenizer,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        device=sampling.settings.device,
    )


def sample_run(
    generator: Generator,
    sampling: Sampling,
    run_dir: str | Path,
    *,
    model_name: str,
    phase: str = "sampling",
    on_record: Callable[[TrajectoryRecord], None] | None = None,
    resume: bool = True,
) -> list[TrajectoryRecord]:
    """Sample every (problem, sample) into a run folder, as `cortbench run`; returns its records.
    An interrupted run folder is continued (same identity) rather than redone; `phase` names it
    in the progress lines ("sampling: 12/16 samples already done, resuming")."""
    from ..harness.store import read_run

    run_dir = Path(run_dir)
    limits = Limits.within_context(
        generator, max_tool_calls=sampling.max_tool_calls, max_tokens=sampling.max_tokens
    )
    plan = SamplingPlan(
        hints=sampling.hints,
        limits=limits,
        concurrency=sampling.settings.concurrency,
        per_task=sampling.samples,
    )
    config = sampling.run_config(model_name)
    total = sum(sampling.samples[p.task][0] for p in sampling.problems)

    async def go() -> None:
        with RunStore.open(
            run_dir, config, resume=resume, overwrite=not resume, identity=RUN_IDENTITY
        ) as store:
            if len(store) >= total:
                say(f"{phase}: {len(store)}/{total} samples already done ({run_dir})")
                return
            if len(store):
                say(f"{phase}: {len(store)}/{total} samples already done, resuming")
            sandbox_config = SandboxConfig(
                timeout_s=sampling.timeout_s, warm_kernels=min(plan.concurrency, 4)
            )
            with PhaseProgress(phase, total, done=len(store)) as progress:

                def record_done(record: TrajectoryRecord) -> None:
                    progress.advance()
                    if on_record is not None:
                        on_record(record)

                async with sampling.sandbox.make(sandbox_config) as sandbox:
                    await run_samples(
                        sampling.problems, generator, sandbox, store, plan, on_record=record_done
                    )

    asyncio.run(go())
    return read_run(run_dir)[1]


@dataclass
class EvalRun:
    """A scored run: its folder, results.json, each sample's grade ((task, problem_id,
    sample_idx) -> correct) and the fraction of correct samples of each problem ((task,
    problem_id) -> score), which the comparison pairs."""

    label: str
    run_dir: Path
    results: dict[str, Any]
    correct: dict[tuple[str, str, int], bool]

    @property
    def per_problem(self) -> dict[tuple[str, str], float]:
        outcomes: dict[tuple[str, str], list[bool]] = defaultdict(list)
        for (task, problem_id, _), ok in self.correct.items():
            outcomes[(task, problem_id)].append(ok)
        return {k: float(np.mean(v)) for k, v in outcomes.items()}


def score(run_dir: str | Path, label: str, *, seed: int = 0) -> EvalRun:
    """Grade a run folder with the analyzers (writes grades.jsonl and results.json)."""
    from ..analyzers.grading import Grader
    from ..analyzers.scoring import read_grades, score_run

    run_dir = Path(run_dir)
    with Grader(workers=2) as grader:
        results = score_run(run_dir, grader, seed=seed)
    correct = {(g.task, g.problem_id, g.sample_idx): g.correct for g in read_grades(run_dir)}
    return EvalRun(label, run_dir, results, correct)


def evaluate(generator: Generator, sampling: Sampling, run_dir: str | Path, *, model_name: str, label: str,
             seed: int = 0, resume: bool = True) -> EvalRun:  # fmt: skip
    """Sample the held-out problems into `run_dir` (continuing what an interrupted run wrote, unless
    `resume` is off) and score them."""
    sample_run(generator, sampling, run_dir, model_name=model_name, phase=f"eval {label}", resume=resume)
    return score(run_dir, label, seed=seed)


def compare(before: EvalRun | None, after: EvalRun, *, seed: int = 0) -> dict[str, Any]:
    """avg@k before and after per task, and the paired change (after - before) with its standard
    error and bootstrap interval over problems; `all` pools the problems of every task."""
    tasks: dict[str, Any] = {}
    names = sorted({task for task, _ in after.per_problem})
    for name in [*names, "all"]:
        keys = [k for k in after.per_problem if name in ("all", k[0])]
        row: dict[str, Any] = {"after": _avg(after, keys, seed)}
        if before is not None:
            shared = [k for k in keys if k in before.per_problem]
            row["before"] = _avg(before, shared, seed)
            row["change"] = estimate(
                [after.per_problem[k] - before.per_problem[k] for k in shared], seed=seed
            ).to_dict()
        if name != "all":
            for label, run in (("before", before), ("after", after)):
                if run is not None:
                    metrics = run.results["tasks"].get(name, {})
                    row.setdefault("code_usage_rate", {})[label] = metrics.get("code", {}).get(
                        "code_usage_rate"
                    )
                    row.setdefault("tokens", {})[label] = metrics.get("tokens", {}).get("all")
        tasks[name] = row
    return {
        "metric": "avg@k (the paper's pass@1), per problem then averaged; change is paired by problem",
        "runs": {"before": before and str(before.run_dir), "after": str(after.run_dir)},
        "tasks": tasks,
    }


def _avg(run: EvalRun, keys: list[tuple[str, str]], seed: int) -> dict[str, Any]:
    return estimate([run.per_problem[k] for k in keys], seed=seed).to_dict()


@dataclass
class StageReport:
    """What a stage did: its data (sizes, filter counts), its training (steps, losses, throughput)
    and the before/after evaluation. Written as report.json and report.md in the output folder.
    `sections` are extra markdown sections (title -> body) a stage wants in report.md."""

    stage: str
    model: str
    output_dir: str
    trained_model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    sections: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)


def write_report(report: StageReport) -> tuple[Path, Path]:
    """report.json (everything) and report.md (for people) in the stage's output folder."""
    out = Path(report.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / REPORT_JSON, json.dumps(asdict(report), indent=2, default=_plain) + "\n")
    write_atomic(out / REPORT_MD, report_markdown(report))
    return out / REPORT_JSON, out / REPORT_MD


def report_markdown(report: StageReport) -> str:
    lines = [f"# cortbench train {report.stage}", "", f"- model: `{report.model}`"]
    if report.trained_model:
        lines.append(f"- trained model: `{report.trained_model}`")
    lines.append(f"- output: `{report.output_dir}`")
    if report.data:
        lines += ["", "## Data", ""] + [
            f"- {k}: {_short(v)}" for k, v in report.data.items() if not isinstance(v, dict)
        ]
    if report.training:
        lines += ["", "## Training", ""] + [f"- {k}: {_short(v)}" for k, v in report.training.items()]
    for title, body in report.sections.items():
        lines += ["", f"## {title}", "", body.rstrip()]
    if report.evaluation:
        lines += ["", "## Evaluation (held-out problems)", "", report.evaluation["metric"] + ".", ""]
        lines += ["| task | problems | before | after | change (95% CI) | code usage | tokens |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name, row in report.evaluation["tasks"].items():
            change = row.get("change")
            ci = (
                f"{_pct(change['value'], sign=True)} [{_pct(change['ci'][0])}, {_pct(change['ci'][1])}]"
                if change
                else "-"
            )
            usage = row.get("code_usage_rate", {})
            tokens = row.get("tokens", {})
            lines.append(
                f"| {name} | {row['after']['n']} | {_pct(row.get('before', {}).get('value'))} | "
                f"{_pct(row['after']['value'])} | {ci} | {_pct(usage.get('before'))} -> {_pct(usage.get('after'))} | "
                f"{_num(tokens.get('before'))} -> {_num(tokens.get('after'))} |"
            )
        runs = report.evaluation["runs"]
        lines += [
            "",
            f"Run folders: before `{runs['before']}`, after `{runs['after']}` (`cortbench leaderboard`).",
        ]
    return "\n".join(lines) + "\n"


def _pct(value: float | None, *, sign: bool = False) -> str:
    if value is None or value != value:
        return "-"
    return f"{value * 100:+.1f}%" if sign else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=_plain) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:200] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def evaluate_stage(
    config: StageConfig, model: Any, tokenizer: Any, label: str, model_name: str, *, resume: bool = True
) -> EvalRun | None:
    """The stage's `label` ("before" or "after") evaluation into OUTPUT/eval/<label>, or None when
    the config turns it off (`eval.enabled`, `eval.before`, or no eval tasks). `resume` continues an
    interrupted evaluation; stages turn it off for "after" when they trained in this run (what the
    folder holds came from another model)."""
    settings = config.eval
    if not settings.enabled or not settings.tasks or (label == "before" and not settings.before):
        return None
    if world_size() > 1:  # a sharded model cannot generate in one process: evaluate OUTPUT/model afterwards
        return None
    sampling = resolve_sampling(settings, config.sandbox)
    generator = generator_for(model, tokenizer, sampling)
    return evaluate(
        generator,
        sampling,
        config.output_dir / "eval" / label,
        model_name=model_name,
        label=label,
        seed=config.seed,
        resume=resume,
    )


def world_size() -> int:
    """Processes training together ($WORLD_SIZE, set by accelerate and torchrun)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def save_model(config: StageConfig, model: Any, tokenizer: Any, trainer: Any = None) -> str | None:
    """OUTPUT/model as a normal transformers checkpoint (LoRA adapters merged), or None if
    `training.save_model` is off. With a trainer, it saves (it gathers ZeRO-3 shards and writes
    from the main process only)."""
    if not config.training.save_model:
        return None
    path = config.output_dir / "model"
    if hasattr(model, "merge_and_unload"):
        model.merge_and_unload().save_pretrained(path)
    elif trainer is not None:
        trainer.save_model(str(path))
    else:
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
