"""Linux isolation primitives for kernels: namespaces, a read-only filesystem, dropped privileges.

Runs inside the sandbox's own processes (the zygote's children), never in the harness. Uses raw
syscalls through ctypes because the standard library has no unshare/mount (os.unshare is 3.12+).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import resource
import signal

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
KERNEL_NAMESPACES = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS

MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x2000, 0x4000, 0x40000
SAFE_DEVICES = ("null", "zero", "full", "random", "urandom")
HOME_CREDENTIALS = (
    ".ssh",
    ".aws",
    ".azure",
    ".gnupg",
    ".docker",
    ".kube",
    ".config/gcloud",
    ".cache/huggingface",
    ".huggingface",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".config/gh",
)
SYSTEM_CREDENTIALS = ("/etc/shadow", "/etc/gshadow", "/etc/ssh")
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added after the syscall table unification)
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class IsolationError(OSError):
    """A namespace, mount or privilege step failed; the kernel must not run untrusted code."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Die with the parent, so no sandbox process outlives the harness."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def enter_kernel_namespaces() -> None:
    """Move into new user, mount, network, IPC and UTS namespaces; children get a new PID namespace.

    The user namespace maps only our own uid/gid (as 0 inside), which any user may do, so this
    works unprivileged too. Capabilities gained here are dropped again by `drop_privileges`.
    """
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(KERNEL_NAMESPACES), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def _mask_credentials() -> None:
    """Hide well-known credential files: the kernel's uid 0 is the host's owner of root's files."""
    home = pwd.getpwuid(os.getuid()).pw_dir
    for path in [*(os.path.join(home, p) for p in HOME_CREDENTIALS), *SYSTEM_CREDENTIALS]:
        if os.path.isdir(path) and not os.path.islink(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=000")
        elif os.path.isfile(path) and not os.path.islink(path):
            _mount("/dev/null", path, None, MS_BIND)


def seal_filesystem(scratch: str, scratch_mb: int) -> None:
    """Make every mount read-only, mount a private tmpfs on the kernel's scratch directory, hide
    credentials, and replace /dev by a minimal one (null, zero, full, random, urandom): a
    read-only mount does not stop writes to device nodes, and uid 0 here owns the host's disks.

    The host's /tmp stays visible (read-only): Python installations and checkouts may live there.
    Must run as PID 1 of the new PID namespace (so the new /proc shows only the kernel's processes).
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mask_credentials()
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    _check(
        _libc.syscall(
            SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)
        ),
        "mount_setattr(/, read-only, recursive)",
    )
    _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_mb}m,mode=1777")
    staging = os.path.join(scratch, ".dev")
    os.mkdir(staging)
    for name in SAFE_DEVICES:
        open(f"{staging}/{name}", "w").close()
        _mount(f"/dev/{name}", f"{staging}/{name}", None, MS_BIND)
    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "size=1m,mode=755")
    for name in SAFE_DEVICES:
        open(f"/dev/{name}", "w").close()
        _mount(f"{staging}/{name}", f"/dev/{name}", None, MS_MOVE)
        os.unlink(f"{staging}/{name}")
    os.rmdir(staging)
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"/dev/{link}")
    os.mkdir("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
    # Per-namespace knobs (Linux >= 6.14 for pid_max): cap the processes of this kernel, and
    # forbid nested user namespaces, the usual first step of privilege games.
    for path, value in (("/proc/sys/kernel/pid_max", "301"), ("/proc/sys/user/max_user_namespaces", "0")):
        try:
            with open(path, "w") as fh:
                fh.write(value)
        except OSError:
            pass


def drop_privileges() -> None:
    """Drop every capability (bounding set too) and forbid regaining any through exec."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


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
