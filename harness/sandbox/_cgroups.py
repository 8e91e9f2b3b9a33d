"""Resource accounting that root cannot lift: a cgroup per kernel under one cgroup per sandbox.

A kernel's cgroup caps its memory (its heap, and the tmpfs pages of its /tmp and /dev/shm, which
RLIMIT_AS does not see) and its processes (root is exempt from RLIMIT_NPROC, a cgroup's pids.max
has no exemption). The sandbox's cgroup bounds all kernels together, so `max_kernels` kernels at
their limit cannot exhaust the host. cgroup v2 is used where its memory and pids controllers can
be enabled below the harness's cgroup (or `SandboxConfig.cgroup_parent`); otherwise the v1 memory
and pids hierarchies. The zygote opens the sandbox's folders before it leaves the host's
filesystem and works through those descriptors from then on.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

V1_CONTROLLERS = ("memory", "pids")
STALE = re.compile(r"cortbench-(\d+)$")


class CgroupUnavailable(OSError):
    """No cgroup can be created here (not root, read-only cgroupfs, controllers not delegated)."""


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(dir_fd: int, name: str, value: str) -> None:
    fd = os.open(name, os.O_WRONLY, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _mounts() -> dict[str, tuple[str, str]]:
    """cgroup hierarchy ("unified" or a v1 controller) -> (mount point, root of the mount)."""
    found: dict[str, tuple[str, str]] = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options, root, point = fields[sep + 1], fields[sep + 3], fields[3], fields[4]
        if fstype == "cgroup2":
            found.setdefault("unified", (point, root))
        elif fstype == "cgroup":
            for controller in options.split(","):
                if controller in V1_CONTROLLERS:
                    found.setdefault(controller, (point, root))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup in each hierarchy ("unified" for v2), from /proc/self/cgroup."""
    paths = {}
    for line in _read("/proc/self/cgroup").splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            paths["unified"] = path
        for controller in controllers.split(","):
            if controller in V1_CONTROLLERS:
                paths[controller] = path
    return paths


def _host_dir(mount: tuple[str, str], path: str) -> str:
    point, root = mount
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return os.path.normpath(os.path.join(point, path.lstrip("/")))


def _remove_stale(parent: str) -> None:
    """Sandboxes killed with SIGKILL leave empty cgroups behind; remove those of dead processes."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        match = STALE.match(name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # its sandbox still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        folder = os.path.join(parent, name)
        for child in os.listdir(folder):
            if os.path.isdir(os.path.join(folder, child)):
                _rmdir(os.path.join(folder, child))
        _rmdir(folder)


def _rmdir(path: str, dir_fd: int | None = None) -> bool:
    for _ in range(50):  # the last task of a cgroup may still be exiting
        try:
            os.rmdir(path, dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.002)
    return False


@dataclass
class KernelLimits:
    memory_bytes: int
    pids: int


# The files that hold a cgroup's limits, per hierarchy; swap limits are absent without swap accounting.
_LIMIT_FILES = {
    "memory": (("memory.limit_in_bytes", "memory"), ("memory.memsw.limit_in_bytes", "memory")),
    "pids": (("pids.max", "pids"),),
    "unified": (("memory.max", "memory"), ("memory.swap.max", "zero"), ("pids.max", "pids")),
}
_OPTIONAL = ("memory.memsw.limit_in_bytes", "memory.swap.max")


def _set_limits(dir_fd: int, prefix: str, hierarchy: str, memory_bytes: int, pids: int | str) -> None:
    values = {"memory": memory_bytes, "pids": pids, "zero": 0}
    for file, key in _LIMIT_FILES[hierarchy]:
        try:
            _write(dir_fd, prefix + file, str(values[key]))
        except (FileNotFoundError, PermissionError):
            if file not in _OPTIONAL:
                raise


class SandboxCgroups:
    """The sandbox's cgroup in each hierarchy it uses, held as open folders (with their parents',
    to remove them at the end); one child cgroup per kernel slot, named k<slot>."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.dirs: dict[str, int] = {}  # hierarchy -> the sandbox's cgroup folder
        self.parents: dict[str, tuple[int, str]] = {}  # hierarchy -> (its parent folder, where)
        self._oom_seen: dict[int, int] = {}  # slot -> its cgroup's OOM kills counted so far
        self.name = f"cortbench-{os.getpid()}"

    @property
    def description(self) -> str:
        where = ", ".join(f"{place}/{self.name}" for _, place in self.parents.values())
        return f"cgroup v{self.version}: memory and pids at {where}"

    @classmethod
    def create(cls, *, total_memory_bytes: int, parent: str | None = None) -> SandboxCgroups:
        """Make the sandbox's cgroup below `parent` (default: this process's own cgroup): v2
        where its controllers can be had, else v1. CgroupUnavailable says why neither works."""
        mounts, own = _mounts(), _own_paths()
        errors = []
        if "unified" in mounts:
            base = parent or _host_dir(mounts["unified"], own.get("unified", "/"))
            try:
                return cls._create(2, {"unified": base}, total_memory_bytes)
            except OSError as exc:
                errors.append(f"v2 at {base}: {exc.strerror or exc}")
        if all(c in mounts and c in own for c in V1_CONTROLLERS):
            bases = {c: _host_dir(mounts[c], own[c]) for c in V1_CONTROLLERS}
            try:
                return cls._create(1, bases, total_memory_bytes)
            except OSError as exc:
                errors.append(f"v1: {exc.strerror or exc}")
        raise CgroupUnavailable(
            "; ".join(errors) or "no cgroup v2 or v1 memory and pids hierarchy is mounted"
        )

    @classmethod
    def _create(cls, version: int, bases: dict[str, str], total_memory_bytes: int) -> SandboxCgroups:
        sandbox = cls(version)
        try:
            for hierarchy, base in bases.items():
                if version == 2:
                    _enable_v2_controllers(base)
                _remove_stale(base)
                parent_fd = os.open(base, os.O_DIRECTORY)
                sandbox.parents[hierarchy] = (parent_fd, base)
                os.mkdir(sandbox.name, dir_fd=parent_fd)
                sandbox.dirs[hierarchy] = fd = os.open(sandbox.name, os.O_DIRECTORY, dir_fd=parent_fd)
                _set_limits(fd, "", hierarchy, total_memory_bytes, "max")
                if version == 2:
                    _write(fd, "cgroup.subtree_control", "+memory +pids")
        except OSError:
            sandbox.close()
            raise
        return sandbox

    def fds(self) -> list[int]:
        return list(self.dirs.values())

    def join(self, slot: int, limits: KernelLimits) -> None:
        """In a keeper, before it forks its kernel: `slot`'s cgroup (made by the slot's first
        kernel, then reused: it is empty when its kernel is gone), limited, joined."""
        child = f"k{slot}"
        for hierarchy, fd in self.dirs.items():
            try:
                os.mkdir(child, dir_fd=fd)
            except FileExistsError:
                pass
            _set_limits(fd, f"{child}/", hierarchy, limits.memory_bytes, limits.pids)
            _write(fd, f"{child}/cgroup.procs", str(os.getpid()))

    def oom_killed(self, slot: int) -> bool:
        """Whether the OOM killer killed a process in `slot`'s cgroup (at its memory limit) since
        the last call for that slot; the cgroup's counter only grows, and the slot is reused."""
        hierarchy, name = (
            ("memory", "memory.oom_control") if self.version == 1 else ("unified", "memory.events")
        )
        try:
            fd = os.open(f"k{slot}/{name}", os.O_RDONLY, dir_fd=self.dirs[hierarchy])
            with os.fdopen(fd) as fh:
                text = fh.read()
        except (OSError, KeyError):
            return False
        match = re.search(r"^oom_kill (\d+)", text, re.M)
        count = int(match.group(1)) if match else 0
        seen, self._oom_seen[slot] = self._oom_seen.get(slot, 0), count
        return count > seen

    def close(self) -> None:
        """Remove the sandbox's cgroups; every kernel must be gone."""
        for hierarchy, (parent_fd, _) in self.parents.items():
            fd = self.dirs.pop(hierarchy, None)
            if fd is not None:
                for child in os.listdir(fd):
                    if child.startswith("k") and child[1:].isdigit():
                        _rmdir(child, dir_fd=fd)
                os.close(fd)
                _rmdir(self.name, dir_fd=parent_fd)
            os.close(parent_fd)
        self.parents.clear()


def _enable_v2_controllers(base: str) -> None:
    available = _read(os.path.join(base, "cgroup.controllers")).split()
    missing = [c for c in V1_CONTROLLERS if c not in available]
    if missing:
        raise CgroupUnavailable(f"controllers {', '.join(missing)} are not delegated to this cgroup")
    if not all(c in _read(os.path.join(base, "cgroup.subtree_control")).split() for c in V1_CONTROLLERS):
        # Fails (EBUSY) while processes live in `base` itself: cgroup v2 gives controllers only to
        # folders without processes. Run cortbench in a delegated cgroup, or name one (cgroup_parent).
        with open(os.path.join(base, "cgroup.subtree_control"), "w") as fh:
            fh.write("+memory +pids")
