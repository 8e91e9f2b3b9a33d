"""Answer grading as the CoRT protocol does it: math-verify, run in a pool of worker processes.

Gold is `parse("$" + gold + "$")`. The prediction is `parse(response, (ExprExtractionConfig(),
LatexExtractionConfig()))` over the whole generation, so the last \\boxed{} wins (boxes close together
with a separator between them count as one multi-answer). The answer is correct iff
`verify(gold, prediction)`. Decisions are the same as that plain loop. Only timeouts
differ: a sample that times out or fails is counted wrong and flagged in `grading_error`, never
dropped.

math-verify's own timeouts use SIGALRM per call and hide a timeout as a plain False. We switch them
off and time each whole sample (gold parse, prediction parse, verify) with one timer. The `Grader`
pool also kills and replaces a worker that stops answering or dies, then grades the rest of the
batch. Speed comes from grading each identical (gold, response) pair only once, and, per worker,
parsing each gold once and verifying each (gold, parsed answer) once, with work sent in chunks that
keep a gold's samples together.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Basic, preorder_traversal

DEFAULT_TIMEOUT_S = 30.0  # the protocol's grading limit per sample
PREDICTION_CONFIG = (ExprExtractionConfig(), LatexExtractionConfig())
CACHE_SIZE = 20_000  # parsed golds, and verdicts, kept per process
START_TIMEOUT_S = 120.0  # a new worker must be ready by then (imports on a loaded machine)


@dataclass(frozen=True, slots=True)
class Grade:
    """One graded sample. `grading_error` is None unless the sample timed out or grading failed
    (then `correct` is False)."""

    correct: bool
    extracted: str | None = None
    grading_error: str | None = None


class GradingError(RuntimeError):
    """The pool itself cannot work (workers fail to start); a single bad sample never raises."""


class _SampleTimeout(BaseException):
    """A BaseException, so that the `except Exception` in math-verify and sympy lets it through."""


# ---------------------------------------------------------------------------------------------
# One sample, in this process


def grade(gold: str, response: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Grade:
    """Grade one sample in this process; the time limit needs the main thread (SIGALRM), elsewhere
    there is none. Cannot stop a hang in C code: use `Grader` for untrusted bulk input."""
    extracted = None
    try:
        with _time_limit(timeout_s) as state:
            gold_parsed = _cached(_golds, gold, lambda: parse("$" + gold + "$", parsing_timeout=None), state)
            prediction = parse(response, PREDICTION_CONFIG, parsing_timeout=None)
            extracted = _extracted(prediction)
            fingerprint = _fingerprint(prediction)
            key = None if fingerprint is None else (gold, fingerprint)
            correct = bool(gold_parsed) and _cached(
                _verdicts, key, lambda: verify(gold_parsed, prediction, timeout_seconds=None), state
            )
    except _SampleTimeout:
        return Grade(False, extracted, f"timeout after {timeout_s:g} s")
    except Exception as exc:  # noqa: BLE001 - math-verify handles its own errors; this is anything else
        return Grade(False, extracted, _short(f"{type(exc).__name__}: {exc}"))
    if not gold_parsed:
        return Grade(False, extracted, "the gold answer does not parse")
    return Grade(correct, extracted)


# Golds repeat (k samples per problem), and so do final answers (most samples of a problem agree):
# parse each gold once, verify each (gold, parsed answer) once. Both are pure functions of their key.
_golds: OrderedDict[str, list] = OrderedDict()
_verdicts: OrderedDict[tuple[str, bytes], bool] = OrderedDict()


def _fingerprint(prediction: list) -> bytes | None:
    """The exact identity of a parsed answer: its pickle, plus the argument order that latex2sympy
    keeps outside the pickled state (`_unsorted_args`, which math-verify reads). None: not cacheable."""
    if not all(isinstance(p, str | Basic) for p in prediction):
        return None  # mutable matrices
    try:
        order = [node._unsorted_args for p in prediction if isinstance(p, Basic)
                 for node in preorder_traversal(p) if hasattr(node, "_unsorted_args")]  # fmt: skip
        return pickle.dumps((prediction, order), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - something unpicklable: grade it without the cache
        return None


def _cached(cache: OrderedDict, key, compute: Callable, state: dict):
    """LRU lookup. A value computed while the timer fired is not kept: sympy may have swallowed the
    interruption somewhere and returned something partial."""
    if key is None:
        return compute()
    try:
        cache.move_to_end(key)
        return cache[key]
    except KeyError:
        pass
    value = compute()
    if not state["fired"]:
        cache[key] = value
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
    return value


def _extracted(prediction: list) -> str | None:
    """The answer as the response wrote it (math-verify's string fallback), else the parsed value."""
    strings = [p for p in prediction if isinstance(p, str)]
    if strings:
        return strings[-1]
    return str(prediction[0]) if prediction else None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[dict]:
    """Raise _SampleTimeout after `seconds` of wall time, and every 50 ms after that, in case a
    bare `except:` in sympy swallows one. An itimer that was already set is put back afterwards."""
    state = {"fired": False}
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_alarm(signum, frame):
        state["fired"] = True
        raise _SampleTimeout

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield state
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_delay:
                left = max(previous_delay - (time.monotonic() - started), 0.001)
                signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


class _QuietTimeoutNotice(logging.Filter):
    """math-verify warns that its timeouts are off: we time each sample ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_QuietTimeoutNotice())


# ---------------------------------------------------------------------------------------------
# The pool


WARM_UP = [
    ("1", "\\boxed{1}"),
    ("\\frac{1}{2}", "\\boxed{0.5}"),
    ("x^2+1", "\\boxed{(x+1)^2}"),
    ("[1, 2)", "\\boxed{(1,2]}"),
    ("$(1,2),(3,4)$", "\\boxed{(1,2),(3,5)}"),
    ("2\\sqrt{3}", "$x=\\pi/3$"),
]


def _serve(fd: int, timeout_s: float | None) -> None:
    """A worker's main loop: grade chunks of (gold, response) and answer per sample, so that the
    parent always knows which sample is in progress if this process hangs or dies. A reader thread
    takes the next chunks in while this one grades: the worker never waits for the parent."""
    conn = Connection(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGALRM, lambda signum, frame: None)  # a late tick must not kill the worker
    for gold, response in WARM_UP:  # sympy imports its simplifiers lazily: not on a sample's clock
        grade(gold, response, timeout_s)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # started: from now on library chatter goes nowhere
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_read, args=(conn, inbox), daemon=True).start()
    conn.send("ready")
    while (chunk := inbox.get()) is not None:
        for gold, response in chunk:
            result = grade(gold, response, timeout_s)
            conn.send((result.correct, result.extracted, result.grading_error))


def _read(conn: Connection, inbox: queue.SimpleQueue) -> None:
    while True:
        try:
            inbox.put(conn.recv())
        except (EOFError, OSError):  # the parent is gone
            inbox.put(None)
            return


class _Worker:
    """A fresh interpreter: unlike fork it is safe in a threaded parent, and unlike multiprocessing's
    spawn it never re-runs the parent's __main__ (scripts without a main guard keep working)."""

    def __init__(self, timeout_s: float | None) -> None:
        ours, theirs = socket.socketpair()
        code = f"from cortbench.analyzers.grading import _serve; _serve({theirs.fileno()}, {timeout_s!r})"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.stderr = tempfile.TemporaryFile()  # why a start failed
        self.process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self.stderr)  # fmt: skip
        theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.chunk: deque[int] = deque()  # unique-pair ids sent and not answered yet; [0] is in progress
        self.deadline = time.monotonic() + START_TIMEOUT_S

    def stop(self) -> int:
        """Kill the process (nothing in it needs a clean exit) and return its exit code."""
        if self.process.poll() is None:
            self.process.kill()
        self.conn.close()
        return self.process.wait()

    def start_failure(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return _short(lines[-1]) if lines else f"exit code {self.process.returncode}"


class Grader:
    """A persistent pool of grading processes; use it as a context manager (or call `close`).

    `timeout_s` limits each sample. A worker that has not answered `grace_s` after that (a hang in C
    code, a stopped process) is killed and replaced; so is one that died. Its sample is flagged and
    the rest of the batch is still graded.
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        chunk_size: int = 16,
        grace_s: float | None = None,
    ) -> None:
        self.workers = workers or len(os.sched_getaffinity(0))
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self.grace_s = grace_s if grace_s is not None else 2.0 + 0.1 * (timeout_s or 0)
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Grader:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers now (otherwise the first batch does)."""
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self.timeout_s))

    def close(self) -> None:
        for worker in self._pool:
            worker.stop()
        self._pool.clear()

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._pool]

    def grade(self, gold: str, response: str) -> Grade:
        return self.grade_many([(gold, response)])[0]

    async def grade_many_async(self, pairs: Iterable[tuple[str, str]]) -> list[Grade]:
        """`grade_many` in a thread, for event loops (RL reward functions, the runner)."""
        return await asyncio.to_thread(self.grade_many, list(pairs))

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> list[Grade]:
        """Grade (gold, response) pairs; results come in the same order, one per pair."""
        pairs = list(pairs)
        ids: dict[tuple[str, str], int] = {}
        owners = [ids.setdefault((gold, response), len(ids)) for gold, response in pairs]
        unique = list(ids)
        by_gold = sorted(range(len(unique)), key=lambda i: unique[i][0])  # a gold's samples together
        size = max(1, min(self.chunk_size, math.ceil(len(unique) / (4 * self.workers))))
        todo = deque(by_gold[i : i + size] for i in range(0, len(by_gold), size))
        results: list[Grade | None] = [None] * len(unique)
        with self._lock:
            self.start()
            self._run(todo, unique, results)
        return [results[i] for i in owners]  # type: ignore[misc]

    def _run(self, todo: deque[list[int]], unique: list[tuple[str, str]], results: list) -> None:
        left = len(unique)
        while left:
            for worker in self._pool:
                # up to two chunks outstanding: the worker starts the next one without waiting for us
                if worker.ready and todo and len(worker.chunk) <= len(todo[0]):
                    chunk, idle = todo.popleft(), not worker.chunk
                    if idle:
                        worker.deadline = time.monotonic() + self._limit()
                    worker.chunk.extend(chunk)
                    try:
                        worker.conn.send([unique[i] for i in chunk])
                    except OSError:  # it died; if it was busy, the EOF below flags its sample
                        if idle:
                            todo.appendleft(chunk)
                            worker.chunk.clear()
                            self._replace(worker)
            busy = [w for w in self._pool if w.chunk or not w.ready]
            pause = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            wait([w.conn for w in busy], None if pause == math.inf else pause)
            for worker in busy:
                try:
                    while worker.conn.poll():
                        left -= self._receive(worker, worker.conn.recv(), results)
                except (EOFError, OSError):  # the process is gone
                    code = worker.stop()
                    left -= self._fail(worker, _exit_reason(code), todo, results)
                    continue
                if time.monotonic() > worker.deadline:
                    if not worker.ready:
                        worker.stop()
                        raise GradingError(f"a grading worker did not start within {START_TIMEOUT_S:g} s")
                    worker.stop()
                    left -= self._fail(worker, f"timeout: worker unresponsive after {self._limit():g} s, killed",
                                       todo, results)  # fmt: skip

    def _limit(self) -> float:
        return (self.timeout_s or math.inf) + self.grace_s

    def _receive(self, worker: _Worker, message, results: list) -> int:
        worker.deadline = time.monotonic() + self._limit()
        if message == "ready":
            worker.ready = True
            return 0
        results[worker.chunk.popleft()] = Grade(*message)
        return 1

    def _fail(self, worker: _Worker, reason: str, todo: deque[list[int]], results: list) -> int:
        """Flag the sample in progress, queue the rest of the chunk first, start a new worker."""
        if not worker.ready:
            raise GradingError(f"a grading worker failed to start: {worker.start_failure()}")
        flagged = 0
        if worker.chunk:
            results[worker.chunk.popleft()] = Grade(False, None, reason)
            flagged = 1
        if worker.chunk:
            todo.appendleft(list(worker.chunk))
        worker.chunk.clear()
        self._replace(worker)
        return flagged

    def _replace(self, worker: _Worker) -> None:
        worker.stop()
        self._pool[self._pool.index(worker)] = _Worker(self.timeout_s)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"worker died ({signal.Signals(-code).name})"
    return f"worker died (exit code {code})"
