"""Landlock, where the kernel has it: a second fence behind the mounts, set by the kernel itself.

Writes are allowed only below /tmp and /dev/shm (and to the character devices of /dev), TCP bind
and connect are refused (ABI 4), and signals and abstract unix sockets cannot reach beyond the
kernel's own processes (ABI 6). It needs no privilege and survives everything but the kernel's
exit, so a mistake in the mount setup does not turn into a writable host path.
"""

from __future__ import annotations

import ctypes
import os
import stat

from ._rootfs import DEVICES
from ._syscalls import (
    SYS_LANDLOCK_ADD_RULE,
    SYS_LANDLOCK_CREATE_RULESET,
    SYS_LANDLOCK_RESTRICT_SELF,
    check,
    syscall,
)

_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
TRUNCATE, IOCTL_DEV = 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class _Ruleset(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The Landlock ABI this kernel offers; 0 when it has none (or it is disabled)."""
    version = syscall(
        SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(0, version)


def _fs_rights(abi: int) -> int:
    return _FS_RIGHTS_BY_ABI[max(v for v in _FS_RIGHTS_BY_ABI if v <= abi)]


def restrict(abi: int, *, readable: list[str] | None, writable: list[str]) -> None:
    """Confine this process and its future children to reading `readable` (None: everything its
    mounts show) and writing `writable`; needs no_new_privs (set before)."""
    handled = _fs_rights(abi)
    ruleset = _Ruleset(handled, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                       SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)  # fmt: skip
    size = ctypes.sizeof(_Ruleset) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset_fd = check(syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(ruleset), ctypes.c_size_t(size), 0),
                       "landlock_create_ruleset")  # fmt: skip
    try:
        devices = READ_FILE | WRITE_FILE | (handled & TRUNCATE) | (handled & IOCTL_DEV)
        reading = EXECUTE | READ_FILE | READ_DIR
        rules = [(path, reading) for path in readable or ["/"]] + [(path, handled) for path in writable]
        rules += [(f"/dev/{name}", devices) for name in DEVICES if _is_char_device(f"/dev/{name}")]
        for path, allowed in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except (FileNotFoundError, PermissionError):
                if allowed != reading:
                    raise
                continue  # what this process cannot even reach needs no rule to read it
            if not os.path.isdir(f"/proc/self/fd/{fd}"):
                allowed &= _FILE_RIGHTS  # a file takes file rights only
            try:
                rule = _PathBeneath(allowed & handled, fd)
                check(syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0),
                      f"landlock_add_rule({path})")  # fmt: skip
            finally:
                os.close(fd)
        check(syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset_fd)


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False
