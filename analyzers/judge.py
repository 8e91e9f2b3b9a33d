"""The paper's way of labelling cells: ask an LLM judge (CoRT used DeepSeek-V3) for each executed cell's
purpose (Calculation / Verification) and functionality categories, given the reasoning before it.

Any backend implementing the `Generator` protocol can judge (the `openai` backend reaches vLLM, SGLang,
llama.cpp servers and hosted APIs; give it temperature=0). Verdicts are cached by content: the key is
sha256(model name + rendered prompt), and every answer the judge gave is appended to a JSONL cache,
so rerunning an analysis costs no request. Answers are parsed when read, never trusted to be JSON. A
judge that times out, errors or answers unparseably never stops a run: that cell gets the heuristic's
label (`purpose.py`) with method "judge_failed", and the failure is counted in `PurposeJudge.stats`.

Judges are registered by name (kind "judge"; `@register_judge`, or the `cortbench.judges` entry-point
group for packages: docs/extending.md): `cortbench analyze RUN --judge llm --judge-arg
base_url=http://host:8000/v1 --judge-arg model=NAME --judge-arg tokenizer=HF_ID` labels every cell
with `llm`, this module's judge over any backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from ..harness.backends import BackendError, get_backend
from ..harness.records import TrajectoryRecord
from ..harness.registry import Registry
from ..harness.rollout import Generator
from .purpose import CATEGORIES, PURPOSES, Cell, CellPurpose, Purpose, classify_cells, executed_cells

JUDGE = "judge"
JUDGE_FAILED = "judge_failed"

_CATEGORY_LIST = "\n".join(f"{i}. {c}" for i, c in enumerate(CATEGORIES, 1))

JUDGE_INSTRUCTIONS = f"""You are auditing how a language model uses a Python interpreter while it solves a math \
problem. The model writes its reasoning as text and runs Python code cells in between. Below are the \
problem, the model's output before one code cell (reasoning, and any earlier cells with their outputs), \
the code cell itself, and what the interpreter printed for it.

Decide the PURPOSE of this code cell:
- "calculation": the cell computes a result that is NOT explicitly present in the reasoning before it: \
a new value, the solutions of an equation, a count, a search, a first exploration.
- "verification": the cell checks a result or property that the reasoning before it has ALREADY reached: \
it recomputes a value already stated, substitutes a solution already found, tests a formula or pattern \
already conjectured, or sanity-checks a claimed answer.
Decide from the reasoning before the cell. A cell that checks a stated result is verification even if \
its output disagrees with it. Words like "verify" or "check" are hints, not proof: "let me check every n \
up to 100" that finds something new is calculation.

Also name the cell's FUNCTIONALITY: one or more of these categories, copied exactly:
{_CATEGORY_LIST}

Answer with exactly one line of JSON and nothing else, in this form:
{{"purpose": "calculation", "categories": ["<category>", "..."], "reason": "<at most 20 words>"}}"""

PREFILL = '{"purpose": "'


@dataclass
class JudgeStats:
    """What happened to the cells one judge has seen (cumulative over its calls)."""

    cells: int = 0
    cached: int = 0  # answers read from the cache
    requests: int = 0  # answers asked of the judge
    judged: int = 0  # cells labelled by the judge (cached or not)
    failed: Counter[str] = field(default_factory=Counter)  # timeout / http / unparseable / error
    cache_write_errors: int = 0  # answers that could not be appended to the cache (still used)

    @property
    def failures(self) -> int:
        return sum(self.failed.values())

    def summary(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.failed.items()))
        return (
            f"{self.cells} cells: {self.judged} labelled by the judge ({self.cached} answers from the cache, "
            f"{self.requests} requests), {self.failures} fell back to the heuristic"
            + (f" ({why})" if why else "")
        )


@dataclass(frozen=True)
class Verdict:
    purpose: Purpose
    categories: tuple[str, ...]
    reason: str


class PurposeJudge:
    """Label every executed cell of a record with an LLM judge.

    Args:
        generator: any `Generator` (render_chat, complete, count_tokens); use temperature 0.
        cache_path: JSONL file of answers, created if missing, appended to, shared across runs.
        model_name: the judge model's name: part of the cache key, so judges never share answers.
        concurrency: judge requests in flight at once.
        max_tokens: the answer budget (raise it for judges that think before answering).
        timeout_s: per request; a request past it is a failure ("timeout").
        context_chars: the reasoning before the cell is cut to its last this-many characters.
        prefill: start the assistant's answer with '{"purpose": "' (helps small judges keep the format;
            leave off for judges that think first).
        instructions: the task text before the cell's material (default: JUDGE_INSTRUCTIONS, the
            definitions, the 25 categories and the answer format).
    """

    def __init__(
        self,
        generator: Generator,
        cache_path: str | os.PathLike[str],
        model_name: str,
        concurrency: int = 8,
        *,
        max_tokens: int = 256,
        timeout_s: float = 300.0,
        context_chars: int = 8000,
        prefill: bool = False,
        stop: tuple[str, ...] = (),
        instructions: str = JUDGE_INSTRUCTIONS,
    ) -> None:
        self.generator, self.model_name = generator, model_name
        self.cache_path = Path(cache_path)
        self.max_tokens, self.timeout_s, self.context_chars = max_tokens, timeout_s, context_chars
        self.prefill, self.stop, self.instructions = prefill, stop, instructions
        self.stats = JudgeStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._cache = _read_cache(self.cache_path)
        try:  # a judge that cannot even render a prompt is a configuration error: say so now, once
            generator.render_chat([{"role": "user", "content": "ping"}])
        except Exception as exc:
            raise BackendError(f"the judge's backend cannot render a chat prompt: {exc}") from None

    async def classify(self, record: TrajectoryRecord) -> list[CellPurpose]:
        """One label per executed cell, in order (method "judge" or "judge_failed"); never raises for
        a judge failure."""
        fallback = classify_cells(record)
        cells = executed_cells(record)
        return list(await asyncio.gather(*(self._cell(record, c, h) for c, h in zip(cells, fallback))))

    async def classify_many(self, records: Iterable[TrajectoryRecord]) -> list[list[CellPurpose]]:
        """All records at once, so the judge sees `concurrency` requests in flight across records."""
        return list(await asyncio.gather(*(self.classify(r) for r in records)))

    def report(self) -> dict[str, Any]:
        """What the analysis summary keeps of this judge (results.json, analysis.judge)."""
        s = self.stats
        return {"model": self.model_name, "cells": s.cells, "judged": s.judged, "cached": s.cached,
                "requests": s.requests, "failed": dict(s.failed), "cache": str(self.cache_path),
                "summary": s.summary()}  # fmt: skip

    async def aclose(self) -> None:
        """Close the backend's connections (an HTTP backend's client), if it has any."""
        close = getattr(self.generator, "aclose", None)
        if close is not None:
            await close()

    def messages(self, record: TrajectoryRecord, cell: Cell) -> list[dict[str, str]]:
        before = record.generation[: cell.start]
        cut = len(before) > self.context_chars
        before = before[-self.context_chars :] if cut else before
        content = (
            f"{self.instructions}\n\n### Problem\n{record.prompt[-3000:].strip()}\n\n"
            f"### Model output before the cell{' (earlier part omitted)' if cut else ''}\n{before.strip()}\n\n"
            f"### Code cell\n```python\n{cell.code}\n```\n\n### Interpreter output\n```\n{cell.output[-2000:]}\n```"
        )
        return [{"role": "user", "content": content}]

    def prompt(self, record: TrajectoryRecord, cell: Cell) -> str:
        return self.generator.render_chat(self.messages(record, cell)) + (PREFILL if self.prefill else "")

    def cache_key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.model_name}\n{prompt}".encode()).hexdigest()

    async def _cell(self, record: TrajectoryRecord, cell: Cell, heuristic: CellPurpose) -> CellPurpose:
        self.stats.cells += 1
        try:
            prompt = self.prompt(record, cell)
            answer = await self._answer(prompt)
        except Exception as exc:  # any judge failure falls back, counted by kind
            return self._fallback(heuristic, _failure_kind(exc), _one_line(exc))
        verdict = parse_verdict((PREFILL if self.prefill else "") + answer)
        if verdict is None:
            return self._fallback(heuristic, "unparseable", repr(answer[:80]))
        self.stats.judged += 1
        categories = verdict.categories or heuristic.categories
        note = "" if verdict.categories else " (categories from the heuristic)"
        evidence = f"{self.model_name}: {verdict.reason or 'no reason given'}{note}"
        return CellPurpose(cell.index, verdict.purpose, categories, evidence, JUDGE)

    def _fallback(self, heuristic: CellPurpose, kind: str, detail: str) -> CellPurpose:
        self.stats.failed[kind] += 1
        evidence = f"judge failed ({kind}: {detail}); heuristic: {heuristic.evidence}"
        return CellPurpose(
            heuristic.cell_index, heuristic.purpose, heuristic.categories, evidence, JUDGE_FAILED
        )

    async def _answer(self, prompt: str) -> str:
        key = self.cache_key(prompt)
        if key in self._cache:
            self.stats.cached += 1
            return self._cache[key]
        if key in self._inflight:  # the same prompt twice in one run: one request
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with self._slots:
                self.stats.requests += 1
                completion = await asyncio.wait_for(
                    self.generator.complete(prompt, max_tokens=self.max_tokens, stop=self.stop),
                    self.timeout_s,
                )
            self._cache[key] = completion.text
            try:
                _append_cache(self.cache_path, key, self.model_name, completion.text)
            except OSError:  # a full disk costs the next run a request, not this run its answer
                self.stats.cache_write_errors += 1
            future.set_result(completion.text)
            return completion.text
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: only waiters re-raise it
            raise
        finally:
            del self._inflight[key]


# --- judges by name -------------------------------------------------------------------------------------


class JudgeError(RuntimeError):
    """An unknown judge, or a judge that cannot be built as asked (one line)."""


class CellJudge(Protocol):
    """What `cortbench analyze --judge NAME` (`analyze_run(judge=...)`) runs: one label per executed
    cell of each record, in order (`CellPurpose`, method "judge", or "judge_failed" with the
    heuristic's label when the judge could not say), all records in one batch."""

    model_name: str  # names the judge in the summary and the labels' evidence

    async def classify_many(self, records: Iterable[TrajectoryRecord]) -> list[list[CellPurpose]]: ...

    def report(self) -> dict[str, Any]:
        """Plain data for the summary (results.json, analysis.judge): counts, failures, ..."""
        ...

    async def aclose(self) -> None: ...


def _load_builtins() -> None:
    pass  # registered below


JUDGES: Registry[CellJudge] = Registry("judge", JudgeError, _load_builtins)  # cortbench.judges


def register_judge(name: str):
    """Register a judge factory under `name` (usable as `cortbench analyze --judge name`; its keyword
    arguments are the `--judge-arg KEY=VALUE`s)."""
    return JUDGES.register(name)


def get_judge(name: str, **kwargs: Any) -> CellJudge:
    return JUDGES.create(name, **kwargs)


def judge_names() -> list[str]:
    return JUDGES.names()


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/cortbench/purpose-judge.jsonl (~/.cache/...): one cache for every run."""
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cortbench" / "purpose-judge.jsonl"
    )


@register_judge("llm")
def llm_judge(
    *,
    backend: str = "openai",
    model: str | None = None,
    cache_path: str | None = None,
    concurrency: int = 8,
    max_tokens: int = 256,
    timeout_s: float = 300.0,
    context_chars: int = 8000,
    prefill: bool = False,
    **backend_options: Any,
) -> PurposeJudge:
    """The paper's judge: an LLM behind any backend (default `openai`: vLLM, SGLang, llama.cpp servers,
    hosted APIs; give `base_url`, `model` and `tokenizer`, an HF tokenizer for the chat template), at
    temperature 0 unless told otherwise. Other keywords go to the backend. Answers are cached in
    `cache_path` (default: `default_cache_path()`), keyed by the model's name and the prompt."""
    if backend == "openai" and not model:
        raise JudgeError(
            "judge 'llm': give the served model's name (--judge-arg model=NAME): it keys the cache"
        )
    if backend == "openai" and backend_options.get("tokenizer") is None:
        raise JudgeError(
            "judge 'llm': give the judge model's tokenizer (--judge-arg tokenizer=HF_ID or folder): "
            "prompts are rendered with its chat template"
        )
    options = {"temperature": 0.0, **backend_options, **({"model": model} if model else {})}
    if backend == "openai":
        options.setdefault("max_concurrency", concurrency)
    try:
        generator = get_backend(backend, **options)
        return PurposeJudge(generator, cache_path or default_cache_path(), str(model or backend), concurrency,
                            max_tokens=max_tokens, timeout_s=timeout_s, context_chars=context_chars, prefill=prefill)  # fmt: skip
    except BackendError as exc:
        raise JudgeError(f"judge 'llm': {exc}") from None


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, BackendError | httpx.HTTPError | OSError):
        return "http"
    return "error"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _read_cache(path: Path) -> dict[str, str]:
    cache: dict[str, str] = {}
    if not path.exists():
        return cache
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
                cache[row["key"]] = row["answer"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of an interrupted run
    return cache


def _append_cache(path: Path, key: str, model: str, answer: str) -> None:
    line = json.dumps({"key": key, "model": model, "answer": answer, "at": round(time.time(), 3)}) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one O_APPEND write: lines never interleave
    finally:
        os.close(fd)


# --- parsing the judge's answer ------------------------------------------------------------------------

_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_PURPOSE_FIELD = re.compile(r"""["']?purpose["']?\s*[:=]\s*["']?\s*(calculation|verification)""", re.I)
_CANON = {c.lower(): c for c in CATEGORIES}


def parse_verdict(answer: str) -> Verdict | None:
    """The verdict in a judge's answer: the last JSON object with a valid "purpose" (after any
    <think> block), tolerating single quotes, trailing commas and code fences; else a bare
    `purpose: ...` field or a one-word answer. None when the answer holds no verdict."""
    text = answer.rsplit("</think>", 1)[-1].strip()
    for raw in reversed(_OBJECT.findall(text)):
        obj = _loads(raw)
        if isinstance(obj, dict):
            purpose = _purpose(obj.get("purpose"))
            if purpose is not None:
                cats = obj.get("categories", obj.get("category", []))
                cats = [cats] if isinstance(cats, str | int) else cats if isinstance(cats, list) else []
                reason = obj.get("reason")
                return Verdict(
                    purpose, _categories(cats), " ".join(str(reason).split())[:200] if reason else ""
                )
    m = _PURPOSE_FIELD.search(text)
    if m:
        return Verdict(m.group(1).lower(), (), "")  # type: ignore[arg-type]
    word = re.sub(r"[^a-z]", "", text.lower())
    return Verdict(word, (), "") if word in PURPOSES else None


def _loads(raw: str) -> object:
    for candidate in (raw, re.sub(r",\s*([}\]])", r"\1", raw.replace("'", '"'))):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _purpose(value: object) -> Purpose | None:
    word = str(value).strip().lower() if value is not None else ""
    return word if word in PURPOSES else None


def _categories(values: Sequence[object]) -> tuple[str, ...]:
    """Judge categories mapped onto the 25 names: exact (any case), by number, or by a unique prefix."""
    found: list[str] = []
    for value in values:
        text = str(value).strip().strip(".").lower()
        text = re.sub(r"^\d+\.\s*", "", text) if not text.isdigit() else text
        if text.isdigit() and 1 <= int(text) <= len(CATEGORIES):
            name: str | None = CATEGORIES[int(text) - 1]
        else:
            name = _CANON.get(text)
            if name is None and len(text) >= 6:
                prefixed = [c for low, c in _CANON.items() if low.startswith(text)]
                name = prefixed[0] if len(prefixed) == 1 else None
        if name and name not in found:
            found.append(name)
    return tuple(c for c in CATEGORIES if c in found)


# --- agreement between two labellings -------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How two labellings of the same cells agree: accuracy, Cohen's kappa (agreement beyond what the
    label frequencies give by chance) and the confusion matrix (reference label -> other label -> count)."""

    n: int
    accuracy: float
    kappa: float
    confusion: dict[str, dict[str, int]]

    def to_dict(self) -> dict:
        return {"n": self.n, "accuracy": self.accuracy, "kappa": self.kappa, "confusion": self.confusion}


def agreement(reference: Sequence[str], other: Sequence[str], labels: Sequence[str] = PURPOSES) -> Agreement:
    """Agreement of `other` with `reference` (gold labels, or a second labeller), label by label."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference labels but {len(other)} to compare")
    labels = list(dict.fromkeys([*labels, *reference, *other]))
    confusion = {a: {b: 0 for b in labels} for a in labels}
    for a, b in zip(reference, other):
        confusion[a][b] += 1
    n = len(reference)
    if n == 0:
        return Agreement(0, math.nan, math.nan, confusion)
    observed = sum(confusion[a][a] for a in labels) / n
    expected = sum(sum(confusion[a].values()) * sum(confusion[b][a] for b in labels) for a in labels) / n**2
    kappa = (observed - expected) / (1 - expected) if expected < 1 else (1.0 if observed == 1 else 0.0)
    return Agreement(n, observed, kappa, confusion)
