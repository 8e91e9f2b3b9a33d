"""The syscall filter: what no maths cell needs is refused, compiled once by libseccomp.

libseccomp (through the `pyseccomp` ctypes binding) compiles the filter in the zygote, which also
handles the architecture checks (a 32-bit or x32 syscall on x86_64 kills the process). Each
kernel then installs the compiled program with one prctl, as its last setup step.
"""

from __future__ import annotations

import errno
import os
import socket

from ._syscalls import NAMESPACE_FLAGS

# Refused with EPERM. Namespaces and mounts: the kernel's own are set up before the filter loads.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup", "uselib",
    "iopl", "ioperm", "lookup_dcookie", "name_to_handle_at", "open_by_handle_at", "fanotify_init",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "nfsservctl", "_sysctl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
)  # fmt: skip
ALLOWED_SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)  # still reach nothing
_MAX_FAMILY = 64  # AF_MAX is 46 today; families beyond this are refused by one rule


class SeccompUnavailable(OSError):
    """libseccomp or its binding is missing, or the filter cannot be compiled here."""


def compile_filter() -> bytes:
    """The seccomp BPF program every kernel installs (default: allow; the list above: EPERM)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # OSError: the binding loads libseccomp.so.2 on import
        raise SeccompUnavailable(
            f"libseccomp is not usable ({exc}); install libseccomp2 and pyseccomp"
        ) from None
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(deny, name)
        except (OSError, ValueError):
            pass  # not a syscall of this architecture
    for flag in NAMESPACE_FLAGS:  # fork and threads yes, new namespaces no
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, which a filter cannot read: ENOSYS makes glibc fall back
    # to clone, whose flags are checked above (what Docker's default profile does).
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for family in range(_MAX_FAMILY):
        if family not in ALLOWED_SOCKET_FAMILIES:
            rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
    rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GE, _MAX_FAMILY))
    fd = os.memfd_create("cortbench-seccomp")
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            rules.export_bpf(out)
        size = os.fstat(fd).st_size
        program = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if not program or len(program) % 8:
        raise SeccompUnavailable(f"libseccomp exported a malformed program ({len(program)} bytes)")
    return program
