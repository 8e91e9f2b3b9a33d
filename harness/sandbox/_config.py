"""Sandbox settings. Defaults are the CoRT evaluation protocol's plus safe resource limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from ...tasks.spec import CORT_PROTOCOL

# Imported once in the pre-forked parent so a cell's `import sympy` costs a dict lookup. scipy's
# common submodules (they bring sparse, spatial, interpolate, fft, ndimage) and networkx cost a
# cell 0.2 to 1 s to import and a kernel ~5 ms more to fork; matplotlib (~8 ms more per kernel,
# rarely imported in maths) is imported by the cells that use it (bench/RESULTS.md, issue 13).
DEFAULT_PRELOAD = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "itertools",
    "functools",
    "collections",
    "random",
    "re",
    "statistics",
    "numpy",
    "sympy",
    "scipy.special",
    "scipy.optimize",
    "scipy.integrate",
    "scipy.linalg",
    "scipy.stats",
    "networkx",
    "rdkit.Chem",
    "rdkit.Chem.Descriptors",
)


def _default_max_kernels() -> int:
    """Live kernels the machine's memory can hold at about 64 MiB each (used ones grow), 16..1024."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 256
    return max(16, min(1024, memory // (64 * 1024 * 1024)))


@dataclass(frozen=True)
class SandboxConfig:
    """How cells run. Every field can be set from the CLI or a run config.

    Attributes:
        timeout_s: wall-clock limit per cell (protocol: 30 s at evaluation, 5 s in RL).
        kill_grace_s: after the in-cell timeout fires, how long the kernel gets to come back
            before the whole kernel (and everything it started) is killed and restarted.
        memory_mb: address-space limit of a kernel (RLIMIT_AS): allocations beyond it raise
            MemoryError. The kernel's cgroup caps memory_mb + scratch_mb + shm_mb (tmpfs pages
            included) and kills the kernel beyond that.
        max_processes: processes and threads per kernel (the cgroup's pids.max, and RLIMIT_NPROC).
        max_file_mb: largest file a cell may write (RLIMIT_FSIZE).
        max_open_files: RLIMIT_NOFILE.
        scratch_mb: size of the private tmpfs that is the kernel's working directory and /tmp.
        shm_mb: size of the kernel's private /dev/shm.
        output_head / output_tail: protocol truncation of the text the model sees (400 + 400).
        record_chars: how much stdout/stderr each record keeps (head and tail each).
        echo_last_expression: Jupyter-style echo of a cell's last expression (CoRT: off).
        isolation: "auto" puts every layer of the boundary (namespaces, unprivileged host id,
            minimal root filesystem, cgroups, seccomp, Landlock; docs/sandbox.md) where this
            machine allows it and warns once, loudly, about each one it does not; "namespaces"
            refuses to start without namespaces and the root filesystem; "none" goes without
            both on purpose (the host id, cgroups, rlimits, seccomp and Landlock still apply).
        uid_base: when the harness runs as root, kernel slot i runs as host uid/gid uid_base + i
            (0 inside its user namespace), never as host root. The ids must belong to nobody:
            start-up refuses ids found in /etc/passwd, /etc/group, /etc/subuid or /etc/subgid.
            The default sits above the subordinate ranges container tools hand out (100000 on)
            and below systemd's reserved ids.
        sandbox_memory_mb: memory all kernels of this sandbox may use together (their parent
            cgroup); default half of the machine's RAM.
        cgroup_parent: a cgroup (v2 path under /sys/fs/cgroup) delegated to cortbench, under
            which the sandbox makes its own; default the harness's own cgroup.
        warm_kernels: pre-started idle kernels, so a new trajectory starts without waiting.
        max_concurrent_cells: cells executing at once across all kernels (CPU-bound work).
        max_kernels: trajectories holding a kernel at once; more wait for one to close, so a
            burst of thousands of trajectories cannot exhaust memory (default from RAM, 16..1024).
        preload: modules imported once in the parent of all kernels (missing ones are skipped).
        warmup: also exercise their common paths once there (lazy imports, caches), so a kernel's
            first sympy cell costs milliseconds instead of tens of milliseconds.
    """

    timeout_s: float = CORT_PROTOCOL.timeout_s
    kill_grace_s: float = 2.0
    memory_mb: int = 4096
    max_processes: int = 64
    max_file_mb: int = 64
    max_open_files: int = 256
    scratch_mb: int = 256
    shm_mb: int = 64
    output_head: int = 400
    output_tail: int = 400
    record_chars: int = 16384
    echo_last_expression: bool = False
    isolation: Literal["auto", "namespaces", "none"] = "auto"
    uid_base: int = 2_000_000_000
    sandbox_memory_mb: int | None = None
    cgroup_parent: str | None = None
    warm_kernels: int = 4
    max_concurrent_cells: int = field(default_factory=lambda: os.cpu_count() or 2)
    max_kernels: int = field(default_factory=_default_max_kernels)
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    warmup: bool = True
