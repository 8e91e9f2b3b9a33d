"""Hint-Engineering data (stage `synthesize`): trajectories where a hint steers the model away from
delayed computation and result distrust, then SFT on them.

CoRT's annotators read trajectories, put a hint where the model was about to work a computation
out by hand ("It looks tedious, and we can use python code to simplify the reasoning.```python") or
to re-check an interpreter result ("We don't need to doubt the accuracy of python calculations."),
and let the model continue from there. `engineer` does the same with the analyzers as the reader:
it cuts the trajectory where a behaviour's span starts, inserts the hint, restores the kernel state
of the cells before the cut, and continues through the normal rollout loop with the interpreter;
it repeats on the continuation up to `max_hints` times. Hand-annotated trajectories (the paper's 30
samples) come in as JSONL (docs/training.md, "Hand-annotated trajectories").

Hints are recorded in `TrajectoryRecord.hints`, so SFT can train on them (`train_on_hints`): the
model learns to write the hint itself where it would otherwise have delayed or doubted.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..analyzers.behaviours import BehaviourSpan, detect_behaviours
from ..analyzers.purpose import executed_cells
from ..analyzers.scorers import scorer_of
from ..harness.hints import FixedHints
from ..harness.records import InsertedHint, TrajectoryRecord
from ..harness.rollout import Generator, Limits, Rollout, run_rollout
from ..harness.runner import build_record
from ..harness.sandbox import Sandbox, SandboxConfig
from ..harness.text_calls import tool_calls_from_text
from ..tasks.problems import Problem
from ..tasks.prompts import COT_INSTRUCTION, DELAYED_CODE_HINT, DISTRUST_HINT
from ..tasks.spec import CORT_PROTOCOL
from .config import ConfigError, RolloutSettings, StageConfig
from .evaluation import StageReport, evaluate_stage, generator_for, resolve_sampling, sample_run, world_size
from .progress import PhaseProgress, say
from .registry import register_stage
from .sft import supervised_stage, write_records
from .state import StageState

PROTOCOL_LIMITS = Limits()  # the paper's evaluation limits

# Where each behaviour's hint goes (InsertedHint.point) and its text. The delayed-computation hint
# opens the python block itself, as in the paper; the fence goes on its own line (fences.py).
HINT_POINTS = {"delayed_computation": "before_code", "result_distrust": "after_output"}
DEFAULT_HINTS = {
    "delayed_computation": DELAYED_CODE_HINT + "\n```python\n",
    "result_distrust": DISTRUST_HINT + "\n",
}


@dataclass
class SynthesisSection:
    """The `synthesize:` section.

    Attributes:
        sampling: problems to sample trajectories for, then engineer (None: annotated data only).
        annotated: hand-annotated JSONL files (docs/training.md).
        max_hints: detect-insert-continue rounds per trajectory.
        hints: hint text per behaviour (default: the paper's hints).
        keep_unhinted: also keep trajectories that showed neither behaviour (as they are).
        require_correct: keep only trajectories whose final answer verifies.
        train: fine-tune on the result (Hint-Engineering SFT) and evaluate before/after; false
            writes the data only.
    """

    sampling: RolloutSettings | None = None
    annotated: list[str] = field(default_factory=list)
    max_hints: int = 3
    hints: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HINTS))
    keep_unhinted: bool = False
    require_correct: bool = False
    train: bool = True


def cut_point(record: TrajectoryRecord, span: BehaviourSpan) -> int:
    """Where to cut for `span`: its start, moved back to a cell's opening fence if it falls inside
    a code or output block (the hint never splits a cell from its output)."""
    cut = span.start
    for cell in executed_cells(record):
        if cell.start < cut < cell.end:
            return cell.start
    return cut


async def continue_with_hint(
    record: TrajectoryRecord,
    cut: int,
    text: str,
    point: str,
    generator: Generator,
    sandbox: Sandbox,
    limits: Limits = PROTOCOL_LIMITS,
) -> TrajectoryRecord:
    """`record` cut at character `cut`, `text` inserted there (recorded as a hint at `point`), and
    the model's continuation through the rollout loop. The cells before the cut run again first in
    the fresh kernel, so the continuation sees the state the model built; their recorded outputs
    are kept (they are what the model read)."""
    prefix = record.generation[:cut]
    if prefix and not prefix[-1].isspace():
        text = "\n" + text
    done = sum(cell.end <= cut for cell in executed_cells(record))
    calls = list(record.tool_calls[:done])
    kept_hints = [h for h in record.hints if h.offset + len(h.text) <= cut]
    started = time.time()
    async with sandbox.session() as kernel:
        for call in calls:
            await kernel.run(call.code)
        continuation = await run_rollout(
            record.prompt + prefix,
            generator,
            kernel,
            replace(limits, max_tool_calls=max(limits.max_tool_calls - done, 0)),
            hints=FixedHints(opening_text=text),
        )
    inserted = [
        InsertedHint(point if h.point == "opening" else h.point, cut + h.offset, h.text)
        for h in continuation.hints
    ]
    prefix_model_text = _without(prefix, [(h.offset, h.offset + len(h.text)) for h in kept_hints])
    rollout = Rollout(
        generation=prefix + continuation.generation,
        finish_reason=continuation.finish_reason,
        tool_calls=calls + continuation.tool_calls,
        hints=kept_hints + inserted,
        prompt_tokens=generator.count_tokens(record.prompt),
        generated_tokens=continuation.generated_tokens
        + generator.count_tokens(_without_outputs(prefix_model_text)),
        generation_s=continuation.generation_s,
        tools_s=continuation.tools_s,
    )
    rollout.total_tokens = rollout.prompt_tokens + generator.count_tokens(rollout.generation)
    problem = Problem(
        record.task, record.problem_id, "", record.gold, dict(record.problem_meta), scorer_of(record)
    )
    return build_record(problem, record.sample_idx, record.prompt, rollout, generator, started)


async def engineer(
    record: TrajectoryRecord,
    generator: Generator,
    sandbox: Sandbox,
    limits: Limits = PROTOCOL_LIMITS,
    *,
    max_hints: int = 3,
    hints: dict[str, str] | None = None,
    detect: Callable[[TrajectoryRecord], list[BehaviourSpan]] = detect_behaviours,
    floor: int = 0,
) -> TrajectoryRecord:
    """Insert a hint where the first behaviour after `floor` starts, continue, and repeat on the
    continuation (spans before the last hint are history) up to `max_hints` times."""
    texts = DEFAULT_HINTS | (hints or {})
    for _ in range(max_hints):
        spans = [s for s in detect(record) if s.start >= floor]
        if not spans:
            break
        span = spans[0]
        cut = cut_point(record, span)
        record = await continue_with_hint(
            record, cut, texts[span.kind], HINT_POINTS[span.kind], generator, sandbox, limits
        )
        last = record.hints[-1] if record.hints else None
        floor = last.offset + len(last.text) if last else cut
    return record


def engineered_hints(record: TrajectoryRecord, hints: dict[str, str] | None = None) -> list[InsertedHint]:
    """The Hint-Engineering hints of a record: the sampling policy's own text (e.g. the `code`
    opening) is not one, and a trajectory with only that was never engineered."""
    texts = {text.strip() for text in (DEFAULT_HINTS | (hints or {})).values()}
    return [h for h in record.hints if h.text.strip() in texts]


# --- hand-annotated trajectories ----------------------------------------------------------------------

ANNOTATED_KEYS = {
    "task",
    "problem_id",
    "problem",
    "gt_answer",
    "prompt",
    "generation",
    "hints",
    "mode",
    "meta",
}


@dataclass
class Annotated:
    """One hand-annotated row: a trajectory and where hints go (docs/training.md)."""

    record: TrajectoryRecord  # the trajectory as given (mode "as_written": hints already in it)
    mode: str  # "continue" | "as_written"
    hints: list[tuple[int, str, str]]  # (offset, point, text), by offset


def read_annotated(path: str | Path, render: Callable[[str], str] | None = None) -> list[Annotated]:
    """Rows of a hand-annotated JSONL file; `render` turns a user message into the prompt when a
    row has no `prompt` (the model's chat template). Errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read annotated trajectories {path}: {exc.strerror}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("generation"), str):
            raise ConfigError(f"{where}: a row needs 'generation' (text) and 'hints' (a list)")
        if unknown := sorted(set(row) - ANNOTATED_KEYS):
            raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(ANNOTATED_KEYS)}")
        mode = row.get("mode", "continue")
        if mode not in ("continue", "as_written"):
            raise ConfigError(f"{where}: mode is 'continue' or 'as_written', not {mode!r}")
        prompt = row.get("prompt")
        if prompt is None:
            if "problem" not in row or render is None:
                raise ConfigError(f"{where}: give 'prompt', or 'problem' and a model to render it")
            prompt = render(row["problem"] + COT_INSTRUCTION)
        generation = row["generation"]
        hints = []
        for i, hint in enumerate(row.get("hints") or []):
            kind, offset = hint.get("kind"), hint.get("offset")
            if not isinstance(offset, int) or not 0 <= offset <= len(generation):
                raise ConfigError(f"{where}: hints[{i}].offset must be a character offset into generation")
            if kind is not None and kind not in DEFAULT_HINTS:
                raise ConfigError(f"{where}: hints[{i}].kind must be one of {sorted(DEFAULT_HINTS)}")
            text = hint.get("text") or DEFAULT_HINTS.get(kind or "")
            if not text:
                raise ConfigError(f"{where}: hints[{i}] needs a 'kind' or a 'text'")
            if mode == "as_written" and generation[offset : offset + len(text)] != text:
                raise ConfigError(
                    f"{where}: hints[{i}]: the generation does not hold its text at offset {offset}"
                )
            hints.append((offset, hint.get("point") or HINT_POINTS.get(kind or "", "after_output"), text))
        hints.sort()
        calls = tool_calls_from_text(generation)
        record = TrajectoryRecord(
            task=str(row.get("task", path.stem)),
            problem_id=str(row.get("problem_id", number - 1)),
            sample_idx=0,
            prompt=prompt,
            generation=generation,
            finish_reason="stop",
            gold=None if row.get("gt_answer") is None else str(row["gt_answer"]),
            problem_meta=dict(row.get("meta") or {}),
            tool_calls=calls,
            hints=[InsertedHint(point, offset, text) for offset, point, text in hints]
            if mode == "as_written"
            else [],
        )
        rows.append(Annotated(record, mode, hints))
    return rows


async def from_annotated(
    row: Annotated, generator: Generator | None, sandbox: Sandbox | None, limits: Limits = PROTOCOL_LIMITS, *,
    max_hints: int = 3, hints: dict[str, str] | None = None,
) -> TrajectoryRecord:  # fmt: skip
    """An annotated row as a training record: as written, or cut at its first hint and continued
    by the model (then engineered further with the detectors, up to `max_hints` hints in all)."""
    if row.mode == "as_written" or not row.hints:
        return row.record
    if generator is None or sandbox is None:
        raise ConfigError("annotated rows in mode 'continue' need a model to continue them")
    offset, point, text = row.hints[0]
    record = await continue_with_hint(row.record, offset, text, point, generator, sandbox, limits)
    last = record.hints[-1]
    return await engineer(
        record,
        generator,
        sandbox,
        limits,
        max_hints=max_hints - 1,
        hints=hints,
        floor=last.offset + len(last.text),
    )


# --- the stage -----------------------------------------------------------------------------------------


@register_stage("synthesize", section=SynthesisSection, help="Hint-Engineering data, then SFT on it.")
def synthesize(config: StageConfig) -> StageReport:
    """Sample and/or read annotated trajectories, insert hints where behaviours show, continue;
    write OUTPUT/records.jsonl; then (`train`) fine-tune on it and evaluate before/after."""
    section: SynthesisSection = config.section
    if section.sampling is None and not section.annotated:
        raise ConfigError("synthesize: give `sampling` (problems to sample) and/or `annotated` (JSONL files)")
    if unknown := sorted(set(section.hints) - set(DEFAULT_HINTS)):
        raise ConfigError(f"synthesize.hints: unknown behaviours {unknown}; known: {sorted(DEFAULT_HINTS)}")
    if world_size() > 1 and (section.sampling is not None or section.annotated):
        raise ConfigError(
            "synthesize: sampling needs one process; sample first, then train on `records` under accelerate"
        )
    state = StageState.open(config)
    model, tokenizer = config.model.load()
    before = evaluate_stage(config, model, tokenizer, "before", config.model.name) if section.train else None
    sampling = resolve_sampling(section.sampling, config.sandbox) if section.sampling else None
    sampled = []
    if sampling is not None:
        generator = generator_for(model, tokenizer, sampling)
        sampled = sample_run(generator, sampling, config.output_dir / "samples", model_name=config.model.name)
    else:
        from ..harness.backends.hf import HFGenerator

        generator = HFGenerator(model, tokenizer)  # the protocol's sampling
    render = lambda text: generator.render_chat([{"role": "user", "content": text}])  # noqa: E731
    annotated = [row for path in section.annotated for row in read_annotated(path, render)]
    limits = Limits.within_context(
        generator,
        max_tool_calls=sampling.max_tool_calls if sampling else CORT_PROTOCOL.max_tool_calls,
        max_tokens=sampling.max_tokens if sampling else CORT_PROTOCOL.max_tokens,
    )

    journal = config.output_dir / ENGINEERED
    done = read_engineered(journal)
    todo = len(annotated) + len(sampled)
    if done:
        say(f"engineering: {min(len(done), todo)}/{todo} trajectories already done, resuming")

    async def go() -> list[TrajectoryRecord]:
        timeout = sampling.timeout_s if sampling else CORT_PROTOCOL.timeout_s
        out: list[TrajectoryRecord] = []
        jobs: list[Annotated | TrajectoryRecord] = [*annotated, *sampled]
        with PhaseProgress("engineering", todo, done=len(done), unit="trajectories") as progress:
            async with config.sandbox.make(SandboxConfig(timeout_s=timeout, warm_kernels=2)) as sandbox:
                for index, item in enumerate(jobs):
                    if index in done:
                        out.append(done[index])
                        continue
                    if isinstance(item, Annotated):
                        record = await from_annotated(
                            item, generator, sandbox, limits, max_hints=section.max_hints, hints=section.hints
                        )
                    else:
                        record = await engineer(
                            item, generator, sandbox, limits, max_hints=section.max_hints, hints=section.hints
                        )
                    append_engineered(journal, index, record)
                    out.append(record)
                    progress.advance()
        return out

    records = asyncio.run(go())
    he_hints = [r.hints for r in records[: len(annotated)]]  # every hint of an annotated row is one
    he_hints += [engineered_hints(r, section.hints) for r in records[len(annotated) :]]
    stats: dict[str, Any] = {
        "annotated": len(annotated),
        "sampled": len(sampled),
        "hinted": sum(bool(h) for h in he_hints),
        "hints": dict(Counter(h.point for hs in he_hints for h in hs)),
    }
    kept = [r for r, hs in zip(records, he_hints) if hs or section.keep_unhinted]
    if section.require_correct and kept:
        from .rft import grade

        kept = [r for r, ok in zip(kept, grade(kept)) if ok]
    stats["kept"] = len(kept)
    write_records(config.output_dir / "records.jsonl", kept)
    section_md = {"Synthesis": "\n".join(f"- {k}: {v}" for k, v in stats.items())}
    if not section.train:
        from .evaluation import StageReport, write_report

        report = StageReport(
            "synthesize", config.model.name, str(config.output_dir), config=config.to_dict(), data=stats,
            sections=section_md,
        )  # fmt: skip
        write_report(report)
        return report
    if not kept:
        raise ConfigError(
            f"synthesize: no trajectory to train on ({stats}); sample more or set keep_unhinted"
        )
    return supervised_stage(
        config, kept, train_on_hints=True, data=stats, sections=section_md,
        model_and_tokenizer=(model, tokenizer), before=before, state=state,
    )  # fmt: skip


ENGINEERED = "engineered.jsonl"  # every trajectory as it is engineered, in input order: the resume point


def append_engineered(path: Path, index: int, record: TrajectoryRecord) -> None:
    """One finished trajectory (the `index`-th input), written and flushed before the next starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"index": index, "record": record.to_dict()}, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_engineered(path: Path) -> dict[int, TrajectoryRecord]:
    """What an interrupted run engineered, by input index; a torn last line (a crash) is dropped."""
    if not path.is_file():
        return {}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            done[int(row["index"])] = TrajectoryRecord.from_dict(row["record"])
        except (ValueError, KeyError, TypeError):
            continue
    return done


def _without(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for start, end in sorted(spans):
        out.append(text[pos:start])
        pos = max(pos, end)
    return "".join(out) + text[pos:]


def _without_outputs(text: str) -> str:
    """Model-written text: output blocks removed (for the generated-token count)."""
    from ..harness.fences import split_segments

    return "".join(s.text for s in split_segments(text) if s.kind != "output")
