"""Typed records of one cell execution, and the protocol text handed back to the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ExecStatus(StrEnum):
    """Outcome of one cell. Exactly one applies; the most serious wins."""

    OK = "ok"
    ERROR = "error"  # the cell raised; `error` holds the compact traceback
    TIMEOUT = "timeout"  # the cell ran past its time limit
    MEMORY = "memory"  # MemoryError inside the limit, or the kernel was killed for memory
    KILLED = "killed"  # the kernel died (segfault, os._exit, signal, broken protocol)
    OUTPUT_TRUNCATED = "output_truncated"  # ran fine, but its output was cut for the model
    KERNEL_RESTARTED = "kernel_restarted"  # ran, but the kernel had to be replaced afterwards


# A call succeeded when its code ran to its end without error, whatever happened to its output or,
# after it, to the kernel: the one definition (code success rate, the RL reward, purpose, SandboxFusion).
SUCCEEDED = frozenset({ExecStatus.OK, ExecStatus.OUTPUT_TRUNCATED, ExecStatus.KERNEL_RESTARTED})


# Messages the model reads. Timeout text is CoRT's verbatim ("Timeout Error").
TIMEOUT_TEXT = "Timeout Error"
STATE_LOST_TEXT = (
    "[The Python kernel was restarted: all variables, imports and functions defined in earlier "
    "code blocks are lost. Re-run the code you need.]"
)


@dataclass
class ExecResult:
    """What one cell did. `output` is exactly the text that goes into the ```output block."""

    status: ExecStatus
    output: str
    stdout: str = ""  # captured stdout, kept up to SandboxConfig.record_chars (see stdout_chars)
    stderr: str = ""
    error_name: str | None = None  # e.g. "NameError", "TimeoutError", "SIGSEGV"
    error: str | None = None  # compact traceback or kernel-death explanation
    duration_s: float = 0.0
    cpu_s: float | None = None  # CPU time the cell used (its kernel and the children it reaped)
    peak_memory_mb: float | None = None  # the kernel's peak resident set size so far
    stdout_chars: int = 0  # full length of stdout before any truncation
    truncated: bool = False  # output was cut for the model
    kernel_restarted: bool = False  # the kernel's state is gone after this cell
    notes: list[str] = field(default_factory=list)  # e.g. background processes that were killed

    @property
    def ok(self) -> bool:
        return self.status in (ExecStatus.OK, ExecStatus.OUTPUT_TRUNCATED)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["status"] = ExecStatus(known["status"])
        return cls(**known)


def mark_restarted(result: ExecResult, note: str | None = None) -> ExecResult:
    """The kernel behind this result is gone: say why (`note`) and that state is lost, once.

    A cell that itself ran fine is reported as `kernel_restarted`.
    """
    if note:
        result.notes.append(note)
        result.output = f"{result.output}\n{note}" if result.output else note
    if result.ok:
        result.status = ExecStatus.KERNEL_RESTARTED
    if not result.kernel_restarted:
        result.kernel_restarted = True
        result.output = f"{result.output}\n{STATE_LOST_TEXT}" if result.output else STATE_LOST_TEXT
    return result


def join_ends(head: str, tail: str, total: int) -> str:
    """The two ends of a long text kept for the record, with how much lies between them."""
    omitted = total - len(head) - len(tail)
    return head + tail if omitted <= 0 else f"{head}\n[... {omitted} characters omitted ...]\n{tail}"


def truncate_middle(text: str, head: int = 400, tail: int = 400) -> tuple[str, bool]:
    """CoRT's truncation: keep the first `head` and last `tail` characters around "..."."""
    if head < 0 or tail < 0 or len(text) <= head + tail:
        return text, False
    return text[:head] + "..." + (text[len(text) - tail :] if tail else ""), True
