"""The local sandbox: a zygote process forks isolated, persistent kernels on this machine."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import asdict
from typing import Any

from . import _wire
from ._base import SandboxBase, SandboxError, register_sandbox
from ._config import SandboxConfig
from ._records import TIMEOUT_TEXT, ExecResult, ExecStatus, mark_restarted, truncate_middle

log = logging.getLogger("cortbench.sandbox")
_warned_unisolated = False

_SIGNAL_TEXT = {
    signal.SIGSEGV: "the Python kernel crashed with a segmentation fault (SIGSEGV)",
    signal.SIGBUS: "the Python kernel crashed with a bus error (SIGBUS)",
    signal.SIGABRT: "the Python kernel aborted (SIGABRT)",
    signal.SIGFPE: "the Python kernel crashed with a floating-point exception (SIGFPE)",
    signal.SIGILL: "the Python kernel crashed with an illegal instruction (SIGILL)",
    signal.SIGKILL: "the Python kernel was killed (SIGKILL), for example by the code itself or for exceeding its memory",
    signal.SIGXCPU: "the Python kernel used up its CPU time limit (SIGXCPU)",
    signal.SIGXFSZ: "the Python kernel exceeded its file size limit (SIGXFSZ)",
}


def _sandbox_env() -> dict[str, str]:
    """The kernels' whole environment: nothing of the harness's (tokens, keys) is passed on."""
    bindir = os.path.dirname(sys.executable)
    return {
        "PATH": os.pathsep.join(dict.fromkeys([bindir, "/usr/local/bin", "/usr/bin", "/bin"])),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/tmp",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "CORTBENCH_HARNESS_PID": str(os.getpid()),
    }


def _captured(wire: Any) -> tuple[str, str, int]:
    if not isinstance(wire, dict):
        raise _wire.WireError("capture is not an object")
    head, tail, total = wire.get("head"), wire.get("tail"), wire.get("total")
    if not (isinstance(head, str) and isinstance(tail, str) and isinstance(total, int)):
        raise _wire.WireError("malformed capture")
    return head, tail, total


def _record_text(head: str, tail: str, total: int) -> str:
    omitted = total - len(head) - len(tail)
    return head + tail if omitted <= 0 else f"{head}\n[... {omitted} characters omitted ...]\n{tail}"


def _model_text(head: str, tail: str, total: int, config: SandboxConfig) -> tuple[str, bool]:
    """CoRT's text: stripped, then truncated to head + "..." + tail characters."""
    if total <= len(head) + len(tail):
        return truncate_middle((head + tail).strip(), config.output_head, config.output_tail)
    end = tail.rstrip()[-config.output_tail :] if config.output_tail else ""
    return head.lstrip()[: config.output_head] + "..." + end, True


def result_from_reply(reply: dict[str, Any], config: SandboxConfig, duration: float) -> ExecResult:
    """Turn a kernel's (untrusted) reply into an ExecResult; WireError if it is malformed."""
    status = reply.get("status")
    if status not in ("ok", "error", "timeout", "memory"):
        raise _wire.WireError(f"unknown status {status!r}")
    out, err = _captured(reply.get("stdout")), _captured(reply.get("stderr"))
    tb = reply.get("traceback")
    error_name = reply.get("error_name")
    procs, threads = reply.get("procs_killed", 0), reply.get("threads_alive", [])
    if not (isinstance(tb, str | None) and isinstance(error_name, str | None) and isinstance(procs, int)):
        raise _wire.WireError("malformed reply")
    if not isinstance(threads, list):
        raise _wire.WireError("malformed reply")

    truncated = False
    if status == "ok":
        text, truncated = _model_text(*out, config)
    elif status == "timeout":
        text = TIMEOUT_TEXT
    else:
        text, truncated = truncate_middle((tb or "").strip(), config.output_head, config.output_tail)
    notes = []
    if procs:
        notes.append(
            f"[{procs} background process(es) started by this code were still running and were killed.]"
        )
    result = ExecResult(
        status=ExecStatus(status),
        output="\n".join(part for part in (text, *notes) if part),
        stdout=_record_text(*out),
        stderr=_record_text(*err),
        error_name=error_name,
        error=tb,
        duration_s=duration,
        cpu_s=reply["cpu"] if isinstance(reply.get("cpu"), float) else None,
        peak_memory_mb=round(reply.get("maxrss_kb", 0) / 1024, 1)
        if isinstance(reply.get("maxrss_kb"), int)
        else None,
        stdout_chars=out[2],
        truncated=truncated,
        notes=notes,
    )
    if status == "ok" and truncated:
        result.status = ExecStatus.OUTPUT_TRUNCATED
    if threads:
        mark_restarted(
            result,
            "[Threads started by this code were still running when it finished; background threads are not supported.]",
        )
    return result


def death_result(exit_code: int | None, duration: float, by_timeout: bool) -> ExecResult:
    """A cell whose kernel died or had to be killed."""
    if by_timeout:
        status, name, why = ExecStatus.TIMEOUT, "TimeoutError", TIMEOUT_TEXT
    elif exit_code is not None and exit_code > 128:
        sig = exit_code - 128
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        status = ExecStatus.TIMEOUT if sig == signal.SIGXCPU else ExecStatus.KILLED
        why = f"KernelDied: {_SIGNAL_TEXT.get(sig, f'the Python kernel was killed by {name}')}."
    elif exit_code is not None:
        status, name = ExecStatus.KILLED, "KernelExited"
        why = f"KernelDied: the Python kernel process exited with code {exit_code} (os._exit or a similar call)."
    else:
        status, name, why = (
            ExecStatus.KILLED,
            "KernelDied",
            "KernelDied: the Python kernel stopped responding.",
        )
    return mark_restarted(
        ExecResult(status=status, output=why, error_name=name, error=why, duration_s=duration)
    )


class _KernelProcess:
    """The harness's handle on one kernel process (PID 1 of its namespace when isolated)."""

    def __init__(self, kid: int, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.kid, self.pid = kid, pid
        self.reader, self.writer = reader, writer
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.killed = False

    def kill(self) -> None:
        """Kill the kernel and everything it started (its PID namespace, or its session)."""
        if self.killed or self.exited.done():
            self.killed = True
            return
        self.killed = True
        for send in (os.kill, os.killpg):
            try:
                send(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.writer.close()

    async def exit_code(self, wait: float) -> int | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), wait)
        except TimeoutError:
            return None

    async def execute(self, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        self.writer.write(_wire.encode(request))
        await self.writer.drain()
        return await asyncio.wait_for(_wire.read_frame(self.reader), deadline)


class LocalKernelSession:
    """A trajectory's kernel; replaced transparently (and the model told) when it dies."""

    def __init__(self, sandbox: LocalSandbox) -> None:
        self._sandbox = sandbox
        self._proc: _KernelProcess | None = None
        self._holds_kernel_slot = False  # kept across restarts, given back at close
        self.restarts = 0

    async def run(self, code: str, *, timeout: float | None = None, echo: bool | None = None) -> ExecResult:
        config = self._sandbox.config
        timeout = timeout or config.timeout_s
        if self._proc is None:  # outside the CPU semaphore: a slot must not idle while a kernel starts
            if not self._holds_kernel_slot:
                await self._sandbox._kernel_slots.acquire()
                self._holds_kernel_slot = True
            self._proc = await self._sandbox._acquire()
        proc = self._proc
        async with self._sandbox._cells:
            request = {
                "code": code,
                "timeout": timeout,
                "echo": config.echo_last_expression if echo is None else echo,
            }
            start = time.perf_counter()
            try:
                reply = await proc.execute(request, timeout + config.kill_grace_s)
                result = result_from_reply(reply, config, time.perf_counter() - start)
            except TimeoutError:
                proc.kill()
                result = death_result(None, time.perf_counter() - start, by_timeout=True)
            except (EOFError, OSError, _wire.WireError):
                code_ = await proc.exit_code(1.0)
                proc.kill()
                result = death_result(code_, time.perf_counter() - start, by_timeout=False)
        if result.kernel_restarted:
            proc.kill()
            self._proc = None
            self.restarts += 1
        return result

    async def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc = None
        if self._holds_kernel_slot:
            self._holds_kernel_slot = False
            self._sandbox._kernel_slots.release()


@register_sandbox("local")
class LocalSandbox(SandboxBase):
    """Isolated, persistent, pre-forked Python kernels on this machine.

    Use as `async with LocalSandbox(config) as sandbox:`; then `async with sandbox.session() as k:
    await k.run(code)` for a trajectory, or `await sandbox.run_code(code)` for one stateless cell.
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        self.config = SandboxConfig(**{**asdict(config or SandboxConfig()), **overrides})
        self.isolated = False
        self.isolation_problem: str | None = None
        self.preloaded: list[str] = []
        self._cells = asyncio.Semaphore(self.config.max_concurrent_cells)
        self._kernel_slots = asyncio.Semaphore(self.config.max_kernels)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._kernels: dict[int, _KernelProcess] = {}
        self._idle: list[_KernelProcess] = []
        self._refills: set[asyncio.Task] = set()
        self._ctl: socket.socket | None = None
        self._zygote: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future | None = None
        self._dead: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the sandbox cannot run cells (not started, zygote died, closed); None when it can."""
        if self._ctl is None and self._dead is None:
            return "not started"
        return self._dead

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._zygote = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cortbench.harness.sandbox._zygote", str(theirs.fileno()),
            pass_fds=(theirs.fileno(),), env=_sandbox_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        theirs.close()
        ours.setblocking(False)
        self._ctl = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_control)
        config = {**asdict(self.config), "preload": list(self.config.preload)}
        await loop.sock_sendall(ours, json.dumps(config).encode())
        try:
            ready = await asyncio.wait_for(self._ready, 120)
        except (TimeoutError, SandboxError) as exc:
            await self.close()
            raise SandboxError(f"the sandbox's zygote process did not start: {exc}") from None
        self.isolated, self.isolation_problem, self.preloaded = (
            ready["isolated"],
            ready["reason"],
            ready["preloaded"],
        )
        if not self.isolated:
            self._report_unisolated()
        self._refill()

    def _report_unisolated(self) -> None:
        global _warned_unisolated
        why = self.isolation_problem or "disabled by configuration (isolation='none')"
        if self.config.isolation == "namespaces":
            raise SandboxError(f"kernel isolation is unavailable here: {why}")
        if self.config.isolation == "auto" and not _warned_unisolated:
            _warned_unisolated = True
            message = (
                f"cortbench: WARNING: sandbox namespaces are unavailable ({why}). Cells run with resource "
                "limits, a scrubbed environment and their own session only: NO network, filesystem or "
                "PID isolation. Do not run untrusted models this way."
            )
            print(message, file=sys.stderr, flush=True)  # not logging: it must not be filtered away

    def _on_control(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self._ctl, 1 << 16, 4)
        except BlockingIOError:
            return
        except OSError as exc:
            data, fds = b"", []
            self._dead = str(exc)
        if not data:
            self._zygote_died()
            return
        message = json.loads(data)
        if "ready" in message:
            self._ready.set_result(message)
        elif "spawned" in message:
            future = self._pending.pop(message["spawned"], None)
            if future is not None and not future.done():
                future.set_result((message, fds[0]))
            else:
                for fd in fds:
                    os.close(fd)
        elif "exited" in message:
            proc = self._kernels.pop(message["exited"], None)
            if proc is not None and not proc.exited.done():
                proc.exited.set_result(message["code"])

    def _zygote_died(self) -> None:
        self._dead = self._dead or "the zygote process exited"
        asyncio.get_running_loop().remove_reader(self._ctl.fileno())
        error = SandboxError(f"sandbox is down: {self._dead}")
        for future in [self._ready, *self._pending.values()]:
            if future is not None and not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _spawn(self) -> _KernelProcess:
        if self._dead or self._ctl is None:
            raise SandboxError(f"sandbox is down: {self._dead or 'not started'}")
        kid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[kid] = future
        await asyncio.get_running_loop().sock_sendall(self._ctl, json.dumps({"spawn": kid}).encode())
        _, fd = await future
        reader, writer = await asyncio.open_unix_connection(
            sock=socket.socket(fileno=fd), limit=_wire.MAX_FRAME
        )
        try:  # the keeper announces the kernel's pid, then the kernel greets once it is sealed
            pid = int((await asyncio.wait_for(_wire.read_frame(reader), 60))["pid"])
        except (EOFError, TimeoutError, _wire.WireError, KeyError, ValueError) as exc:
            writer.close()
            raise SandboxError(f"a kernel failed to start: {exc}") from None
        proc = _KernelProcess(kid, pid, reader, writer)
        self._kernels[kid] = proc
        try:
            hello = await asyncio.wait_for(_wire.read_frame(reader), 60)
        except (EOFError, TimeoutError, _wire.WireError) as exc:
            code = await proc.exit_code(1.0)
            proc.kill()
            raise SandboxError(f"a kernel failed to start (exit code {code}): {exc}") from None
        if not hello.get("ready"):
            proc.kill()
            raise SandboxError("a kernel failed to start: bad greeting")
        return proc

    async def _acquire(self) -> _KernelProcess:
        while self._idle:
            proc = self._idle.pop()
            if not proc.exited.done() and not proc.killed:
                self._refill()
                return proc
        proc = await self._spawn()
        self._refill()
        return proc

    def _refill(self) -> None:
        missing = self.config.warm_kernels - len(self._idle) - len(self._refills)
        for _ in range(max(0, missing)):
            task = asyncio.create_task(self._spawn_idle())
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)

    async def _spawn_idle(self) -> None:
        try:
            self._idle.append(await self._spawn())
        except SandboxError as exc:
            log.warning("could not pre-start a kernel: %s", exc)

    def new_session(self) -> LocalKernelSession:
        return LocalKernelSession(self)

    async def run_code(self, code: str, *, timeout: float | None = None) -> ExecResult:
        """Run one cell in a fresh kernel (stateless)."""
        async with self.session() as session:
            return await session.run(code, timeout=timeout)

    async def close(self) -> None:
        for task in list(self._refills):
            task.cancel()
        for proc in list(self._kernels.values()) + self._idle:
            proc.kill()
        self._idle.clear()
        if self._ctl is not None:
            if not self._dead:
                asyncio.get_running_loop().remove_reader(self._ctl.fileno())
            self._dead = self._dead or "closed"
            self._ctl.close()
            self._ctl = None
        if self._zygote is not None and self._zygote.returncode is None:
            try:
                await asyncio.wait_for(self._zygote.wait(), 5)
            except TimeoutError:
                self._zygote.kill()
                await self._zygote.wait()
