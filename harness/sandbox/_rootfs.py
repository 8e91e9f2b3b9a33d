"""The kernels' root filesystem: only what Python needs, built once in the zygote.

The zygote moves into a private mount namespace whose root is a small tmpfs holding read-only
binds of /usr, the Python prefixes and site-packages, a few files of /etc, a minimal /dev and a
/proc (needed so kernels may mount their own), then `pivot_root`s into it and detaches the host's
tree. Every kernel inherits a copy of that tree, locked by its own user namespace, and adds three
private mounts: a tmpfs /tmp (its working directory), a tmpfs /dev/shm and a fresh /proc of its
PID namespace, read-only with runc's masked paths. Host /tmp, $HOME, /root, /run, /var, the
checkout and every socket file stay outside. /opt/cortbench holds the stand-ins for pip
(_install.py), read-only like the rest.
"""

from __future__ import annotations

import os
import site
import sys
from dataclasses import dataclass, field

from ._install import write_stand_ins
from ._syscalls import (
    MNT_DETACH,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    mount,
    pivot_root,
    set_mount_attributes,
    umount,
)

USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # merged-/usr symlinks, or real dirs
ETC_ENTRIES = (
    "os-release", "lsb-release", "debian_version", "issue", "redhat-release", "system-release",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "nsswitch.conf", "host.conf",
    "gai.conf", "protocols", "services", "mime.types", "magic", "alternatives", "fonts", "matplotlibrc",
    "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "pki/tls/certs", "pki/ca-trust",
)  # fmt: skip
# Written, not bound: the host's accounts and names are none of a cell's business.
ETC_SYNTHETIC = {
    "passwd": "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hostname": "sandbox\n",
    "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
}
DEVICES = ("null", "zero", "full", "random", "urandom")
# runc's default maskedPaths under /proc (libcontainer/specconv), plus kmsg; all of /proc is
# read-only as well, which covers runc's readonlyPaths (/proc/sys, sysrq-trigger, bus, fs, irq).
PROC_MASKED = (
    "acpi", "asound", "interrupts", "kcore", "keys", "kmsg", "latency_stats", "sched_debug", "scsi",
    "sysrq-trigger", "timer_list", "timer_stats",
)  # fmt: skip
READ_ONLY = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
NEW_ROOT = "/tmp"  # the tmpfs is mounted here in the zygote's private namespace, then becomes "/"
STAND_INS = "/opt/cortbench"  # pip stand-ins: first on the kernels' PATH and import path


@dataclass
class RootFs:
    """What the zygote built: the paths bound in (for `cortbench sandbox check`), and the Python
    paths that live under /tmp, which each kernel binds again above its own /tmp."""

    bound: list[str] = field(default_factory=list)
    under_tmp: list[str] = field(default_factory=list)


def python_paths() -> list[str]:
    """The interpreter's prefixes and import paths, outermost first, without the harness's own
    folders: a sys.path entry outside every prefix (a checkout, a PYTHONPATH) is left out."""
    prefixes = {
        os.path.abspath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix)
    }
    candidates = set(prefixes) | {os.path.abspath(p) for p in site.getsitepackages()}
    candidates.add(os.path.abspath(site.getusersitepackages()))
    for entry in sys.path:
        path = os.path.abspath(entry) if entry and os.path.isabs(entry) else None
        if path and (
            _inside_any(path, prefixes) or os.path.basename(path) in ("site-packages", "dist-packages")
        ):
            candidates.add(path)
    paths = sorted(p for p in candidates if p != "/" and os.path.exists(p))
    return [
        p for p in paths if not _inside_any(p, [q for q in paths if q != p]) and not _inside_any(p, ["/usr"])
    ]


def _inside_any(path: str, roots) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def build(python: list[str]) -> RootFs:
    """In the zygote, in its new mount namespace: build the kernels' root and pivot into it.

    Sources are opened before anything is mounted and bound through /proc/self/fd, so a source
    under /tmp (where the new root is assembled) or under a folder the harness's uid cannot
    traverse still binds.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    binds, links = _host_tree()
    binds += python
    devices = [f"/dev/{n}" for n in DEVICES if os.path.exists(f"/dev/{n}")]
    sources = {path: os.open(path, os.O_PATH) for path in [*binds, *devices, "/proc"]}
    try:
        mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
        for path in binds:
            _bind(sources[path], path, recursive=True)
            set_mount_attributes(NEW_ROOT + path, READ_ONLY)
        for inside, target in links:
            _makedirs(os.path.dirname(NEW_ROOT + inside))
            os.symlink(target, NEW_ROOT + inside)
        for name, text in ETC_SYNTHETIC.items():
            _makedirs(NEW_ROOT + "/etc")
            with open(f"{NEW_ROOT}/etc/{name}", "w") as fh:
                fh.write(text)
        _build_dev(sources, devices)
        write_stand_ins(NEW_ROOT + STAND_INS)
        os.chmod(NEW_ROOT + "/opt", 0o755)
        _bind(sources["/proc"], "/proc", recursive=False)  # covered by each kernel's own /proc
        _makedirs(NEW_ROOT + "/tmp", 0o1777)
    finally:
        for fd in sources.values():
            os.close(fd)
    os.mkdir(NEW_ROOT + "/.old-root")
    pivot_root(NEW_ROOT, NEW_ROOT + "/.old-root")
    os.chdir("/")
    umount("/.old-root", MNT_DETACH)
    os.rmdir("/.old-root")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return RootFs(bound=binds, under_tmp=[p for p in python if _inside_any(p, ["/tmp"])])


def _makedirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)  # the kernels' host uid must traverse it whatever the zygote's umask


def _bind(fd: int, inside: str, *, recursive: bool) -> None:
    target = NEW_ROOT + inside
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        _makedirs(target)
    else:
        _makedirs(os.path.dirname(target))
        open(target, "a").close()
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | (MS_REC if recursive else 0))


def _build_dev(sources: dict[str, int], devices: list[str]) -> None:
    """A tmpfs /dev with null, zero, full, random and urandom bound from the host (a read-only
    mount does not stop writes to device nodes, and no other node is reachable)."""
    _makedirs(NEW_ROOT + "/dev")
    mount("tmpfs", NEW_ROOT + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for path in devices:
        _bind(sources[path], path, recursive=False)
        set_mount_attributes(NEW_ROOT + path, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, recursive=False)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{NEW_ROOT}/dev/{link}")
    _makedirs(NEW_ROOT + "/dev/shm", 0o1777)
    set_mount_attributes(NEW_ROOT + "/dev", READ_ONLY, recursive=False)


def fallback_readable() -> list[str]:
    """Without namespaces, what Landlock lets a kernel read: the same tree the root filesystem
    would hold, seen in place (the host's own account files instead of the written ones)."""
    accounts = [f"/etc/{name}" for name in ETC_SYNTHETIC if os.path.exists(f"/etc/{name}")]
    return [*_host_tree()[0], *python_paths(), *accounts, "/dev", "/proc"]


def _host_tree() -> tuple[list[str], list[tuple[str, str]]]:
    """What the root filesystem takes from the host, at the same paths: folders and files to bind
    read-only, and symlinks (merged-/usr links, /etc/localtime, ...) to copy."""
    binds, links = [], []
    for path in [*(f"/{name}" for name in USR_LINKS), "/usr", *(f"/etc/{name}" for name in ETC_ENTRIES)]:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.exists(path):
            binds.append(path)
    return binds, links


def mount_kernel_private(rootfs: RootFs, *, scratch_mb: int, shm_mb: int, pid_max: int) -> None:
    """In a kernel (PID 1 of its namespaces, root of its own user namespace): its own /tmp,
    /dev/shm and /proc. The per-namespace sysctls are written before /proc turns read-only."""
    keep = {path: os.open(path, os.O_PATH) for path in rootfs.under_tmp}
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_mb}m,mode=1777")
    for path, fd in keep.items():  # a Python installed under /tmp stays importable
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        set_mount_attributes(path, READ_ONLY)
        os.close(fd)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={shm_mb}m,mode=1777")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # Per-namespace knobs: cap the PIDs of this kernel (Linux >= 6.14), forbid nested user namespaces.
    for path, value in (
        ("/proc/sys/kernel/pid_max", str(pid_max)),
        ("/proc/sys/user/max_user_namespaces", "0"),
    ):
        try:
            with open(path, "w") as fh:
                fh.write(value)
        except OSError:
            pass
    for name in PROC_MASKED:
        path = f"/proc/{name}"
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        elif os.path.exists(path):
            mount("/dev/null", path, None, MS_BIND)
    set_mount_attributes("/proc", READ_ONLY | MOUNT_ATTR_NOEXEC)
