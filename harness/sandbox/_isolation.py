"""The boundary around every kernel, in layers, prepared once by the zygote and entered per kernel.

    namespaces  user, PID, mount, network, IPC, UTS and cgroup namespaces of its own
    uid         inside uid/gid 0 is an unused unprivileged host id (uid_base + slot) when the
                harness is root, the harness's own id otherwise: never host root
    rootfs      a minimal root filesystem (_rootfs.py), read-only but for /tmp and /dev/shm
    cgroup      memory (tmpfs included) and pids per kernel, and for all kernels together
    seccomp     the syscall filter (_seccomp.py)
    landlock    write, TCP, signal and abstract-socket fences (_landlock.py)

`prepare` runs in the zygote, tries the whole setup in a throwaway kernel, and turns off (with
the reason) each layer this machine refuses; `cortbench sandbox check` shows the result. A keeper
calls `enter_keeper` before it forks its kernel, the kernel calls `enter_kernel`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _landlock, _rootfs, _seccomp
from ._cgroups import KernelLimits, SandboxCgroups
from ._syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    drop_capabilities,
    load_seccomp_program,
    set_dumpable,
    set_parent_death_signal,
    unshare,
)

LAYERS = ("namespaces", "uid", "rootfs", "cgroup", "seccomp", "landlock")
OPTIONAL = ("cgroup", "seccomp", "landlock")  # the sandbox runs without them, with a warning
KERNEL_NAMESPACES = (
    CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
)
PID_MAX = 301  # the smallest pid_max Linux accepts; the cgroup's pids.max is the real cap
KEEPER_MB = 64  # the keeper shares its kernel's cgroup, and the kernel's page tables and kernel memory
ID_FILES = ("/etc/passwd", "/etc/group")
SUBORDINATE_FILES = ("/etc/subuid", "/etc/subgid")


class BoundaryError(ValueError):
    """The configuration cannot give a safe boundary (e.g. kernel host ids that belong to someone)."""


class SetupFailed(Exception):
    """A kernel setup step failed: `layer` names the layer it belongs to, `why` what went wrong."""

    def __init__(self, layer: str, why: str) -> None:
        super().__init__(f"{layer}: {why}")
        self.layer, self.why = layer, why


@dataclass
class Layer:
    on: bool
    detail: str


@dataclass
class Boundary:
    """What every kernel of one sandbox gets; built by `prepare` in the zygote."""

    config: dict[str, Any]
    root: bool = False  # kernels get their own host ids (uid_base + slot)
    layers: dict[str, Layer] = field(default_factory=dict)
    rootfs: _rootfs.RootFs | None = None
    cgroups: SandboxCgroups | None = None
    seccomp_program: bytes | None = None
    landlock_abi: int = 0
    readable: list[str] = field(default_factory=list)  # Landlock's read paths without namespaces

    def on(self, layer: str) -> bool:
        return self.layers.get(layer, Layer(False, "")).on

    @property
    def isolated(self) -> bool:
        return self.on("namespaces") and self.on("rootfs")

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: {"on": layer.on, "detail": layer.detail} for name, layer in self.layers.items()}

    # ------------------------------------------------------------------ in the zygote

    @classmethod
    def prepare(cls, config: dict[str, Any], meanwhile: Callable[[], None] = lambda: None) -> Boundary:
        """Decide the layers, try them in a throwaway kernel until one passes (each failure turns
        one layer off, or refuses to start), then move into the kernels' root filesystem.

        `meanwhile` (the zygote's imports) runs while the first probe does: the probe is forked
        while this process is still small, and both cores work.
        """
        boundary = cls(config, layers={name: Layer(True, "") for name in LAYERS})
        boundary._prepare_uid()
        if config["isolation"] == "none":
            boundary._off("namespaces", "disabled by configuration (isolation='none')")
            boundary._off("rootfs", "needs namespaces")
        boundary._prepare_cgroups()
        boundary._prepare_filters()
        boundary.readable = _rootfs.fallback_readable()
        probe = boundary._start_probe()
        meanwhile()
        while (failed := boundary._probe_result(*probe)) is not None:
            boundary._turn_off(failed)
            probe = boundary._start_probe()
        if boundary.isolated:
            boundary.rootfs = boundary._enter_zygote_root()
            etc = [path for path in boundary.rootfs.bound if path.startswith("/etc/")]
            others = ", ".join(path for path in boundary.rootfs.bound if path not in etc)
            boundary._on("namespaces", "user, PID, mount, network, IPC, UTS, cgroup")
            boundary._on("rootfs", f"pivot_root into a tmpfs with {others} and {len(etc)} entries of /etc")
        return boundary

    @property
    def slot_count(self) -> int:
        """Kernel slots (so host ids) a sandbox may use: all live kernels plus those being reaped."""
        return 2 * (int(self.config["max_kernels"]) + int(self.config["warm_kernels"])) + 64

    def _on(self, layer: str, detail: str) -> None:
        self.layers[layer] = Layer(True, detail)

    def _off(self, layer: str, why: str) -> None:
        self.layers[layer] = Layer(False, why)

    def _prepare_uid(self) -> None:
        base = int(self.config["uid_base"])
        self.root = _can_take_host_ids(base, self.slot_count)
        if self.root:
            _check_host_ids(base, self.slot_count)
            self._on("uid", f"0 inside is host uid {base} + kernel slot, not root")
        else:
            self._on("uid", f"0 inside is the harness's own uid {os.getuid()}")

    def _prepare_filters(self) -> None:
        try:
            self.seccomp_program = _seccomp.compile_filter()
            self._on("seccomp", f"{len(self.seccomp_program) // 8} BPF instructions by libseccomp")
        except OSError as exc:
            self._off("seccomp", str(exc))
        self.landlock_abi = _landlock.abi_version()
        if self.landlock_abi:
            self._on("landlock", f"ABI {self.landlock_abi}")
        else:
            self._off("landlock", "not offered by this kernel (Linux >= 5.13 with landlock in lsm=)")

    def _turn_off(self, failed: SetupFailed) -> None:
        """A probe failed in `failed.layer`: go on without that layer, or refuse to start."""
        layer, why = failed.layer, failed.why
        if not self.on(layer):
            raise BoundaryError(f"a kernel cannot be set up here: {why}")
        if layer in ("namespaces", "rootfs"):
            self._off("namespaces", why)
            self._off("rootfs", "needs namespaces")
        elif layer == "uid" and self.config["isolation"] == "none":
            self._off("uid", f"kernels run as the harness's uid {os.getuid()}: {why}")
        elif layer == "uid":
            raise BoundaryError(
                f"a kernel cannot run as its own unprivileged id ({why}); cortbench never runs model "
                "code as host root: make the Python installation readable by other users (chmod -R o+rX PREFIX)"
            )
        else:
            self._off(layer, why)
            if layer == "cgroup" and self.cgroups is not None:
                self.cgroups.close()
                self.cgroups = None

    def _prepare_cgroups(self) -> None:
        total = self.config.get("sandbox_memory_mb") or _default_sandbox_memory_mb()
        try:
            self.cgroups = SandboxCgroups.create(
                total_memory_bytes=int(total) << 20, parent=self.config.get("cgroup_parent")
            )
        except OSError as exc:  # CgroupUnavailable among them
            self._off("cgroup", f"{exc}; falling back to rlimits")
            return
        limits = self.kernel_limits
        self._on("cgroup", f"{self.cgroups.description}; per kernel {limits.memory_bytes >> 20} MiB (heap, "
                           f"/tmp and /dev/shm) and {limits.pids} tasks, all kernels {total} MiB")  # fmt: skip

    @property
    def kernel_limits(self) -> KernelLimits:
        c = self.config
        memory = int(c["memory_mb"]) + int(c["scratch_mb"]) + int(c["shm_mb"]) + KEEPER_MB
        return KernelLimits(memory_bytes=memory << 20, pids=int(c["max_processes"]) + 1)

    def _enter_zygote_root(self) -> _rootfs.RootFs:
        if self.root:
            unshare(CLONE_NEWNS)
        else:
            _enter_own_user_namespace(CLONE_NEWNS)
        return _rootfs.build(_rootfs.python_paths())

    def _start_probe(self) -> tuple[int, int]:
        """The whole setup in a throwaway copy of the zygote, which enters its root and starts one
        keeper and kernel with every layer that is still on. Returns (pid, pipe) for `_probe_result`."""
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(reader)
            try:
                self._probe_chain(writer)
            finally:
                os._exit(0)
        os.close(writer)
        return pid, reader

    def _probe_result(self, pid: int, reader: int) -> SetupFailed | None:
        """The first step of a probe that failed, if any."""
        os.waitpid(pid, 0)
        with os.fdopen(reader, "rb") as fh:
            lines = fh.read().splitlines()
        report = json.loads(lines[0]) if lines else {"layer": "namespaces", "error": "the probe kernel died"}
        return None if report.get("ok") else SetupFailed(report["layer"], report["error"])

    def _probe_chain(self, writer: int) -> None:
        def tell(report: dict[str, Any]) -> None:
            os.write(writer, json.dumps(report).encode()[:4000] + b"\n")

        def failure(exc: BaseException) -> dict[str, Any]:
            if isinstance(exc, SetupFailed):
                return {"layer": exc.layer, "error": exc.why}
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return {"layer": "namespaces", "error": f"{exc} (in {where.name}, line {where.lineno})"}

        try:
            if self.isolated:
                self.rootfs = _step("namespaces", self._enter_zygote_root)
            scratch = self.new_scratch()
            keeper = os.fork()
            if keeper == 0:
                try:
                    self.enter_keeper(0, scratch)
                    if os.fork() == 0:
                        try:
                            self.enter_kernel(scratch)
                            _check_python_readable()
                            tell({"ok": True})
                        except BaseException as exc:  # noqa: BLE001
                            tell(failure(exc))
                        os._exit(0)
                    os.wait()
                except BaseException as exc:  # noqa: BLE001
                    tell(failure(exc))
                os._exit(0)
            os.waitpid(keeper, 0)
            self.release(0, scratch)
        except BaseException as exc:  # noqa: BLE001
            tell(failure(exc))

    def new_scratch(self) -> str | None:
        """The host folder a kernel without its own mount namespace works in (None: its /tmp)."""
        if self.isolated:
            return None
        return tempfile.mkdtemp(prefix="cortbench-kernel-")

    def release(self, slot: int, scratch: str | None) -> bool:
        """After a kernel's keeper is reaped: was it killed for memory? Free its scratch folder.
        Its slot's cgroup, empty now, stays for the slot's next kernel (creating and removing a
        memory cgroup per kernel costs about a millisecond); `close` removes them all."""
        oom = self.cgroups is not None and self.cgroups.oom_killed(slot)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        return oom

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()
            self.cgroups = None

    # ------------------------------------------------------------------ in a keeper, then a kernel

    def enter_keeper(self, slot: int, scratch: str | None = None) -> None:
        """Join the kernel's cgroup, become its host id, enter its new namespaces (then fork)."""
        set_parent_death_signal()
        parent = os.getppid()
        if self.cgroups is not None:
            _step("cgroup", self.cgroups.join, slot, self.kernel_limits)
            for fd in self.cgroups.fds():
                os.close(fd)
        if self.root and self.on("uid"):
            host_id = int(self.config["uid_base"]) + slot
            if scratch:
                os.chown(scratch, host_id, host_id)
            _step("uid", _become, host_id)
            if os.getppid() != parent:  # the zygote died while the death signal was cleared
                os._exit(1)
        if self.isolated:
            _step("namespaces", _enter_own_user_namespace, KERNEL_NAMESPACES)

    def enter_kernel(self, scratch: str | None) -> str:
        """Seal the kernel (PID 1 of its namespaces) and limit it; returns its working folder.
        Order matters: mounts need the namespace's capabilities, the filters come last."""
        set_parent_death_signal()
        os.setsid()
        c = self.config
        if self.isolated:
            _step("rootfs", _rootfs.mount_kernel_private, self.rootfs, scratch_mb=int(c["scratch_mb"]),
                  shm_mb=int(c["shm_mb"]), pid_max=PID_MAX)  # fmt: skip
        workdir = scratch or "/tmp"
        os.chdir(workdir)
        drop_capabilities()
        apply_rlimits(memory_mb=int(c["memory_mb"]), max_processes=int(c["max_processes"]),
                      max_file_mb=int(c["max_file_mb"]), max_open_files=int(c["max_open_files"]))  # fmt: skip
        if self.on("landlock"):
            readable = None if self.isolated else self.readable
            writable = ["/tmp", "/dev/shm"] if self.isolated else [workdir]
            _step("landlock", _landlock.restrict, self.landlock_abi, readable=readable, writable=writable)
        if self.seccomp_program is not None and self.on("seccomp"):
            _step("seccomp", load_seccomp_program, self.seccomp_program)
        return workdir


def _step(layer: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except (OSError, ValueError) as exc:
        raise SetupFailed(layer, str(exc)) from None


def _become(host_id: int) -> None:
    """Root gives up root for good: all ids set to `host_id`, no groups, dumpable again (so the
    keeper may write its own /proc/self/uid_map), the death signal set again (a uid change clears it)."""
    os.setgroups([])
    os.setresgid(host_id, host_id, host_id)
    os.setresuid(host_id, host_id, host_id)
    set_dumpable()
    set_parent_death_signal()


def _enter_own_user_namespace(other_namespaces: int) -> None:
    """A new user namespace (and `other_namespaces`, owned by it) where our own uid and gid are 0,
    which needs no privilege."""
    uid, gid = os.geteuid(), os.getegid()  # inside, before the map, they read as the overflow id
    unshare(CLONE_NEWUSER | other_namespaces)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


def _check_python_readable() -> None:
    """A kernel must import what was not preloaded: its uid must read the standard library."""
    try:
        with open(os.__file__, "rb") as fh:
            fh.read(1)
        os.listdir(os.path.dirname(os.__file__))
    except OSError as exc:
        raise SetupFailed(
            "uid", f"{exc.strerror}: the kernel cannot read {os.path.dirname(os.__file__)}"
        ) from None


def _mapped(path: str) -> list[tuple[int, int, int]]:
    rows = [line.split() for line in _lines(path)]
    return [(int(a), int(b), int(c)) for a, b, c in (row for row in rows if len(row) == 3)]


def _can_take_host_ids(base: int, count: int) -> bool:
    """Whether we are root with the kernels' ids at hand: then each kernel runs as its own host id.

    Otherwise kernels keep our own id, which must then not be host root: uid 0 in a user
    namespace that maps it to uid 0 outside (`unshare --map-root-user` as root) is host root for
    every file it touches, which is exactly what this boundary exists to prevent."""
    if os.geteuid() != 0:
        return False
    uid_map, gid_map = _mapped("/proc/self/uid_map"), _mapped("/proc/self/gid_map")
    covered = all(any(inside <= base and base + count <= inside + size for inside, _, size in ranges)
                  for ranges in (uid_map, gid_map))  # fmt: skip
    if not covered and any(inside == 0 and outside == 0 for inside, outside, _ in uid_map):
        raise BoundaryError(
            f"cortbench runs as uid 0 of a user namespace that maps it to uid 0 outside, where the "
            f"kernels' ids ({base} and up, SandboxConfig.uid_base) are not mapped: kernels would run "
            "as host root. Map those ids into the namespace or run cortbench as an unprivileged user"
        )
    return covered


def _check_host_ids(base: int, count: int) -> None:
    """The kernels' host ids must belong to nobody: no account, group or subordinate range."""
    if base < 1000 or base + count >= 2**32 - 1:
        raise BoundaryError(f"uid_base {base} is out of range (1000 .. {2**32 - 2 - count})")
    taken = range(base, base + count)
    for path in ID_FILES:
        for line in _lines(path):
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit() and int(fields[2]) in taken:
                raise BoundaryError(f"uid_base {base}: id {fields[2]} belongs to {fields[0]!r} in {path}")
    for path in SUBORDINATE_FILES:
        for line in _lines(path):
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                start, size = int(fields[1]), int(fields[2])
                if start < base + count and base < start + size:
                    raise BoundaryError(f"uid_base {base}: ids overlap the range of {fields[0]!r} in {path}")


def _lines(path: str) -> list[str]:
    try:
        with open(path) as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def _default_sandbox_memory_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2 >> 20
    except (ValueError, OSError):
        return 8192


def apply_rlimits(*, memory_mb: int, max_processes: int, max_file_mb: int, max_open_files: int) -> None:
    """Resource limits for a kernel; CPU time is set per cell by the kernel loop."""
    mib = 1024 * 1024
    for limit, value in (
        (resource.RLIMIT_AS, memory_mb * mib),
        (resource.RLIMIT_NPROC, max_processes),
        (resource.RLIMIT_FSIZE, max_file_mb * mib),
        (resource.RLIMIT_NOFILE, max_open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
