"""`cortbench serve`: the whole tool loop behind an OpenAI-compatible completions API.

Any tool that speaks `/v1/completions` (lm-eval's `local-completions`, OpenAI clients, other
harnesses) gets tool-integrated reasoning without knowing about it: each prompt becomes one
trajectory, run with cortbench's backend, sandbox, limits and hint policy, and the completion text
is the full transcript (reasoning, code blocks and interpreter output blocks).

    POST /v1/completions  {"prompt": str | [str] | [{role, content}], "max_tokens": int?, ...}
        -> {"choices": [{"text": transcript, "finish_reason", "cortbench": {tool calls, ...}}], "usage"}
    POST /v1/chat/completions  {"messages": [...]} -> {"choices": [{"message": {"content": transcript}}]}
    GET  /v1/models, GET /health

Prompts are user messages by default (`prompt_format="chat"`: rendered with the model's chat
template, as the protocol asks); `"raw"` continues them as they are. Sampling is the server's
(`--temperature`, `--top-p`: the protocol's values by default); a request's `max_tokens` lowers the
token budget, other request fields are ignored: the tool loop decides where a turn ends. With a run
directory to record into, every trajectory is also appended there as a cortbench record; a request
may carry each prompt's answer in `"gold"` (a string, or a list with one string or null per prompt)
so that `cortbench score` can grade the records. lm-eval's local-completions cannot send it: its
request body holds the prompts and the task's fixed generation settings, nothing per document.

`serve` prints its URL once it listens, and one line per trajectory (prompt id, tool calls, tokens,
seconds, finish reason), plain and flushed, so a pipe or a CI log sees it as it happens.

No authentication: bind it to loopback or a private network.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

from ..tasks.problems import Problem
from .hints import HintPolicy
from .rollout import NO_HINTS, OUTAGES, Generator, Limits, run_rollout
from .runner import build_record
from .sandbox import LocalSandbox, Sandbox, SandboxConfig
from .store import RunStore


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many fields we do not use

    prompt: (
        str | list[str] | list[dict[str, str]]
    )  # a list of {role, content}: one chat (lm-eval's chat mode)
    model: str | None = None
    max_tokens: int | None = None
    gold: str | list[str | None] | None = None  # the answer of each prompt, recorded for `cortbench score`


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, str]]
    model: str | None = None
    max_tokens: int | None = None
    gold: str | None = None


@dataclass(frozen=True)
class ServeConfig:
    model_name: str = "cortbench"
    limits: Limits = Limits()
    hints: HintPolicy = NO_HINTS
    prompt_format: Literal["chat", "raw"] = "chat"
    concurrency: int = 64
    record_dir: Path | None = None


class _Recorder:
    """Appends each served trajectory to a run store; repeated prompts get the next sample index."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.store = RunStore.open(path, config, resume=True)
        self.next_idx: Counter[str] = Counter()

    def problem(self, prompt: str, gold: str | None) -> tuple[Problem, int]:
        pid = prompt_id(prompt)
        while self.store.is_done("serve", pid, self.next_idx[pid]):
            self.next_idx[pid] += 1
        idx = self.next_idx[pid]
        self.next_idx[pid] += 1
        return Problem("serve", pid, prompt, gold), idx


def prompt_id(prompt: str) -> str:
    """A recorded trajectory's problem id: the prompt's hash (the same prompt, the same id)."""
    return hashlib.sha1(prompt.encode()).hexdigest()[:16]


def _golds(prompts: list, gold: str | list[str | None] | None) -> list[str | None]:
    """One gold answer (or None) per prompt; a count that does not match is the client's error."""
    if gold is None or isinstance(gold, str):
        if isinstance(gold, str) and len(prompts) != 1:
            raise HTTPException(
                422, f'"gold" is one string for {len(prompts)} prompts: send a list, one per prompt'
            )
        return [gold] * len(prompts)
    if len(gold) != len(prompts):
        raise HTTPException(422, f'"gold" has {len(gold)} answers for {len(prompts)} prompts')
    return list(gold)


def create_app(
    generator: Generator,
    sandbox: Sandbox | SandboxConfig,
    config: ServeConfig = ServeConfig(),
    log: Callable[[str], None] | None = None,
) -> FastAPI:
    """The app; `sandbox` (not started: the app starts and closes it; a SandboxConfig is a local
    sandbox with it) runs the cells; `log` gets one line per finished (or failed) trajectory."""
    state: dict[str, Any] = {}
    box = LocalSandbox(sandbox) if isinstance(sandbox, SandboxConfig) else sandbox

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with box:
            state["sandbox"] = box
            state["slots"] = asyncio.Semaphore(config.concurrency)
            if config.record_dir is not None:
                state["recorder"] = _Recorder(config.record_dir, {"served_model": config.model_name})
            try:
                yield
            finally:
                if "recorder" in state:
                    state["recorder"].store.close()
                if hasattr(generator, "aclose"):
                    await generator.aclose()

    app = FastAPI(title="cortbench tool-integrated completions", lifespan=lifespan)

    async def trajectory(
        request: str | list[dict[str, str]], max_tokens: int | None, gold: str | None = None
    ) -> dict[str, Any]:
        if isinstance(request, list):  # a chat
            prompt, text = generator.render_chat(request), request[-1]["content"]
        elif config.prompt_format == "chat":  # a user message
            prompt, text = generator.render_chat([{"role": "user", "content": request}]), request
        else:
            prompt = text = request
        limits = config.limits
        if max_tokens:
            budget = generator.count_tokens(prompt) + max_tokens
            limits = replace(limits, max_total_tokens=min(limits.max_total_tokens, budget))
        started_at = time.time()
        name = prompt_id(text)
        try:
            async with state["slots"], state["sandbox"].session() as kernel:
                rollout = await run_rollout(prompt, generator, kernel, limits, hints=config.hints)
        except OUTAGES as exc:  # down, not this request's fault
            if log:
                log(f"{name}: failed after {time.time() - started_at:.1f} s: {type(exc).__name__}: {exc}")
            raise HTTPException(503, f"{type(exc).__name__}: {exc}") from None
        if "recorder" in state:
            recorder: _Recorder = state["recorder"]
            problem, idx = recorder.problem(text, gold)
            record = build_record(problem, idx, prompt, rollout, generator, started_at)
            await asyncio.to_thread(recorder.store.append, record)
            name = f"{name}#{idx}"
        calls = rollout.tool_calls
        if log:
            failed = sum(not c.ok for c in calls)
            log(f"{name}: {len(calls)} tool call{'' if len(calls) == 1 else 's'} ({failed} failed), "
                f"{rollout.total_tokens - rollout.prompt_tokens:,} tokens, {time.time() - started_at:.1f} s, "
                f"{rollout.finish_reason}")  # fmt: skip
        return {
            "text": rollout.generation,
            "finish_reason": rollout.finish_reason,
            "logprobs": None,
            "cortbench": {
                "tool_calls": len(calls),
                "failed_tool_calls": sum(not c.ok for c in calls),
                "generated_tokens": rollout.generated_tokens,
                "response_tokens": rollout.total_tokens - rollout.prompt_tokens,
            },
            "_usage": (rollout.prompt_tokens, rollout.total_tokens - rollout.prompt_tokens),
        }

    def response(kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        usage = [c.pop("_usage") for c in choices]
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": config.model_name,
            "choices": [{"index": i, **c} for i, c in enumerate(choices)],
            "usage": {
                "prompt_tokens": sum(p for p, _ in usage),
                "completion_tokens": sum(c for _, c in usage),
                "total_tokens": sum(p + c for p, c in usage),
            },
        }

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict[str, Any]:
        prompt = request.prompt
        # (a list holds only prompts or only one chat's messages: its first item says which)
        prompts = cast(
            list[str | list[dict[str, str]]],
            [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], dict)) else prompt,
        )
        golds = _golds(prompts, request.gold)
        choices = await asyncio.gather(
            *(trajectory(p, request.max_tokens, g) for p, g in zip(prompts, golds))
        )
        return response("text_completion", list(choices))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> dict[str, Any]:
        choice = await trajectory(request.messages, request.max_tokens, request.gold)
        choice["message"] = {"role": "assistant", "content": choice.pop("text")}
        return response("chat.completion", [choice])

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": config.model_name, "object": "model", "owned_by": "cortbench"}],
        }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, "isolated": state["sandbox"].isolated}

    return app


def _print(line: str) -> None:
    """A plain line on stdout, flushed: a pipe sees it at once, and no terminal width wraps it."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve(
    host: str, port: int, generator: Generator, sandbox: Sandbox | SandboxConfig, config: ServeConfig
) -> None:
    """Run the server (blocking); print its URL once it listens, then a line per trajectory."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                where = f"; recording to {config.record_dir}" if config.record_dir else ""
                address = f"[{host}]" if ":" in host else host
                bound = self.servers[0].sockets[0].getsockname()[1]  # the port chosen, for --port 0
                _print(f"cortbench serve: http://{address}:{bound}/v1 (model {config.model_name}{where})")

    app = create_app(generator, sandbox, config, log=_print)
    Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
