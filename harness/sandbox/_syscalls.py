"""The Linux system calls the sandbox's setup needs, through ctypes (os.unshare is Python 3.12+;
mount, pivot_root, mount_setattr and capset have no wrapper at all).

Runs only inside the sandbox's own processes (zygote, keepers, kernels), never in the harness.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NAMESPACE_FLAGS = (
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
    CLONE_NEWTIME,
)  # fmt: skip

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x2000, 0x4000, 0x40000
MNT_DETACH = 0x2
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 24, 38, 22
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Numbers of the syscalls glibc has no wrapper for. mount_setattr (442) and the Landlock calls
# (444-446) are numbered alike on every architecture (added after the syscall table unification).
_SYSCALLS = {"x86_64": {"pivot_root": 155}, "aarch64": {"pivot_root": 41}}
SYS_MOUNT_SETATTR = 442
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446


class IsolationError(OSError):
    """A namespace, mount or privilege step failed; the kernel must not run untrusted code."""


def check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")
    return ret


def _enc(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def syscall(name_or_number: str | int, *args) -> int:
    if isinstance(name_or_number, str):
        table = _SYSCALLS.get(os.uname().machine)
        if table is None:
            raise IsolationError(0, f"unsupported architecture {os.uname().machine}")
        number = table[name_or_number]
    else:
        number = name_or_number
    return _libc.syscall(ctypes.c_long(number), *args)


def unshare(flags: int) -> None:
    check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(
        _libc.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)),
        f"mount {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    check(_libc.umount2(_enc(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    check(syscall("pivot_root", _enc(new_root), _enc(put_old)), "pivot_root")


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def set_mount_attributes(path: str, attributes: int, *, recursive: bool = True) -> None:
    """Set per-mount flags (read-only, nosuid, nodev, noexec) on `path` and, recursively, below it."""
    attr = _MountAttr(attributes, 0, 0, 0)
    check(
        _libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), AT_FDCWD, _enc(path),
                      AT_RECURSIVE if recursive else 0, ctypes.byref(attr), ctypes.sizeof(attr)),
        f"mount_setattr({path})",
    )  # fmt: skip


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Die with the parent, so no sandbox process outlives the harness. Cleared by a uid change:
    set it again after one."""
    check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_dumpable() -> None:
    """A uid change makes a process non-dumpable, which makes its /proc/self files root's: the
    keeper must still write its own uid_map after becoming the kernel's host id."""
    check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def drop_capabilities() -> None:
    """Drop every capability (bounding set too) and forbid regaining any through exec."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp_program(program: bytes) -> None:
    """Install a compiled seccomp BPF program (8 bytes per instruction) on this thread, for good."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    check(
        _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "prctl(PR_SET_SECCOMP)"
    )
