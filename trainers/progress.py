"""What a running stage says on stderr: one line when a phase starts, resumes or is skipped, and the
progress of its long phases (sampling, engineering, grading, filtering, evaluation).

On a terminal the progress is a bar. Elsewhere (CI logs, `nohup`, a pipe) a bar would be one
endless line or nothing at all, so it is a plain line at the start, at the first item, then every
`every_s` seconds, and at the end:

    sampling: 6/16 samples, 0.21/s, ETA 0:47
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

PLAIN_EVERY_S = 30.0


def say(line: str, stream: IO[str] | None = None) -> None:
    """One status line on stderr ("sampling: 12/16 samples already done, resuming")."""
    print(line, file=stream or sys.stderr, flush=True)


class PhaseProgress:
    """done/total of one phase. `done` counts items finished before this run (a resumed phase):
    they show in the count but not in the rate, which covers this run's items only."""

    def __init__(self, phase: str, total: int, *, done: int = 0, unit: str = "samples",
                 every_s: float = PLAIN_EVERY_S, stream: IO[str] | None = None) -> None:  # fmt: skip
        self.phase, self.total, self.done, self.unit, self.every_s = phase, total, done, unit, every_s
        self.stream = stream or sys.stderr
        self._resumed_at = done
        self._started = self._printed = time.monotonic()
        self._bar: Any = None
        if _is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"[bold]{phase}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                TimeRemainingColumn(), console=Console(file=self.stream), transient=False,
            )  # fmt: skip
            self._task = self._bar.add_task(phase, total=total, completed=done)
            self._bar.start()
        elif not done:
            say(f"{phase}: 0/{total} {unit}", self.stream)

    def advance(self, n: int = 1) -> None:
        first = self.done == self._resumed_at
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if first or self.done >= self.total or now - self._printed >= self.every_s:
            self._printed = now
            say(self.line(now - self._started), self.stream)

    def line(self, elapsed_s: float) -> str:
        """'sampling: 6/16 samples, 0.21/s, ETA 0:47' (the rate over this run's items)."""
        ran = self.done - self._resumed_at
        text = f"{self.phase}: {self.done}/{self.total} {self.unit}"
        if ran <= 0 or elapsed_s <= 0:
            return text
        rate = ran / elapsed_s
        if self.done >= self.total:
            return f"{text}, {rate:.2g}/s, took {_clock(elapsed_s)}"
        return f"{text}, {rate:.2g}/s, ETA {_clock((self.total - self.done) / rate)}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
