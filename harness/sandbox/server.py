"""An HTTP server that shares one machine's LocalSandbox among many generation / RL workers.

    cortbench sandbox serve --host 127.0.0.1 --port 8080

Endpoints:

* `POST /run_code`: one stateless cell; request and response have SandboxFusion's RunCodeRequest /
  RunCodeResponse shape, so SandboxFusion clients (verl's sandbox_fusion tool and reward) work
  unchanged. Only Python runs. The response's extra field `cortbench` holds the full ExecResult.
* `POST /sessions` -> {"session_id"}; `POST /sessions/{id}/run` {code, timeout?, echo?} -> the
  ExecResult as a dict; `DELETE /sessions/{id}`. A session is one persistent kernel (one
  trajectory). Sessions idle for longer than the TTL are closed; beyond `max_sessions` live ones,
  creating another answers 429; an unknown or expired id answers 404.
* `GET /health` -> {"status", "isolated", "sessions", "running", "queued", "preloaded", "version", ...}.

Cells wait on a semaphore (`max_concurrency`, default SandboxConfig.max_concurrent_cells), so
excess requests queue instead of oversubscribing the CPUs. Request bodies are capped (413).

The server has no authentication: bind it to loopback or a private network only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from ._base import KernelSession, SandboxError
from ._config import SandboxConfig
from ._local import LocalSandbox
from ._records import ExecResult, ExecStatus

log = logging.getLogger("cortbench.sandbox.server")

PYTHON_LANGUAGES = ("python", "python3")


def _version() -> str:
    try:
        return version("cortbench")
    except PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------- models


class RunCodeRequest(BaseModel):
    """SandboxFusion's RunCodeRequest. Only Python runs; `compile_timeout`, `memory_limit_MB`
    (the server's SandboxConfig.memory_mb applies) and `args` (pytest args) are accepted and ignored."""

    code: str
    language: str = "python"
    run_timeout: float = Field(30.0, gt=0)
    compile_timeout: float = 10.0
    memory_limit_MB: int = -1
    stdin: str | None = None
    files: dict[str, str | None] = Field(default_factory=dict, description="path -> base64 content")
    fetch_files: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)


class CommandRunResult(BaseModel):
    status: Literal["Finished", "TimeLimitExceeded", "Error"]
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class ExecResultModel(BaseModel):
    """An ExecResult as JSON (see _records.ExecResult; fields added there pass through)."""

    model_config = ConfigDict(extra="allow")

    status: str
    output: str
    stdout: str = ""
    stderr: str = ""
    error_name: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    peak_memory_mb: float | None = None
    stdout_chars: int = 0
    truncated: bool = False
    kernel_restarted: bool = False
    notes: list[str] = Field(default_factory=list)


class RunCodeResponse(BaseModel):
    """SandboxFusion's RunCodeResponse plus `cortbench` (ignored by SandboxFusion clients)."""

    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    cortbench: ExecResultModel | None = None


class SessionCreated(BaseModel):
    session_id: str


class SessionRunRequest(BaseModel):
    code: str
    timeout: float | None = Field(None, gt=0, description="seconds; default: the server's timeout_s")
    echo: bool | None = Field(None, description="echo the last expression; default: the server's setting")


class SessionDeleted(BaseModel):
    session_id: str
    deleted: bool = True


class Health(BaseModel):
    status: Literal["ok", "down"]
    isolated: bool
    isolation_problem: str | None = None
    sessions: int
    max_sessions: int
    running: int
    queued: int
    max_concurrency: int
    session_ttl_s: float
    timeout_s: float
    preloaded: list[str]
    version: str


# ----------------------------------------------------------------------------- mapping


def _signal_return_code(result: ExecResult) -> int:
    """Like subprocess: -N for a kernel killed by signal N, else 1."""
    name = result.error_name or ""
    if result.status == ExecStatus.KILLED and name.startswith("SIG") and name in signal.Signals.__members__:
        return -int(signal.Signals[name])
    return 1


def to_run_code_response(
    result: ExecResult, files: dict[str, str] | None = None, message: str = ""
) -> RunCodeResponse:
    """An ExecResult as SandboxFusion reports a `python` run: a failed cell is `Failed` with its
    traceback in stderr (after whatever the cell wrote to stderr), as a real `python file.py` does."""
    stderr = result.stderr
    if result.status == ExecStatus.TIMEOUT:
        run = CommandRunResult(status="TimeLimitExceeded", execution_time=result.duration_s,
                               stdout=result.stdout, stderr=stderr)  # fmt: skip
        status = "Failed"
    elif result.ok or result.status == ExecStatus.KERNEL_RESTARTED:
        run = CommandRunResult(status="Finished", execution_time=result.duration_s, return_code=0,
                               stdout=result.stdout, stderr=stderr)  # fmt: skip
        status = "Success"
    else:  # error, memory, killed
        if result.error:
            stderr = (
                f"{stderr}\n{result.error}" if stderr and not stderr.endswith("\n") else stderr + result.error
            )
        run = CommandRunResult(status="Finished", execution_time=result.duration_s,
                               return_code=_signal_return_code(result), stdout=result.stdout, stderr=stderr)  # fmt: skip
        status = "Failed"
    return RunCodeResponse(
        status=status, message=message, run_result=run, executor_pod_name=socket.gethostname(),
        files=files or {}, cortbench=ExecResultModel(**result.to_dict()),
    )  # fmt: skip


def _sandbox_error_response(message: str) -> RunCodeResponse:
    return RunCodeResponse(status="SandboxError", message=message, executor_pod_name=socket.gethostname())


_SETUP_CELL = """\
import base64 as _cb_base64, io as _cb_io, os as _cb_os, sys as _cb_sys
for _cb_path, _cb_data in {files!r}.items():
    _cb_dir = _cb_os.path.dirname(_cb_path)
    if _cb_dir:
        _cb_os.makedirs(_cb_dir, exist_ok=True)
    with open(_cb_path, "wb") as _cb_fh:
        _cb_fh.write(_cb_base64.b64decode(_cb_data or ""))
if {stdin!r} is not None:
    _cb_sys.stdin = _cb_io.StringIO({stdin!r})
for _cb_name in [n for n in globals() if n.startswith("_cb_")]:
    del globals()[_cb_name]
del _cb_name
"""

_FETCH_CELL = """\
import base64 as _cb_base64, os as _cb_os
try:
    with open({path!r}, "rb") as _cb_fh:
        _cb_fh.seek({offset})
        print(_cb_base64.b64encode(_cb_fh.read({size})).decode())
except OSError:
    print("!missing")
del _cb_base64, _cb_os
"""


# ----------------------------------------------------------------------------- state


@dataclass
class _Session:
    sid: str
    context: AbstractAsyncContextManager[KernelSession]
    kernel: KernelSession
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: int = 0  # requests waiting on or holding `lock`: never expired while busy


class _State:
    """Everything the app holds between requests (one per app, created in the lifespan)."""

    def __init__(self, sandbox: LocalSandbox, max_sessions: int, ttl: float, concurrency: int) -> None:
        self.sandbox, self.max_sessions, self.ttl, self.concurrency = sandbox, max_sessions, ttl, concurrency
        self.sessions: dict[str, _Session] = {}
        self.cells = asyncio.Semaphore(concurrency)
        self.running = 0
        self.queued = 0
        self.reaper: asyncio.Task | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A place among the `max_concurrency` cells that may run at once (queue otherwise)."""
        self.queued += 1
        try:
            await self.cells.acquire()
        finally:
            self.queued -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self.cells.release()

    def expired(self, session: _Session, now: float) -> bool:
        return not session.busy and now - session.last_used > self.ttl

    async def close_session(self, sid: str) -> bool:
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        try:
            await session.context.__aexit__(None, None, None)
        except Exception:  # noqa: BLE001 - closing must never fail a request
            log.exception("closing session %s failed", sid)
        return True

    async def lookup(self, sid: str) -> _Session:
        session = self.sessions.get(sid)
        if session is None or self.expired(session, time.monotonic()):
            if session is not None:  # expired, and the reaper has not got to it yet
                await self.close_session(sid)
            raise HTTPException(404, f"no session {sid!r} (it expired, was deleted or the server restarted)")
        return session

    async def reap(self) -> None:
        interval = max(0.05, min(self.ttl / 2, 10.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for sid in [s.sid for s in self.sessions.values() if self.expired(s, now)]:
                log.info("session %s expired after %.0f s idle", sid, self.ttl)
                await self.close_session(sid)

    async def close(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        for sid in list(self.sessions):
            await self.close_session(sid)


def _state(request: Request) -> _State:
    return request.app.state.cortbench


class _BodyLimit:
    """ASGI middleware: answer 413 to request bodies over `limit` bytes (declared or streamed)."""

    class TooLarge(Exception):
        pass

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def _reject(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body too large (limit {self.limit} bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        received = 0
        started = overflow = False

        async def limited_receive() -> dict:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    overflow = True
                    raise _BodyLimit.TooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if overflow and not started:
                return  # whatever the app answers to a cut-off body (FastAPI: 400), it gets a 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyLimit.TooLarge:
            pass
        if overflow and not started:
            await self._reject(send)


# ----------------------------------------------------------------------------- app


def create_app(
    config: SandboxConfig,
    *,
    max_sessions: int = 1024,
    session_ttl_s: float = 600.0,
    max_concurrency: int | None = None,
    max_code_bytes: int = 1 << 20,
    max_body_bytes: int = 16 << 20,
    max_timeout_s: float = 3600.0,
) -> FastAPI:
    """The sandbox server as an ASGI app; the LocalSandbox starts and stops with it (lifespan).

    Args:
        config: how cells run (the server's settings apply to every client).
        max_sessions: live sessions at most; creating another answers 429.
        session_ttl_s: a session idle this long is closed (its next run answers 404).
        max_concurrency: cells executing at once (default config.max_concurrent_cells); excess queue.
        max_code_bytes: largest cell (UTF-8 bytes) accepted; larger answers 413.
        max_body_bytes: largest request body (including /run_code `files`); larger answers 413.
        max_timeout_s: largest per-cell timeout a client may ask for.
    """
    concurrency = max_concurrency or config.max_concurrent_cells
    if max_sessions < 1 or session_ttl_s <= 0 or concurrency < 1:
        raise ValueError("max_sessions, session_ttl_s and max_concurrency must be positive")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sandbox = LocalSandbox(config, max_concurrent_cells=concurrency)
        await sandbox.start()
        state = _State(sandbox, max_sessions, session_ttl_s, concurrency)
        state.reaper = asyncio.create_task(state.reap())
        app.state.cortbench = state
        try:
            yield
        finally:
            await state.close()
            await sandbox.close()

    app = FastAPI(title="cortbench sandbox", version=_version(), lifespan=lifespan)
    app.add_middleware(_BodyLimit, limit=max_body_bytes)

    def check_code(code: str) -> None:
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > max_code_bytes:
            raise HTTPException(413, f"code too large ({size} bytes; limit {max_code_bytes})")

    @app.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        state = _state(request)
        sandbox = state.sandbox
        return Health(
            status="down" if sandbox.problem else "ok", isolated=sandbox.isolated, isolation_problem=sandbox.isolation_problem,
            sessions=len(state.sessions), max_sessions=state.max_sessions, running=state.running,
            queued=state.queued, max_concurrency=state.concurrency, session_ttl_s=state.ttl,
            timeout_s=config.timeout_s, preloaded=list(sandbox.preloaded), version=_version(),
        )  # fmt: skip

    @app.post("/run_code", response_model=RunCodeResponse)
    async def run_code(body: RunCodeRequest, request: Request) -> RunCodeResponse:
        state = _state(request)
        check_code(body.code)
        if body.language.lower() not in PYTHON_LANGUAGES:
            return _sandbox_error_response(
                f"unsupported language {body.language!r}: this cortbench sandbox only runs Python "
                f"(language 'python' or 'python3')"
            )
        if body.run_timeout > max_timeout_s:
            return _sandbox_error_response(
                f"run_timeout {body.run_timeout} exceeds this server's limit of {max_timeout_s} s"
            )
        try:
            async with state.slot():
                if body.files or body.stdin is not None or body.fetch_files:
                    return await _run_with_io(state.sandbox, body)
                result = await state.sandbox.run_code(body.code, timeout=body.run_timeout)
        except SandboxError as exc:
            return _sandbox_error_response(f"exception on running code: {exc}")
        return to_run_code_response(result)

    @app.post("/sessions", response_model=SessionCreated)
    async def create_session(request: Request) -> SessionCreated:
        state = _state(request)
        if len(state.sessions) >= state.max_sessions:
            raise HTTPException(429, f"too many sessions (limit {state.max_sessions}); close some or retry later",
                                headers={"Retry-After": "1"})  # fmt: skip
        sid = uuid.uuid4().hex
        context = state.sandbox.session()
        kernel = await context.__aenter__()  # the kernel process itself starts with the first cell
        if len(state.sessions) >= state.max_sessions:  # others got in while we awaited
            await context.__aexit__(None, None, None)
            raise HTTPException(
                429, f"too many sessions (limit {state.max_sessions})", headers={"Retry-After": "1"}
            )
        state.sessions[sid] = _Session(sid, context, kernel)
        return SessionCreated(session_id=sid)

    @app.post("/sessions/{sid}/run", response_model=ExecResultModel)
    async def run_in_session(sid: str, body: SessionRunRequest, request: Request) -> dict[str, Any]:
        state = _state(request)
        check_code(body.code)
        if body.timeout is not None and body.timeout > max_timeout_s:
            raise HTTPException(
                422, f"timeout {body.timeout} exceeds this server's limit of {max_timeout_s} s"
            )
        session = await state.lookup(sid)
        session.busy += 1
        try:
            async with session.lock, state.slot():
                if state.sessions.get(sid) is not session:  # deleted while this request waited
                    raise HTTPException(404, f"no session {sid!r} (it was deleted)")
                result = await session.kernel.run(body.code, timeout=body.timeout, echo=body.echo)
        except SandboxError as exc:
            raise HTTPException(503, f"sandbox failure: {exc}") from None
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()
        return result.to_dict()

    @app.delete("/sessions/{sid}", response_model=SessionDeleted)
    async def delete_session(sid: str, request: Request) -> SessionDeleted:
        """Close a session (a cell still running in it is killed)."""
        if not await _state(request).close_session(sid):
            raise HTTPException(404, f"no session {sid!r}")
        return SessionDeleted(session_id=sid)

    return app


async def _run_with_io(sandbox: LocalSandbox, body: RunCodeRequest) -> RunCodeResponse:
    """A /run_code with `files`, `stdin` or `fetch_files`: a setup cell writes the files and sets
    sys.stdin, then the code runs, then each fetched file is read back in base64 chunks small enough
    for the kernel's output capture (SandboxConfig.record_chars)."""
    for path, data in body.files.items():
        try:
            base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError):
            return _sandbox_error_response(f"files[{path!r}] is not valid base64")
    config = sandbox.config
    async with sandbox.session() as kernel:
        if body.files or body.stdin is not None:
            setup = await kernel.run(
                _SETUP_CELL.format(files=body.files, stdin=body.stdin), timeout=max(body.run_timeout, 10)
            )
            if not setup.ok:
                return _sandbox_error_response(f"could not set up files/stdin: {setup.error or setup.output}")
        result = await kernel.run(body.code, timeout=body.run_timeout)
        fetched: dict[str, str] = {}
        missing: list[str] = []
        for path in body.fetch_files:
            data = None if result.kernel_restarted else await _fetch_file(kernel, path, config.record_chars)
            if data is None:
                missing.append(path)
            else:
                fetched[path] = base64.b64encode(data).decode()
    message = f"could not fetch (missing, unreadable or over 64 MiB): {', '.join(missing)}" if missing else ""
    return to_run_code_response(result, fetched, message)


async def _fetch_file(
    kernel: KernelSession, path: str, record_chars: int, limit: int = 64 << 20
) -> bytes | None:
    """Read a file from the kernel's filesystem in base64 chunks that its output capture keeps whole."""
    chunk = max(3, record_chars // 4 * 3)
    data = b""
    while len(data) <= limit:
        got = await kernel.run(_FETCH_CELL.format(path=path, offset=len(data), size=chunk), timeout=30)
        text = got.stdout.strip()
        if not got.ok or text == "!missing":
            return None
        part = base64.b64decode(text)
        data += part
        if len(part) < chunk:
            return data
    return None


def serve(host: str, port: int, config: SandboxConfig, **app_kwargs: Any) -> None:
    """Run the sandbox server (blocking). `app_kwargs` go to `create_app`."""
    import uvicorn

    uvicorn.run(create_app(config, **app_kwargs), host=host, port=port, log_level="warning",
                timeout_keep_alive=30)  # fmt: skip
