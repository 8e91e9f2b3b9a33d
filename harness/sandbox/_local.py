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
from ._isolation import OPTIONAL as OPTIONAL_LAYERS
from ._records import TIMEOUT_TEXT, ExecResult, ExecStatus, join_ends, mark_restarted, truncate_middle

log = logging.getLogger("cortbench.sandbox")
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr, flush=True)


_SIGNAL_TEXT: dict[int, str] = {  # by signal number (a Signals is one)
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


MAX_COUNT = 1 << 53


def frame_limit(config: SandboxConfig) -> int:
    """The largest reply an honest kernel sends: four captured ends and a traceback's two, of
    `capture_chars` each (JSON may escape a character to 6 bytes), and the small fields."""
    keep = _wire.capture_chars(vars(config))
    return 6 * (6 * keep + _wire.NAME_CHARS * (_wire.MAX_THREADS + 2) + 400) + 4096


def _text(value: Any, cap: int, what: str) -> str:
    """Untrusted text from a kernel: a str of at most `cap` characters, lone surrogates replaced."""
    if not isinstance(value, str):
        raise _wire.WireError(f"{what} is not text")
    if len(value) > cap:
        raise _wire.WireError(f"{what} of {len(value)} characters exceeds {cap}")
    return value.encode("utf-8", "replace").decode("utf-8") if not value.isascii() else value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise _wire.WireError(f"{what} is not a count")
    return value


def _captured(wire: Any, keep: int, what: str) -> tuple[str, str, int]:
    if not isinstance(wire, dict):
        raise _wire.WireError(f"{what} capture is not an object")
    head, tail = _text(wire.get("head"), keep, f"{what} head"), _text(wire.get("tail"), keep, f"{what} tail")
    return head, tail, _count(wire.get("total"), f"{what} total")


def _model_text(head: str, tail: str, total: int, config: SandboxConfig) -> tuple[str, bool]:
    """CoRT's text: stripped, then truncated to head + "..." + tail characters."""
    if total <= len(head) + len(tail):
        return truncate_middle((head + tail).strip(), config.output_head, config.output_tail)
    end = tail.rstrip()[-config.output_tail :] if config.output_tail else ""
    return head.lstrip()[: config.output_head] + "..." + end, True


def result_from_reply(reply: dict[str, Any], config: SandboxConfig, duration: float, seq: int) -> ExecResult:
    """Turn a kernel's (untrusted) reply into an ExecResult; WireError if it is anything but a
    well-formed answer to request `seq` within every field's cap."""
    try:
        return _result_from_reply(reply, config, duration, seq)
    except _wire.WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a forged reply trips, it is the kernel's fault
        raise _wire.WireError(f"malformed reply ({type(exc).__name__})") from None


def _result_from_reply(reply: dict[str, Any], config: SandboxConfig, duration: float, seq: int) -> ExecResult:
    if reply.get("seq") != seq or isinstance(reply.get("seq"), bool):
        raise _wire.WireError(f"reply to request {reply.get('seq')!r}, expected {seq}")
    status = reply.get("status")
    if status not in ("ok", "error", "timeout", "memory"):
        raise _wire.WireError("unknown status")
    keep = _wire.capture_chars(vars(config))
    out, err = _captured(reply.get("stdout"), keep, "stdout"), _captured(reply.get("stderr"), keep, "stderr")
    tb = reply.get("traceback")
    tb = None if tb is None else _text(tb, 2 * keep + 100, "traceback")
    error_name = reply.get("error_name")
    error_name = None if error_name is None else _text(error_name, _wire.NAME_CHARS, "error name")
    procs = _count(reply.get("procs_killed", 0), "procs_killed")
    threads = reply.get("threads_alive", [])
    if not isinstance(threads, list) or len(threads) > _wire.MAX_THREADS:
        raise _wire.WireError("malformed threads_alive")
    threads = [_text(name, _wire.NAME_CHARS, "thread name") for name in threads]
    cpu = reply.get("cpu")
    cpu = float(cpu) if isinstance(cpu, int | float) and not isinstance(cpu, bool) and cpu >= 0 else None
    maxrss = reply.get("maxrss_kb")
    peak_mb = round(_count(maxrss, "maxrss_kb") / 1024, 1) if maxrss is not None else None

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
        stdout=join_ends(*out),
        stderr=join_ends(*err),
        error_name=error_name,
        error=tb,
        duration_s=duration,
        cpu_s=cpu,
        peak_memory_mb=peak_mb,
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


def death_result(
    exit_code: int | None,
    duration: float,
    *,
    by_timeout: bool = False,
    oom_limit_mb: int | None = None,
    broken: str | None = None,
) -> ExecResult:
    """A cell whose kernel died or had to be killed: timed out, killed at its cgroup's memory
    limit (`oom_limit_mb`), broke the wire protocol (`broken`), or died of `exit_code`."""
    if by_timeout:
        status, name, why = ExecStatus.TIMEOUT, "TimeoutError", TIMEOUT_TEXT
    elif oom_limit_mb is not None:
        status, name = ExecStatus.MEMORY, "MemoryError"
        why = (f"KernelDied: the Python kernel was killed for exceeding its memory limit of {oom_limit_mb} MiB "
               "(its memory and its files in /tmp and /dev/shm together).")  # fmt: skip
    elif broken is not None:
        status, name = ExecStatus.KILLED, "KernelDied"
        why = "KernelDied: the Python kernel sent the harness a malformed reply and was replaced."
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
    result = ExecResult(status=status, output=why, error_name=name, error=why, duration_s=duration)
    if broken is not None:
        result.notes.append(f"wire: {broken}")
    return mark_restarted(result)


class _KernelProcess:
    """The harness's handle on one kernel process (PID 1 of its namespace when isolated)."""

    def __init__(self, kid: int, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 frame_limit: int) -> None:  # fmt: skip
        self.kid, self.pid = kid, pid
        self.reader, self.writer = reader, writer
        self.frame_limit = frame_limit
        self.exited: asyncio.Future[tuple[int, bool]] = (
            asyncio.get_running_loop().create_future()
        )  # (code, oom)
        self.killed = False
        self.seq = 0

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

    async def exit_status(self, wait: float) -> tuple[int | None, bool]:
        """The kernel's exit code (None if it has not exited within `wait` s) and whether the OOM
        killer ended it."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), wait)
        except TimeoutError:
            return None, False

    async def execute(self, request: dict[str, Any], deadline: float) -> tuple[int, dict[str, Any]]:
        self.seq += 1
        self.writer.write(_wire.encode({**request, "seq": self.seq}))
        await self.writer.drain()
        return self.seq, await asyncio.wait_for(_wire.read_frame(self.reader, self.frame_limit), deadline)


class LocalKernelSession:
    """A trajectory's kernel; replaced transparently (and the model told) when it dies."""

    def __init__(self, sandbox: LocalSandbox) -> None:
        self._sandbox = sandbox
        self._proc: _KernelProcess | None = None
        self._holds_kernel_slot = False  # kept across restarts, given back at close
        self._state_lost = False  # a cell was cancelled mid-run: the next result says so
        self.restarts = 0

    async def start(self, timeout: float | None = None) -> None:
        """Take a kernel slot and a kernel now (run() does it otherwise). Outside the CPU
        semaphore, so a cell slot never idles while a kernel starts or waits for a slot;
        TimeoutError if no slot frees up within `timeout` seconds (None: wait)."""
        if self._proc is not None:
            return
        if not self._holds_kernel_slot:
            await asyncio.wait_for(self._sandbox._kernel_slots.acquire(), timeout)
            self._holds_kernel_slot = True
        self._proc = await self._sandbox._acquire()

    async def run(self, code: str, *, timeout: float | None = None, echo: bool | None = None) -> ExecResult:
        config = self._sandbox.config
        timeout = timeout or config.timeout_s
        await self.start()
        proc = self._proc
        assert proc is not None  # start() took one
        request = {
            "code": code,
            "timeout": timeout,
            "echo": config.echo_last_expression if echo is None else echo,
        }
        self._sandbox.cells_waiting += 1
        try:
            await self._sandbox._cells.acquire()
        finally:
            self._sandbox.cells_waiting -= 1
        self._sandbox.cells_running += 1
        start = time.perf_counter()
        try:
            seq, reply = await proc.execute(request, timeout + config.kill_grace_s)
            result = result_from_reply(reply, config, time.perf_counter() - start, seq)
        except TimeoutError:
            proc.kill()
            result = death_result(None, time.perf_counter() - start, by_timeout=True)
        except _wire.WireError as exc:  # alive but lying, or worse: never trust it again
            proc.kill()
            result = death_result(None, time.perf_counter() - start, broken=str(exc)[:200])
        except (EOFError, OSError):
            exit_code, oom = await proc.exit_status(1.0)
            proc.kill()
            limit = self._sandbox.kernel_memory_limit_mb if oom else None
            result = death_result(exit_code, time.perf_counter() - start, oom_limit_mb=limit)
        except BaseException:  # cancelled (client gone, Ctrl-C): the kernel's state is unknown
            proc.kill()
            self._proc, self._state_lost = None, True
            raise
        finally:
            self._sandbox.cells_running -= 1
            self._sandbox._cells.release()
        if result.kernel_restarted:
            proc.kill()
            self._proc = None
            self.restarts += 1
        if self._state_lost:  # this cell ran in a fresh kernel, which keeps its state
            self._state_lost = False
            mark_restarted(result, "[The previous code block was interrupted before it finished.]")
        return result

    async def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc = None
        if self._holds_kernel_slot:
            self._holds_kernel_slot = False
            self._sandbox._kernel_slots.release()


@register_sandbox("local")
class LocalSandbox(SandboxBase[LocalKernelSession]):
    """Isolated, persistent, pre-forked Python kernels on this machine.

    Use as `async with LocalSandbox(config) as sandbox:`; then `async with sandbox.session() as k:
    await k.run(code)` for a trajectory, or `await sandbox.run_code(code)` for one stateless cell.
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        self.config = SandboxConfig(**{**asdict(config or SandboxConfig()), **overrides})
        self.isolated = False
        self.isolation_problem: str | None = None
        self.layers: dict[str, dict[str, Any]] = {}  # layer -> {"on", "detail"} (docs/sandbox.md)
        self.kernel_memory_limit_mb = 0
        self.preloaded: list[str] = []
        self._cells = asyncio.Semaphore(self.config.max_concurrent_cells)
        self.cells_running = 0  # for /health and progress: cells executing now,
        self.cells_waiting = 0  # and cells waiting for one of the max_concurrent_cells slots
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
        loop.add_reader(ours.fileno(), self._on_control, ours)
        config = {**asdict(self.config), "preload": list(self.config.preload)}
        await loop.sock_sendall(ours, json.dumps(config).encode())
        try:
            ready = await asyncio.wait_for(self._ready, 120)
        except (TimeoutError, SandboxError) as exc:
            await self.close()
            raise SandboxError(f"the sandbox's zygote process did not start: {exc}") from None
        if not ready["ready"]:
            await self.close()
            raise SandboxError(f"the sandbox cannot start: {ready['error']}")
        self.isolated, self.isolation_problem = ready["isolated"], ready["reason"]
        self.layers, self.preloaded = ready["layers"], ready["preloaded"]
        self.kernel_memory_limit_mb = ready["kernel_memory_mb"]  # its cgroup's, when there is one
        self._report_layers()
        self._refill()

    def _report_layers(self) -> None:
        """Once per process and problem, loudly (not through logging: it must not be filtered away)."""
        if not self.isolated:
            why = self.isolation_problem or "disabled by configuration (isolation='none')"
            if self.config.isolation == "namespaces":
                raise SandboxError(f"kernel isolation is unavailable here: {why}")
            if self.config.isolation == "auto":
                _warn_once(
                    f"cortbench: WARNING: sandbox namespaces are unavailable ({why}). Cells run with an "
                    "unprivileged host id, resource limits, a scrubbed environment and their own session "
                    "only: NO network, PID or mount isolation. Do not run untrusted models this way."
                )
        off = [f"{name} ({layer['detail']})" for name, layer in self.layers.items()
               if name in OPTIONAL_LAYERS and not layer["on"]]  # fmt: skip
        if off and self.config.isolation != "none":
            _warn_once(f"cortbench: WARNING: sandbox layers off: {'; '.join(off)}. `cortbench sandbox check` "
                       "shows every layer.")  # fmt: skip

    def _on_control(self, ctl: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 4)
        except BlockingIOError:
            return
        except OSError as exc:
            data, fds = b"", []
            self._dead = str(exc)
        if not data:
            self._zygote_died(ctl)
            return
        message = json.loads(data)
        if "ready" in message:
            assert self._ready is not None  # start() made it before it listened
            self._ready.set_result(message)
        elif "spawned" in message:
            future = self._pending.pop(message["spawned"], None)
            if future is not None and not future.done():
                future.set_result((message, fds[0]))
            else:
                for fd in fds:
                    os.close(fd)
        elif "spawn_failed" in message:
            future = self._pending.pop(message["spawn_failed"], None)
            if future is not None and not future.done():
                future.set_exception(SandboxError(f"a kernel could not be started: {message['error']}"))
        elif "exited" in message:
            proc = self._kernels.pop(message["exited"], None)
            if proc is not None and not proc.exited.done():
                proc.exited.set_result((message["code"], bool(message.get("oom"))))

    def _zygote_died(self, ctl: socket.socket) -> None:
        self._dead = self._dead or "the zygote process exited"
        asyncio.get_running_loop().remove_reader(ctl.fileno())
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
        limit = frame_limit(self.config)
        reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd), limit=limit)
        try:  # the keeper announces the kernel's pid, then the kernel greets once it is sealed
            pid = _count((await asyncio.wait_for(_wire.read_frame(reader, limit), 60)).get("pid"), "pid")
        except (EOFError, TimeoutError, _wire.WireError) as exc:
            writer.close()
            raise SandboxError(f"a kernel failed to start: {exc}") from None
        proc = _KernelProcess(kid, pid, reader, writer, limit)
        self._kernels[kid] = proc
        try:
            hello = await asyncio.wait_for(_wire.read_frame(reader, limit), 60)
        except (EOFError, TimeoutError, _wire.WireError) as exc:
            code, _ = await proc.exit_status(1.0)
            proc.kill()
            raise SandboxError(f"a kernel failed to start (exit code {code}): {exc}") from None
        if hello.get("ready") is not True:
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
