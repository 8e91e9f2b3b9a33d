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

A request takes its kernel first and only then waits for one of `max_concurrency` cell slots
(default SandboxConfig.max_concurrent_cells), so excess cells queue instead of oversubscribing
the CPUs and sessions that hold kernels idle cannot wedge the queue; a request that finds no free
kernel within `kernel_wait_s` answers 503 (nothing ran; Retry-After). Limits that a client cannot
lift: request bodies (413), cell timeouts (`max_timeout_s`, default the protocol's 30 s), files
sent and fetched per request, sessions per client (429), non-finite numbers (422). A cell whose
client disconnects is stopped. With a token (`--token` or CORTBENCH_SANDBOX_TOKEN) every request
needs `Authorization: Bearer <token>` (401); without one the server binds loopback only, unless
told `insecure`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...tasks.spec import CORT_PROTOCOL
from ._base import KernelSession, SandboxError
from ._config import SandboxConfig
from ._local import LocalKernelSession, LocalSandbox
from ._records import SUCCEEDED, ExecResult, ExecStatus
from .client import NOT_RUN_HEADER, TOKEN_ENV

log = logging.getLogger("cortbench.sandbox.server")

PYTHON_LANGUAGES = ("python", "python3")
PROTOCOL_TIMEOUT_S = CORT_PROTOCOL.timeout_s  # CoRT's evaluation timeout per cell


def _version() -> str:
    try:
        return version("cortbench")
    except PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------- models


class RunCodeRequest(BaseModel):
    """SandboxFusion's RunCodeRequest. Only Python runs; `compile_timeout`, `memory_limit_MB`
    (the server's SandboxConfig.memory_mb applies) and `args` (pytest args) are accepted and ignored."""

    model_config = ConfigDict(allow_inf_nan=False)

    code: str
    language: str = "python"
    run_timeout: float = Field(PROTOCOL_TIMEOUT_S, gt=0)
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


RunStatus = Literal["Success", "Failed", "SandboxError"]


class RunCodeResponse(BaseModel):
    """SandboxFusion's RunCodeResponse plus `cortbench` (ignored by SandboxFusion clients)."""

    status: RunStatus
    message: str = ""
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    cortbench: ExecResultModel | None = None


class SessionCreated(BaseModel):
    session_id: str


class SessionRunRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

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
    layers: dict[str, dict[str, Any]] = Field(default_factory=dict, description="layer -> {on, detail}")
    sessions: int
    max_sessions: int
    running: int
    queued: int
    max_concurrency: int
    session_ttl_s: float
    timeout_s: float
    max_timeout_s: float
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
    status: RunStatus
    if result.status == ExecStatus.TIMEOUT:
        run = CommandRunResult(status="TimeLimitExceeded", execution_time=result.duration_s,
                               stdout=result.stdout, stderr=stderr)  # fmt: skip
        status = "Failed"
    elif result.status in SUCCEEDED:
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
    client: str
    context: AbstractAsyncContextManager[LocalKernelSession]
    kernel: LocalKernelSession
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: int = 0  # requests waiting on or holding `lock`: never expired while busy


@dataclass(frozen=True)
class ServerLimits:
    """What no client can lift (see create_app for each)."""

    max_sessions: int = 1024
    max_sessions_per_client: int = 256
    session_ttl_s: float = 600.0
    max_code_bytes: int = 1 << 20
    max_body_bytes: int = 16 << 20
    max_timeout_s: float | None = None  # default: the protocol's 30 s, or the server's timeout_s if longer
    kernel_wait_s: float = 30.0
    max_files: int = 64
    max_fetch_files: int = 16
    max_fetch_bytes: int = 16 << 20


class _State:
    """Everything the app holds between requests (one per app, created in the lifespan)."""

    def __init__(self, sandbox: LocalSandbox, limits: ServerLimits) -> None:
        self.sandbox, self.limits = sandbox, limits
        self.sessions: dict[str, _Session] = {}
        self.reaper: asyncio.Task | None = None

    def expired(self, session: _Session, now: float) -> bool:
        return not session.busy and now - session.last_used > self.limits.session_ttl_s

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
        interval = max(0.05, min(self.limits.session_ttl_s / 2, 10.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for sid in [s.sid for s in self.sessions.values() if self.expired(s, now)]:
                log.info("session %s expired after %.0f s idle", sid, self.limits.session_ttl_s)
                await self.close_session(sid)

    async def close(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        for sid in list(self.sessions):
            await self.close_session(sid)


def _state(request: Request) -> _State:
    return request.app.state.cortbench


def _client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _take_kernel(kernel: LocalKernelSession, limits: ServerLimits) -> None:
    """The kernel before a cell slot (so idle sessions cannot wedge the queue), with a deadline."""
    try:
        await kernel.start(timeout=limits.kernel_wait_s)
    except TimeoutError:
        raise HTTPException(
            503,
            f"no kernel became free within {limits.kernel_wait_s:g} s (all are held by sessions); retry later",
            headers={"Retry-After": "1", NOT_RUN_HEADER: "1"},
        ) from None


async def _unless_disconnected(request: Request, work):
    """Run `work` (a coroutine) but stop it if the client goes away: a cell nobody waits for is
    killed rather than left to burn its whole timeout."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info("client %s went away: its cell was stopped", _client_of(request))
            raise HTTPException(499, "client closed the request")
    return task.result()


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
    limits: ServerLimits = ServerLimits(),
    max_concurrency: int | None = None,
    token: str | None = None,
) -> FastAPI:
    """The sandbox server as an ASGI app; the LocalSandbox starts and stops with it (lifespan).

    Args:
        config: how cells run (the server's settings apply to every client).
        limits: max_sessions live at most (429 beyond), max_sessions_per_client per client
            address (429), session_ttl_s idle before a session closes (then 404),
            max_code_bytes per cell and max_body_bytes per request (413), max_timeout_s per
            cell (default 30 s, or config.timeout_s if longer), kernel_wait_s for a free kernel (then 503),
            max_files sent and max_fetch_files / max_fetch_bytes fetched per /run_code.
        max_concurrency: cells executing at once (default config.max_concurrent_cells); excess queue.
        token: if set, every request must carry `Authorization: Bearer <token>`.
    """
    concurrency = max_concurrency or config.max_concurrent_cells
    max_timeout = limits.max_timeout_s or max(PROTOCOL_TIMEOUT_S, config.timeout_s)
    if limits.max_sessions < 1 or limits.session_ttl_s <= 0 or concurrency < 1:
        raise ValueError("max_sessions, session_ttl_s and max_concurrency must be positive")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sandbox = LocalSandbox(config, max_concurrent_cells=concurrency)
        await sandbox.start()
        state = _State(sandbox, limits)
        state.reaper = asyncio.create_task(state.reap())
        app.state.cortbench = state
        try:
            yield
        finally:
            await state.close()
            await sandbox.close()

    async def authorize(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="cortbench sandbox", version=_version(), lifespan=lifespan, dependencies=[Depends(authorize)]
    )
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 without echoing the input: a NaN in it would make FastAPI's own answer a 500."""
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]  # fmt: skip
        return JSONResponse({"detail": errors}, status_code=422)

    def check_code(code: str) -> None:
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > limits.max_code_bytes:
            raise HTTPException(413, f"code too large ({size} bytes; limit {limits.max_code_bytes})")

    @app.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        state = _state(request)
        sandbox = state.sandbox
        return Health(
            status="down" if sandbox.problem else "ok", isolated=sandbox.isolated, isolation_problem=sandbox.isolation_problem,
            layers=sandbox.layers, sessions=len(state.sessions), max_sessions=limits.max_sessions,
            running=sandbox.cells_running, queued=sandbox.cells_waiting, max_concurrency=concurrency,
            session_ttl_s=limits.session_ttl_s, timeout_s=config.timeout_s, max_timeout_s=max_timeout,
            preloaded=list(sandbox.preloaded), version=_version(),
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
        if body.run_timeout > max_timeout:  # clamped, not refused: SandboxFusion clients pick their own
            body.run_timeout = max_timeout
        if len(body.files) > limits.max_files or len(body.fetch_files) > limits.max_fetch_files:
            raise HTTPException(
                413, f"at most {limits.max_files} files and {limits.max_fetch_files} fetch_files per request"
            )
        try:
            async with state.sandbox.session() as kernel:
                await _take_kernel(kernel, limits)
                return await _unless_disconnected(
                    request, _run_with_io(kernel, body, state.sandbox.config, limits)
                )
        except SandboxError as exc:
            return _sandbox_error_response(f"exception on running code: {exc}")

    @app.post("/sessions", response_model=SessionCreated)
    async def create_session(request: Request) -> SessionCreated:
        state = _state(request)
        client = _client_of(request)

        def check_quota() -> None:
            if len(state.sessions) >= limits.max_sessions:
                raise HTTPException(429, f"too many sessions (limit {limits.max_sessions}); close some or retry later",
                                    headers={"Retry-After": "1"})  # fmt: skip
            if sum(s.client == client for s in state.sessions.values()) >= limits.max_sessions_per_client:
                raise HTTPException(429, f"too many sessions for {client} (limit {limits.max_sessions_per_client} per client)",
                                    headers={"Retry-After": "1"})  # fmt: skip

        check_quota()
        sid = uuid.uuid4().hex
        context = state.sandbox.session()
        kernel = await context.__aenter__()  # the kernel process itself starts with the first cell
        try:
            check_quota()  # others got in while we awaited
        except HTTPException:
            await context.__aexit__(None, None, None)
            raise
        state.sessions[sid] = _Session(sid, client, context, kernel)
        return SessionCreated(session_id=sid)

    @app.post("/sessions/{sid}/run", response_model=ExecResultModel)
    async def run_in_session(sid: str, body: SessionRunRequest, request: Request) -> dict[str, Any]:
        state = _state(request)
        check_code(body.code)
        if body.timeout is not None and body.timeout > max_timeout:
            raise HTTPException(422, f"timeout {body.timeout} exceeds this server's limit of {max_timeout} s")
        session = await state.lookup(sid)
        session.busy += 1
        try:
            async with session.lock:
                if state.sessions.get(sid) is not session:  # deleted while this request waited
                    raise HTTPException(404, f"no session {sid!r} (it was deleted)")
                await _take_kernel(session.kernel, limits)
                run = session.kernel.run(body.code, timeout=body.timeout, echo=body.echo)
                result = await _unless_disconnected(request, run)
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


async def _run_with_io(kernel: KernelSession, body: RunCodeRequest, config: SandboxConfig,
                       limits: ServerLimits) -> RunCodeResponse:  # fmt: skip
    """A /run_code in its own kernel: with `files` or `stdin`, a setup cell writes the files and
    sets sys.stdin first; after the code, each fetched file is read back in base64 chunks small
    enough for the kernel's output capture (SandboxConfig.record_chars), `max_fetch_bytes` in all."""
    for path, data in body.files.items():
        try:
            base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError):
            return _sandbox_error_response(f"files[{path!r}] is not valid base64")
    if body.files or body.stdin is not None:
        setup = await kernel.run(
            _SETUP_CELL.format(files=body.files, stdin=body.stdin), timeout=max(body.run_timeout, 10)
        )
        if not setup.ok:
            return _sandbox_error_response(f"could not set up files/stdin: {setup.error or setup.output}")
    result = await kernel.run(body.code, timeout=body.run_timeout)
    fetched: dict[str, str] = {}
    missing: list[str] = []
    budget = limits.max_fetch_bytes
    for path in body.fetch_files:
        content = (
            None if result.kernel_restarted else await _fetch_file(kernel, path, config.record_chars, budget)
        )
        if content is None:
            missing.append(path)
        else:
            budget -= len(content)
            fetched[path] = base64.b64encode(content).decode()
    message = ""
    if missing:
        message = f"could not fetch (missing, unreadable or over the {limits.max_fetch_bytes} bytes limit): {', '.join(missing)}"
    return to_run_code_response(result, fetched, message)


async def _fetch_file(kernel: KernelSession, path: str, record_chars: int, limit: int) -> bytes | None:
    """Read a file from the kernel's filesystem in base64 chunks that its output capture keeps
    whole; None if it is missing or larger than `limit` bytes."""
    chunk = max(3, record_chars // 4 * 3)
    data = b""
    while len(data) <= limit:
        got = await kernel.run(_FETCH_CELL.format(path=path, offset=len(data), size=chunk), timeout=30)
        text = got.stdout.strip()
        if not got.ok or text == "!missing":
            return None
        try:
            part = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):  # the code may have replaced the file or the printer
            return None
        data += part
        if len(part) < chunk:
            return data if len(data) <= limit else None
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str, port: int, config: SandboxConfig, *, token: str | None = None, insecure: bool = False,
          **app_kwargs: Any) -> None:  # fmt: skip
    """Run the sandbox server (blocking). `app_kwargs` go to `create_app`.

    Raises SandboxError for a non-loopback address without a token (unless `insecure`): anyone who
    reaches the port could run code on this machine.
    """
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and token is None and not insecure:
        raise SandboxError(
            f"refusing to serve on {host} without a token: anyone who reaches it could run code here. "
            f"Set --token (or {TOKEN_ENV}), bind 127.0.0.1, or pass --insecure on a network you trust"
        )
    uvicorn.run(create_app(config, token=token, **app_kwargs), host=host, port=port, log_level="warning",
                timeout_keep_alive=30)  # fmt: skip
