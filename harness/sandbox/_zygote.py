"""The zygote: a pre-loaded parent that forks one isolated kernel per trajectory.

Started by the harness with a scrubbed environment. It imports the common modules once, prepares
the boundary (_isolation.py: probes every layer, then moves into the kernels' minimal root
filesystem), then serves spawn requests on a SEQPACKET control socket. For each kernel it forks an
intermediate process that joins the kernel's cgroup, becomes its unprivileged host id, enters
fresh namespaces and forks the kernel itself as PID 1 of a new PID namespace, so killing the
kernel kills everything the kernel started. Each process dies with its parent.

    harness --ctl--> zygote --fork--> keeper (cgroup, host id, new namespaces) --fork--> kernel (PID 1)
"""

from __future__ import annotations

import gc
import heapq
import importlib
import json
import os
import random
import select
import signal
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass

from . import _wire
from ._install import refusal, stand_in_paths, write_stand_ins
from ._isolation import Boundary, BoundaryError
from ._kernel import Kernel
from ._rootfs import STAND_INS
from ._syscalls import set_parent_death_signal
from ._warmup import warm_up

EXIT_SETUP_FAILED = 70


def _reseed_random_generators() -> None:
    """Every kernel was forked from one zygote: without this, all would draw the same numbers."""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "sympy.core.random" in sys.modules:
        sys.modules["sympy.core.random"].rng.seed()


def _start_kernel(boundary: Boundary, config: dict, scratch: str | None, sock: socket.socket) -> Kernel:
    """In the kernel process: seal it off and limit it (Boundary.enter_kernel), then get ready."""
    workdir = boundary.enter_kernel(scratch)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    os.environ["MPLCONFIGDIR"] = os.path.join(workdir, ".matplotlib")  # writable: its font cache
    _use_stand_ins(
        *(stand_in_paths(STAND_INS) if boundary.isolated else write_stand_ins(workdir + "/.cortbench"))
    )
    _reseed_random_generators()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # input() fails at once instead of hanging
    os.close(devnull)
    return Kernel(sock, config)


def _use_stand_ins(bindir: str, pydir: str) -> None:
    """pip and its kin resolve to the stand-ins (_install.py): in this kernel and in its children."""
    os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    os.environ["PYTHONPATH"] = os.pathsep.join([pydir, os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, pydir)


def _keeper(
    boundary: Boundary, config: dict, slot: int, scratch: str | None, kernel_sock: socket.socket
) -> None:
    """The intermediate process: enter the kernel's cgroup, host id and namespaces, fork the
    kernel, announce its pid, wait for it. The zygote waits for none of this, so kernels are set
    up in parallel."""
    boundary.enter_keeper(slot, scratch)
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            kernel = _start_kernel(boundary, config, scratch, kernel_sock)
            os.read(go_r, 1)  # greet only after the keeper has sent our pid on the same socket
            os.close(go_r)
        except BaseException:  # noqa: BLE001 - report and leave; the harness sees EOF
            traceback.print_exc()
            os._exit(EXIT_SETUP_FAILED)
        kernel.serve()
        os._exit(0)
    os.close(go_r)
    signal.signal(signal.SIGTERM, lambda *_: _kill_kernel(pid))
    _wire.send(kernel_sock, {"pid": pid})
    os.write(go_w, b"1")
    os.close(go_w)
    kernel_sock.close()
    _, status = os.waitpid(pid, 0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status) & 0x7F)


def _kill_kernel(pid: int) -> None:
    """SIGTERM to a keeper: kill its kernel and everything the kernel started, then leave."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(128 + signal.SIGTERM)


def _close_fds_except(*keep: int) -> None:
    """A kernel must hold no descriptor of the zygote (control socket, wake-up pipe, ...)."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class _Keeper:
    kernel_id: int
    slot: int
    scratch: str | None


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.keepers: dict[int, _Keeper] = {}  # by keeper pid
        self.config: dict = {}
        self.boundary: Boundary | None = None
        self.free_slots: list[int] = []  # a heap: the lowest free slot (host id) is reused first
        self.next_slot = 0

    def start(self) -> bool:
        self.config = json.loads(self.ctl.recv(1 << 16))
        preloaded: list[str] = []

        def preload() -> None:
            # Still in the host's filesystem: a library that writes caches on import (matplotlib's
            # font list) writes them in a private folder, removed after, not in the host's /tmp.
            with tempfile.TemporaryDirectory(prefix="cortbench-zygote-") as private:
                os.environ["HOME"] = os.environ["MPLCONFIGDIR"] = private
                for name in self.config["preload"]:
                    try:
                        importlib.import_module(name)
                        preloaded.append(name)
                    except Exception:  # noqa: BLE001 - optional modules (rdkit) may be absent or broken
                        pass
                if self.config["warmup"]:
                    warm_up(preloaded)
            refusal()  # computed once here (what is importable), inherited by every kernel

        try:
            self.boundary = Boundary.prepare(self.config, meanwhile=preload)
        except BoundaryError as exc:
            self._send({"ready": False, "error": str(exc)})
            return False
        gc.collect()
        gc.freeze()  # kernels never scan (and so never copy-on-write) the preloaded heap
        layers = self.boundary.report()
        reason = None if self.boundary.isolated else layers["namespaces"]["detail"]
        self._send({"ready": True, "isolated": self.boundary.isolated, "reason": reason, "layers": layers,
                    "preloaded": preloaded, "kernel_memory_mb": self.boundary.kernel_limits.memory_bytes >> 20})  # fmt: skip
        return True

    def _send(self, message: dict, fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.ctl, [data], fds)
        else:
            self.ctl.send(data)

    def _take_slot(self) -> int:
        if self.free_slots:
            return heapq.heappop(self.free_slots)
        self.next_slot += 1
        return self.next_slot - 1

    def spawn(self, kernel_id: int) -> None:
        boundary = self.boundary
        assert boundary is not None  # serve() runs only once start() has prepared it
        if len(self.keepers) >= boundary.slot_count:
            self._send(
                {"spawn_failed": kernel_id, "error": f"{len(self.keepers)} kernels are alive (the most)"}
            )
            return
        slot = self._take_slot()
        parent_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        scratch = boundary.new_scratch()
        keeper = os.fork()
        if keeper == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                keep = [kernel_end.fileno(), *(boundary.cgroups.fds() if boundary.cgroups else [])]
                _close_fds_except(*keep)
                _keeper(boundary, self.config, slot, scratch, kernel_end)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
            finally:
                os._exit(EXIT_SETUP_FAILED)
        kernel_end.close()
        self.keepers[keeper] = _Keeper(kernel_id, slot, scratch)
        self._send({"spawned": kernel_id, "keeper": keeper}, [parent_end.fileno()])
        parent_end.close()

    def _release(self, keeper: _Keeper) -> bool:
        assert self.boundary is not None  # a keeper exists only once start() has prepared it
        oom = self.boundary.release(keeper.slot, keeper.scratch)
        heapq.heappush(self.free_slots, keeper.slot)
        return oom

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            keeper = self.keepers.pop(pid, None)
            if keeper is not None:
                oom = self._release(keeper)
                code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                self._send({"exited": keeper.kernel_id, "code": code, "oom": oom})

    def shutdown(self) -> None:
        """The harness is gone or done: kill every kernel with everything it started, free all."""
        for pid in self.keepers:
            try:
                os.kill(pid, signal.SIGTERM)  # the keeper kills its kernel's whole group
            except OSError:
                pass
        for pid, keeper in list(self.keepers.items()):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self._release(keeper)
        self.keepers.clear()
        if self.boundary is not None:
            self.boundary.close()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        while True:
            watched: list[socket.socket | int] = [self.ctl, wake_r]
            ready, _, _ = select.select(watched, [], [])
            if wake_r in ready:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                self.reap()
            if self.ctl in ready:
                data = self.ctl.recv(1 << 16)
                if not data:
                    self.shutdown()
                    return
                request = json.loads(data)
                if "spawn" in request:
                    self.spawn(int(request["spawn"]))


def main() -> None:
    set_parent_death_signal()
    if os.getppid() != int(os.environ.get("CORTBENCH_HARNESS_PID", os.getppid())):
        sys.exit(1)  # the harness died before we set the signal
    ctl = socket.socket(fileno=int(sys.argv[1]))
    zygote = Zygote(ctl)
    try:
        if zygote.start():
            zygote.serve()
    except (ConnectionError, EOFError):
        zygote.shutdown()  # the harness went away


if __name__ == "__main__":
    main()
