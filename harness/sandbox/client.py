"""Sandboxes on another machine: our own sandbox server ("remote") and SandboxFusion ("sandboxfusion").

    async with RemoteSandbox("http://sandbox-host:8080") as sandbox:     # `cortbench sandbox serve`
        async with sandbox.session() as kernel:
            result = await kernel.run("x = 2\\nprint(x ** 10)")

    async with SandboxFusionSandbox("http://sandboxfusion:8080") as sandbox:   # an existing deployment
        result = await sandbox.run_code("print(1)")

Both satisfy the `Sandbox` protocol, so `--sandbox remote` / `--sandbox sandboxfusion` swap them in.

Retries. Calls that are safe to repeat (creating, deleting a session, /health) are retried with
exponential backoff on connection errors, 5xx and 429. A cell is never sent twice to a stateful
kernel: a session run is retried only when the connection could not be made (the request never
left), because running `x += 1` twice would silently corrupt the trajectory's state.

Lost sessions. If the server answers 404 for a session (it expired after the server's idle TTL,
or the server restarted), the client opens a new session, runs the cell there, and returns its
result with the kernel-restarted note (`STATE_LOST_TEXT`): the model is told its variables are
gone, exactly as when a local kernel dies. The cell ran once (404 means it did not run before).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, TypedDict

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from ...tasks.spec import CORT_PROTOCOL
from ._base import SandboxBase, SandboxError, register_sandbox
from ._config import SandboxConfig
from ._records import TIMEOUT_TEXT, ExecResult, ExecStatus, mark_restarted, truncate_middle

TOKEN_ENV = "CORTBENCH_SANDBOX_TOKEN"  # the server's bearer token (server.py reads the same variable)
NOT_RUN_HEADER = "X-Cortbench-Not-Run"  # a 5xx/429 carrying it says the cell did not run

log = logging.getLogger("cortbench.sandbox.client")
_warned_unisolated: set[str] = set()

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # the request never left
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class _RetryStatus(Exception):
    """A response whose status says "try again" (429, 5xx) on a call that may be repeated."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:200]


class _HttpClient:
    """An httpx.AsyncClient with the retry policy above; shared by both sandboxes."""

    def __init__(self, url: str, max_connections: int, request_timeout: float | None, retries: int,
                 backoff_s: float, token: str | None = None) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.retries = max(1, retries)
        self.backoff_s = backoff_s
        self._client: httpx.AsyncClient | None = None

    def open(self) -> None:
        if self._client is None:
            # keep-alive shorter than uvicorn's (5 s default) so we never reuse a connection the
            # server is closing: that race would fail a cell run, which is not retried
            limits = httpx.Limits(max_connections=self.max_connections,
                                  max_keepalive_connections=self.max_connections, keepalive_expiry=4.0)  # fmt: skip
            self._client = httpx.AsyncClient(limits=limits, timeout=self.timeout(30.0), headers=self.headers)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def timeout(self, read: float | None) -> httpx.Timeout:
        """`read` None: wait as long as the server takes (it bounds every cell's time itself)."""
        if self.request_timeout is not None:
            return httpx.Timeout(self.request_timeout)
        return httpx.Timeout(connect=10.0, read=read, write=60.0, pool=None)

    async def request(self, method: str, path: str, *, json: Any = None, idempotent: bool,
                      read_timeout: float | None = 30.0, attempts: int | None = None) -> httpx.Response:  # fmt: skip
        """Send with retries. `idempotent`: also retry on any transport error, 429 and 5xx;
        otherwise only when the connection could not be made. Unreachable -> SandboxError."""
        if self._client is None:
            raise SandboxError(
                f"the sandbox client for {self.url} is not started (use `async with` or start())"
            )

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, _NOT_SENT):
                return True
            if isinstance(exc, _RetryStatus) and exc.response.headers.get(NOT_RUN_HEADER):
                return True  # the server says the cell did not run (no kernel was free)
            return idempotent and isinstance(exc, _RetryStatus | httpx.TransportError)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts or self.retries), retry=retry_if_exception(retryable),
            wait=wait_exponential(multiplier=self.backoff_s, max=8.0), reraise=True,
        )  # fmt: skip
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._client.request(method, self.url + path, json=json,
                                                          timeout=self.timeout(read_timeout))  # fmt: skip
                    if response.status_code in _RETRY_STATUSES and (
                        idempotent or response.headers.get(NOT_RUN_HEADER)
                    ):
                        raise _RetryStatus(response)
        except _RetryStatus as exc:
            return exc.response
        except _NOT_SENT as exc:
            raise SandboxError(f"cannot reach the sandbox server at {self.url}: {_one_line(exc)}") from None
        except httpx.TransportError as exc:  # sent, but no (complete) answer: not retried unless idempotent
            raise SandboxError(
                f"no answer from the sandbox server at {self.url} to {method} {path}: {_one_line(exc)}"
            ) from None
        return response


# ----------------------------------------------------------------------------- our server


class RemoteKernelSession:
    """One trajectory's kernel on the server. The server session is opened with the first cell."""

    def __init__(self, sandbox: RemoteSandbox) -> None:
        self._sandbox = sandbox
        self.session_id: str | None = None
        self.restarts = 0

    async def run(self, code: str, *, timeout: float | None = None, echo: bool | None = None) -> ExecResult:
        sandbox = self._sandbox
        config = sandbox.config
        payload = {
            "code": code,
            "timeout": timeout or (config.timeout_s if config else None),
            "echo": echo if echo is not None else (config.echo_last_expression if config else None),
        }
        lost = False
        if self.session_id is None:
            self.session_id = await sandbox._create_session()
        response = await sandbox._run_in(self.session_id, payload)
        if response.status_code == 404:  # expired or the server restarted: the cell did not run
            log.warning(
                "sandbox session %s is gone on %s; starting a new one (state lost)",
                self.session_id,
                sandbox.url,
            )
            sandbox._open.discard(self.session_id)
            self.session_id = await sandbox._create_session()
            response = await sandbox._run_in(self.session_id, payload)
            lost = True
        result = sandbox._cell_result(response)
        if lost:
            self.restarts += 1
            mark_restarted(
                result,
                "[The remote sandbox session had expired or its server restarted; a new session was opened.]",
            )
        elif result.kernel_restarted:
            self.restarts += 1
        return result

    async def close(self) -> None:
        if self.session_id is not None:
            sid, self.session_id = self.session_id, None
            await self._sandbox._delete_session(sid)


@register_sandbox("remote")
class RemoteSandbox(SandboxBase[RemoteKernelSession]):
    """Kernels on a `cortbench sandbox serve` host (see server.py), shared by many workers.

    Args:
        url: the server's base URL.
        config: optional; only `timeout_s` and `echo_last_expression` are used (sent with each
            cell). Everything else (limits, truncation, preloads) is the server's configuration.
        max_connections: HTTP connections to the server at most (cells beyond queue here).
        request_timeout: one limit for every HTTP call. Default: 10 s to connect, 30 s for
            control calls, no read limit for cells (the server bounds each cell's time and
            may queue it behind others).
        retries: attempts for retryable calls; backoff_s: first backoff (doubles each time).
        token: the server's bearer token (default: $CORTBENCH_SANDBOX_TOKEN).
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", config: SandboxConfig | None = None,
                 max_connections: int = 64, request_timeout: float | None = None, retries: int = 5,
                 backoff_s: float = 0.25, token: str | None = None) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.config = config
        self.isolated = False
        self.preloaded: list[str] = []
        self.server_version: str | None = None
        self.server_timeout_s: float = CORT_PROTOCOL.timeout_s
        token = token or os.environ.get(TOKEN_ENV) or None
        self._http = _HttpClient(self.url, max_connections, request_timeout, retries, backoff_s, token)
        self._open: set[str] = set()

    async def start(self) -> None:
        """Connect and read /health; SandboxError (one line, naming the URL) if it is unreachable."""
        self._http.open()
        try:
            health = await self.health(attempts=3)
        except SandboxError:
            await self._http.close()
            raise
        if health.get("status") != "ok":
            await self._http.close()
            raise SandboxError(f"the sandbox server at {self.url} is not healthy: {health}")
        self.isolated = bool(health.get("isolated"))
        self.preloaded = list(health.get("preloaded") or [])
        self.server_version = health.get("version")
        self.server_timeout_s = float(health.get("timeout_s") or CORT_PROTOCOL.timeout_s)
        if not self.isolated and self.url not in _warned_unisolated:
            _warned_unisolated.add(self.url)
            log.warning("cortbench: WARNING: the sandbox server at %s runs cells WITHOUT namespace isolation "
                        "(%s). Do not run untrusted models this way.", self.url, health.get("isolation_problem"))  # fmt: skip

    async def health(self, *, attempts: int | None = None) -> dict[str, Any]:
        response = await self._http.request("GET", "/health", idempotent=True, attempts=attempts)
        if response.status_code != 200:
            raise SandboxError(
                f"the sandbox server at {self.url} answered /health with HTTP {response.status_code}"
            )
        try:
            return response.json()
        except ValueError:
            raise SandboxError(
                f"{self.url}/health did not answer JSON: is this a cortbench sandbox server?"
            ) from None

    async def close(self) -> None:
        for sid in list(self._open):
            await self._delete_session(sid)
        await self._http.close()

    def new_session(self) -> RemoteKernelSession:
        return RemoteKernelSession(self)

    async def run_code(self, code: str, *, timeout: float | None = None) -> ExecResult:
        """One stateless cell (POST /run_code). Not retried once sent."""
        timeout = timeout or (self.config.timeout_s if self.config else self.server_timeout_s)
        response = await self._http.request("POST", "/run_code", idempotent=False, read_timeout=None,
                                            json={"code": code, "language": "python", "run_timeout": timeout})  # fmt: skip
        if response.status_code == 413:
            return _too_large(response)
        if response.status_code != 200:
            raise SandboxError(
                f"the sandbox server at {self.url} answered HTTP {response.status_code}: {_detail(response)}"
            )
        body = response.json()
        if body.get("cortbench") is None:
            raise SandboxError(
                f"the sandbox server at {self.url} failed: {body.get('message') or body.get('status')}"
            )
        return ExecResult.from_dict(body["cortbench"])

    # internals used by RemoteKernelSession

    async def _create_session(self) -> str:
        response = await self._http.request("POST", "/sessions", idempotent=True)
        if response.status_code != 200:
            raise SandboxError(f"the sandbox server at {self.url} could not open a session "
                               f"(HTTP {response.status_code}: {_detail(response)})")  # fmt: skip
        sid = response.json()["session_id"]
        self._open.add(sid)
        return sid

    async def _delete_session(self, sid: str) -> None:
        """Best effort: a session we cannot delete expires on the server after its TTL."""
        self._open.discard(sid)
        try:
            await self._http.request("DELETE", f"/sessions/{sid}", idempotent=True, attempts=2)
        except SandboxError as exc:
            log.debug("could not delete sandbox session %s: %s", sid, exc)

    async def _run_in(self, sid: str, payload: dict[str, Any]) -> httpx.Response:
        return await self._http.request(
            "POST", f"/sessions/{sid}/run", json=payload, idempotent=False, read_timeout=None
        )

    def _cell_result(self, response: httpx.Response) -> ExecResult:
        if response.status_code == 413:
            return _too_large(response)
        if response.status_code != 200:
            raise SandboxError(
                f"the sandbox server at {self.url} answered HTTP {response.status_code}: {_detail(response)}"
            )
        return ExecResult.from_dict(response.json())


def _too_large(response: httpx.Response) -> ExecResult:
    """A cell over the server's size cap is the model's error, not the sandbox's: tell the model."""
    text = f"Error: {_detail(response)}"
    return ExecResult(status=ExecStatus.ERROR, output=text, error_name="CodeTooLarge", error=text)


# ----------------------------------------------------------------------------- SandboxFusion


REPLAY_FAILED = "[cortbench: replaying the earlier code blocks failed]"
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_EXC_NAME = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration))(?::|$)")


def replay_program(cells: list[str], code: str) -> str:
    """`code` preceded by one line that re-runs `cells` (earlier successful cells) with their
    stdout and stderr suppressed; if that replay raises, it prints REPLAY_FAILED and exits 1."""
    if not cells:
        return code
    prelude = (
        "import contextlib as _cb_cl, io as _cb_io, sys as _cb_sys\n"
        "try:\n"
        "    with _cb_cl.redirect_stdout(_cb_io.StringIO()), _cb_cl.redirect_stderr(_cb_io.StringIO()):\n"
        f"        for _cb_src in {cells!r}:\n"
        "            exec(compile(_cb_src, '<replayed cell>', 'exec'), globals())\n"
        "except BaseException as _cb_exc:\n"
        f"    print({REPLAY_FAILED!r}, type(_cb_exc).__name__, file=_cb_sys.stderr)\n"
        "    raise SystemExit(1)\n"
        "del _cb_cl, _cb_io, _cb_sys, _cb_src\n"
    )
    return f"exec(compile({prelude!r}, '<cortbench replay>', 'exec'))\n{code}"


def _shift_lines(traceback_text: str, by: int) -> str:
    """Undo the replay line's offset in frames of the program's own file (the first one named)."""
    first = _FRAME.search(traceback_text)
    if first is None or by == 0:
        return traceback_text
    main = first.group(1)

    def fix(match: re.Match) -> str:
        if match.group(1) != main:
            return match.group(0)
        return f'File "{main}", line {max(1, int(match.group(2)) - by)}'

    return _FRAME.sub(fix, traceback_text)


def _error_name(traceback_text: str) -> str | None:
    """The exception's name from the traceback's last line (or the last line that looks like one)."""
    lines = [line for line in traceback_text.strip().splitlines() if line and not line.startswith(" ")]
    for pattern in (_EXC_NAME, _EXC_LINE):
        for line in reversed(lines):
            match = pattern.match(line)
            if match:
                return match.group(1).rsplit(".", 1)[-1]
    return None


class _RunFields(TypedDict):
    """What every ExecResult from one SandboxFusion run carries, whatever its status."""

    stdout: str
    stderr: str
    duration_s: float
    stdout_chars: int


def result_from_sandboxfusion(body: dict[str, Any], config: SandboxConfig, line_offset: int = 0,
                              wall_s: float = 0.0) -> ExecResult:  # fmt: skip
    """Map a SandboxFusion RunCodeResponse for a python run onto an ExecResult with CoRT's text:
    stdout on success; on error the traceback (from stderr, without what the program wrote to
    stderr before it), stripped and truncated; "Timeout Error" on a timeout."""
    status = body.get("status")
    run = body.get("run_result") or {}
    if status == "SandboxError" or run.get("status") == "Error" or not run:
        raise SandboxError(
            f"SandboxFusion failed: {(body.get('message') or run.get('stderr') or status or body)!s:.500}"
        )
    stdout, stderr = run.get("stdout") or "", run.get("stderr") or ""
    duration = float(run.get("execution_time") or wall_s)
    common: _RunFields = {
        "stdout": stdout,
        "stderr": stderr,
        "duration_s": duration,
        "stdout_chars": len(stdout),
    }
    if run.get("status") == "TimeLimitExceeded":
        return ExecResult(status=ExecStatus.TIMEOUT, output=TIMEOUT_TEXT, error_name="TimeoutError", **common)
    code = run.get("return_code")
    if code == 0:
        text, truncated = truncate_middle(stdout.strip(), config.output_head, config.output_tail)
        return ExecResult(status=ExecStatus.OUTPUT_TRUNCATED if truncated else ExecStatus.OK, output=text,
                          truncated=truncated, **common)  # fmt: skip
    start = stderr.find("Traceback (most recent call last):")
    tb = _shift_lines(stderr[start:] if start >= 0 else stderr, line_offset).strip()
    name = _error_name(tb) if tb else None
    if not tb:
        how = (
            f"was killed by signal {-code}"
            if isinstance(code, int) and code < 0
            else f"exited with code {code}"
        )
        tb = f"Error: the Python process {how} without a traceback."
        name = "KernelDied"
    status_ = ExecStatus.MEMORY if name == "MemoryError" else ExecStatus.ERROR
    if isinstance(code, int) and (code < 0 or code > 128) and name == "KernelDied":
        status_ = ExecStatus.KILLED
    text, truncated = truncate_middle(tb, config.output_head, config.output_tail)
    return ExecResult(status=status_, output=text, error_name=name, error=tb, truncated=truncated, **common)


class ReplayKernelSession:
    """State emulated on a stateless SandboxFusion: every run re-executes the earlier successful
    cells (output suppressed) before the new one.

    Limitations: earlier cells' side effects, randomness and time are re-run every time (a
    `random.random()` value, a file appended to or a counter changes from call to call); each run
    costs the time of all earlier cells (the run timeout is extended by their durations); failed
    cells are not replayed (CoRT drops them too), so assignments made before their error are
    lost; `echo` is not supported. If the replay itself fails (a replayed cell raises this time),
    the history is dropped, the cell runs alone and the model gets the kernel-restarted note.
    """

    def __init__(self, sandbox: SandboxFusionSandbox) -> None:
        self._sandbox = sandbox
        self.cells: list[tuple[str, float]] = []  # successful cells and how long they took
        self.restarts = 0

    async def close(self) -> None:
        """Nothing to release: SandboxFusion keeps no state between calls."""

    async def run(self, code: str, *, timeout: float | None = None, echo: bool | None = None) -> ExecResult:
        timeout = timeout or self._sandbox.timeout_s
        history = [cell for cell, _ in self.cells]
        extra = sum(duration for _, duration in self.cells)
        result = await self._sandbox._execute(
            replay_program(history, code), timeout + extra, 1 if history else 0
        )
        if history and REPLAY_FAILED in result.stderr:
            self.cells.clear()
            self.restarts += 1
            result = await self._sandbox._execute(code, timeout, 0)
            mark_restarted(
                result, "[Re-running the earlier code blocks failed, so their state could not be restored.]"
            )
        if result.ok:
            self.cells.append((code, max(0.0, result.duration_s - extra)))
        return result


@register_sandbox("sandboxfusion")
class SandboxFusionSandbox(SandboxBase[ReplayKernelSession]):
    """An existing SandboxFusion deployment (bytedance/SandboxFusion `/run_code`), stateless.

    `run_code` is one SandboxFusion run; `session()` emulates a persistent kernel by replay (see
    ReplayKernelSession for what that cannot do). A cortbench server's /run_code also works.

    Args:
        url: the deployment's base URL (a trailing `/run_code`, as verl configures it, is fine).
        config: timeout_s (default per cell) and output_head/output_tail (CoRT truncation).
        memory_limit_mb: sent as memory_limit_MB (-1: the deployment's default).
        isolated: what the deployment provides; it cannot be checked from here.
        probe: run `pass` at start() to fail early if the URL is wrong.
        retries: attempts on connection failures, 429 and 5xx; a rerun is harmless
            because every SandboxFusion run starts from nothing.
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", config: SandboxConfig | None = None,
                 max_connections: int = 64, request_timeout: float | None = None, retries: int = 4,
                 backoff_s: float = 0.5, memory_limit_mb: int = -1, compile_timeout: float = 10.0,
                 isolated: bool = True, probe: bool = True) -> None:  # fmt: skip
        url = url.rstrip("/")
        self.url = url[: -len("/run_code")] if url.endswith("/run_code") else url
        self.config = config or SandboxConfig()
        self.timeout_s = self.config.timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.compile_timeout = compile_timeout
        self.isolated = isolated
        self.probe = probe
        self._http = _HttpClient(self.url, max_connections, request_timeout, retries, backoff_s)

    async def start(self) -> None:
        self._http.open()
        if self.probe:
            try:
                result = await self._execute("pass", 10.0, 0, attempts=2)
            except SandboxError as exc:
                await self._http.close()
                raise SandboxError(f"SandboxFusion at {self.url} does not work: {exc}") from None
            if not result.ok:
                await self._http.close()
                raise SandboxError(f"SandboxFusion at {self.url} cannot run `pass`: {result.output[:200]}")

    async def close(self) -> None:
        await self._http.close()

    def new_session(self) -> ReplayKernelSession:
        return ReplayKernelSession(self)

    async def run_code(self, code: str, *, timeout: float | None = None) -> ExecResult:
        return await self._execute(code, timeout or self.timeout_s, 0)

    async def _execute(
        self, program: str, timeout: float, line_offset: int, attempts: int | None = None
    ) -> ExecResult:
        payload = {
            "code": program, "language": "python", "run_timeout": timeout, "compile_timeout": self.compile_timeout,
            "memory_limit_MB": self.memory_limit_mb, "stdin": None, "files": {}, "fetch_files": [],
        }  # fmt: skip
        start = time.perf_counter()
        response = await self._http.request("POST", "/run_code", json=payload, idempotent=True, attempts=attempts,
                                            read_timeout=timeout + self.compile_timeout + 10.0)  # fmt: skip
        if response.status_code != 200:
            raise SandboxError(
                f"SandboxFusion at {self.url} answered HTTP {response.status_code}: {_detail(response)}"
            )
        try:
            body = response.json()
        except ValueError:
            raise SandboxError(f"SandboxFusion at {self.url} did not answer JSON") from None
        return result_from_sandboxfusion(body, self.config, line_offset, time.perf_counter() - start)
