"""The kernel loop: runs one trajectory's cells in a persistent namespace, inside the sandbox.

This module is imported by the zygote and runs in the kernel process only. It trusts nothing the
cell does: output is captured with a cap, time is bounded by an in-cell timer (state survives)
backed by the harness's hard kill, and leftovers (processes, threads) are reported.
"""

from __future__ import annotations

import ast
import builtins
import collections
import linecache
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from . import _wire
from ._install import refusal, rewrite_shell_lines
from ._records import join_ends


class CellTimeout(BaseException):
    """Raised inside the cell by SIGALRM. A BaseException so `except Exception:` cannot swallow it."""


class CappedText:
    """A text sink that keeps the first and last `keep` characters and counts the rest."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head: list[str] = []
        self.head_len = 0
        self.tail: collections.deque[str] = collections.deque()
        self.tail_len = 0
        self.total = 0

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        n = len(text)
        self.total += n
        if self.head_len < self.keep:
            take = text[: self.keep - self.head_len]
            self.head.append(take)
            self.head_len += len(take)
            text = text[len(take) :]
        if text:
            if len(text) >= self.keep:
                self.tail.clear()
                self.tail.append(text[-self.keep :])
                self.tail_len = self.keep
            else:
                self.tail.append(text)
                self.tail_len += len(text)
                while self.tail and self.tail_len - len(self.tail[0]) >= self.keep:
                    self.tail_len -= len(self.tail.popleft())
        return n

    def to_wire(self) -> dict[str, Any]:
        tail = "".join(self.tail)
        return {
            "head": "".join(self.head),
            "tail": tail[-self.keep :] if self.keep else "",
            "total": self.total,
        }


class _Stream:
    """sys.stdout / sys.stderr replacement for the duration of a cell."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, sink: CappedText, fd: int) -> None:
        self._sink, self._fd = sink, fd

    def write(self, text: str) -> int:
        return self._sink.write(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self._sink.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:  # subprocess(stdout=sys.stdout) and C code write to the captured fd
        return self._fd


class _FdCapture:
    """Output written to fd 1/2 directly (os.write, C extensions, child processes) goes to a file
    in the kernel's scratch space; after each cell it is folded into the cell's output."""

    def __init__(self, fd: int, path: str, keep: int) -> None:
        self.fd, self.keep = fd, keep
        target = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)

    def drain_into(self, sink: CappedText) -> None:
        size = os.fstat(self.fd).st_size
        if size:
            chunk = 4 * self.keep  # bytes: at least `keep` characters of UTF-8
            head = os.pread(self.fd, min(size, chunk), 0)
            sink.write(head.decode("utf-8", "replace"))
            rest = size - len(head)
            if rest > 0:
                tail = min(rest, chunk)
                sink.total += rest - tail  # bytes never read: counted, not kept
                sink.write(os.pread(self.fd, tail, size - tail).decode("utf-8", "replace"))
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)


def _keep_ends(text: str, keep: int) -> str:
    """The first and last `keep` characters of a long text (a traceback of a huge message)."""
    return text if len(text) <= 2 * keep else join_ends(text[:keep], text[-keep:], len(text))


def _on_alarm(signum, frame):
    raise CellTimeout()


def compact_traceback(exc: BaseException) -> str:
    """The cell's own frames (line numbers relative to the cell) plus the frame that raised.

    Harness frames are never shown: frames before the first cell frame are dropped.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if f.filename.startswith("<cell")), None)
    lines = []
    if first is not None:
        kept = [f for f in frames[first:] if f.filename.startswith("<cell")]
        if frames[-1].filename != kept[-1].filename or frames[-1].lineno != kept[-1].lineno:
            kept.append(frames[-1])
        lines = ["Traceback (most recent call last):\n", *traceback.StackSummary.from_list(kept).format()]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _compile_cell(code: str, filename: str, echo: bool):
    """Compile a cell; a cell that does not parse is tried once more with its `!pip install`
    lines (IPython syntax) turned into the refusal (_install.py)."""
    try:
        return _compile_source(code, filename, echo)
    except SyntaxError:
        rewritten = rewrite_shell_lines(code)
        if rewritten == code:
            raise
    return _compile_source(rewritten, filename, echo)


def _compile_source(code: str, filename: str, echo: bool):
    """With `echo`, also return the last expression compiled for eval (only then is the syntax
    tree needed: compiling the source directly is cheaper)."""
    if not echo:
        return compile(code, filename, "exec"), None
    tree = ast.parse(code, filename, "exec")
    last = None
    final = tree.body[-1] if tree.body else None
    if isinstance(final, ast.Expr):
        tree.body.pop()
        last = compile(ast.Expression(final.value), filename, "eval")
    return compile(tree, filename, "exec"), last


def _other_processes() -> list[int]:
    """Processes besides this one that this kernel started (and that still exist)."""
    me = os.getpid()
    if me == 1:  # PID 1 of our own namespace: everything in /proc is ours
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != 1]
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
                if int(stat.rsplit(b")", 1)[1].split()[3]) == me:  # session id == our session
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _alone() -> bool:
    """As PID 1 of its namespace, the kernel is alone when it has no child: every other process
    there descends from it, and orphans are re-parented to it. One syscall instead of a /proc scan."""
    if os.getpid() != 1:
        return False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False  # a child is still running


def _kill_leftovers() -> int:
    """Kill every process the cell left behind and reap them; returns how many there were."""
    if _alone():
        return 0
    leftovers = _other_processes()
    if not leftovers:
        _reap()
        return 0
    if os.getpid() == 1:
        os.kill(-1, signal.SIGKILL)  # PID 1: every process of the namespace but ourselves
    else:
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    deadline = time.monotonic() + 2.0
    while _other_processes() and time.monotonic() < deadline:
        _reap()
        time.sleep(0.005)
    _reap()
    return len(leftovers)


def _cpu_seconds() -> float:
    """CPU time of the kernel and of the child processes it has reaped (what a cell costs)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Kernel:
    """One trajectory's interpreter state and the loop that serves its cells."""

    def __init__(self, sock: socket.socket, config: dict[str, Any]) -> None:
        self.sock = sock
        self.keep = _wire.capture_chars(config)
        self.timeout = float(config["timeout_s"])
        self.grace = float(config["kill_grace_s"])
        self.echo = bool(config["echo_last_expression"])
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.cells = 0
        self.pid = os.getpid()
        fd_dir = os.getcwd()
        self.fd_out = _FdCapture(1, os.path.join(fd_dir, ".cortbench-stdout"), self.keep)
        self.fd_err = _FdCapture(2, os.path.join(fd_dir, ".cortbench-stderr"), self.keep)
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large writes fail with EFBIG instead
        cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        self.cpu_hard = cpu_hard if cpu_hard != resource.RLIM_INFINITY else 3600 * 24

    def serve(self) -> None:
        _wire.send(self.sock, {"ready": True})
        while True:
            try:
                request = _wire.recv(self.sock)
            except (EOFError, OSError, ValueError):
                return
            reply = self.run_cell(str(request.get("code", "")), request)
            _wire.send(self.sock, {**reply, "seq": request.get("seq")})

    def _limit_cpu(self, timeout: float) -> None:
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime + timeout + self.grace + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (min(soft, self.cpu_hard), self.cpu_hard))

    def run_cell(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        timeout = float(request.get("timeout") or self.timeout)
        echo = bool(request.get("echo", self.echo))
        self.cells += 1
        filename = f"<cell-{self.cells}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        out, err = CappedText(self.keep), CappedText(self.keep)
        threads_before = set(threading.enumerate())
        status, error_name, tb = "ok", None, None
        saved = sys.stdout, sys.stderr
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        try:
            sys.stdout, sys.stderr = _Stream(out, 1), _Stream(err, 2)
            self._limit_cpu(timeout)
            try:
                body, last = _compile_cell(code, filename, echo)
                signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    exec(body, self.namespace)
                    if last is not None:
                        value = eval(last, self.namespace)
                        if value is not None:
                            print(repr(value))
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except CellTimeout:
                status, error_name = "timeout", "TimeoutError"
            except BaseException as exc:  # noqa: BLE001 - the cell's own exceptions, SystemExit included
                status = "memory" if isinstance(exc, MemoryError) else "error"
                error_name = type(exc).__name__[: _wire.NAME_CHARS]
                try:
                    tb = _keep_ends(compact_traceback(exc), self.keep)
                except BaseException:  # noqa: BLE001 - a hostile __str__ must not kill the kernel
                    tb = f"{error_name}: <unprintable exception>"
        except CellTimeout:  # the alarm fired between the cell's end and the timer reset
            status, error_name = "timeout", "TimeoutError"
        finally:
            sys.stdout, sys.stderr = saved
        duration, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        return self._reply(status, error_name, tb, out, err, threads_before, duration, cpu)

    def _reply(self, status, error_name, tb, out, err, threads_before, duration, cpu) -> dict[str, Any]:
        if os.getpid() != self.pid:  # a child the cell forked fell through to here: it must not reply
            os._exit(0)
        try:
            for stream in (sys.__stdout__, sys.__stderr__):
                if stream is not None:
                    stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
        procs_killed = _kill_leftovers()
        self.fd_out.drain_into(out)
        self.fd_err.drain_into(err)
        if tb is not None and refusal() in "".join([*out.head, *out.tail]):
            # the traceback hides stdout (CoRT), so it says itself why the install failed
            tb = _keep_ends(f"{tb.rstrip()}\n{refusal()}", self.keep)
        alive = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        for thread in alive:
            thread.join(0.05)
        names = [str(t.name)[: _wire.NAME_CHARS] for t in alive if t.is_alive()][: _wire.MAX_THREADS]
        return {
            "status": status,
            "stdout": out.to_wire(),
            "stderr": err.to_wire(),
            "error_name": error_name,
            "traceback": tb,
            "duration": duration,
            "cpu": cpu,
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "procs_killed": procs_killed,
            "threads_alive": names,
        }
