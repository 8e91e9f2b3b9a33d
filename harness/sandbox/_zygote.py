"""The zygote: a pre-loaded parent that forks one isolated kernel per trajectory.

Started by the harness with a scrubbed environment. It imports the common modules once, then
serves spawn requests on a SEQPACKET control socket. For each kernel it forks an intermediate
process that enters fresh namespaces and forks the kernel itself as PID 1 of a new PID namespace,
so killing the kernel kills everything the kernel started. Each process dies with its parent.

    harness --ctl--> zygote --fork--> keeper (new user/mount/net/ipc/uts ns) --fork--> kernel (PID 1)
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import random
import select
import shutil
import signal
import socket
import sys
import tempfile
import traceback

from . import _isolation, _wire
from ._kernel import Kernel
from ._warmup import warm_up

EXIT_SETUP_FAILED = 70


def _setup_kernel(config: dict, isolated: bool, scratch: str) -> None:
    """In the kernel process: seal it off, then limit it. Order matters: mounts need privileges."""
    _isolation.set_parent_death_signal()
    os.setsid()
    if isolated:
        _isolation.seal_filesystem(scratch, int(config["scratch_mb"]))
        _isolation.drop_privileges()
    os.chdir(scratch)
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    _reseed_random_generators()
    _isolation.apply_rlimits(
        memory_mb=int(config["memory_mb"]),
        max_processes=int(config["max_processes"]),
        max_file_mb=int(config["max_file_mb"]),
        max_open_files=int(config["max_open_files"]),
    )
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # input() fails at once instead of hanging
    os.close(devnull)


def _reseed_random_generators() -> None:
    """Every kernel was forked from one zygote: without this, all would draw the same numbers."""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "sympy.core.random" in sys.modules:
        sys.modules["sympy.core.random"].rng.seed()


def _keeper(config: dict, isolated: bool, scratch: str, kernel_sock: socket.socket) -> None:
    """The intermediate process: enter namespaces, fork the kernel, announce its pid, wait for it.

    The zygote does not wait for any of this, so kernels are set up in parallel.
    """
    _isolation.set_parent_death_signal()
    if isolated:
        _isolation.enter_kernel_namespaces()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            _setup_kernel(config, isolated, scratch)
            kernel = Kernel(kernel_sock, config)
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


def probe_isolation(config: dict) -> str | None:
    """Try the full kernel setup once in a throwaway process; None if it works, else why not."""
    scratch = tempfile.mkdtemp(prefix="cortbench-probe-")
    try:
        return _probe(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _probe(scratch: str) -> str | None:
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            _isolation.enter_kernel_namespaces()
            inner = os.fork()
            if inner == 0:
                try:
                    _isolation.seal_filesystem(scratch, 16)
                    _isolation.drop_privileges()
                    os._exit(0)
                except BaseException as exc:  # noqa: BLE001
                    os.write(writer, str(exc).encode()[:500])
                    os._exit(1)
            _, status = os.waitpid(inner, 0)
            os._exit(0 if status == 0 else 1)
        except BaseException as exc:  # noqa: BLE001
            os.write(writer, str(exc).encode()[:500])
            os._exit(1)
    os.close(writer)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(reader, "rb") as fh:
        reason = fh.read().decode(errors="replace")
    return None if status == 0 else (reason or f"namespace setup exited with status {status}")


def _close_fds_except(*keep: int) -> None:
    """A kernel must hold no descriptor of the zygote (control socket, wake-up pipe, ...)."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.keepers: dict[
            int, tuple[int, int, str | None]
        ] = {}  # keeper pid -> (kernel id, kernel pid, scratch)
        self.config: dict = {}
        self.isolated = False

    def start(self) -> None:
        self.config = json.loads(self.ctl.recv(1 << 16))
        preloaded = []
        for name in self.config["preload"]:
            try:
                importlib.import_module(name)
                preloaded.append(name)
            except Exception:  # noqa: BLE001 - optional modules (rdkit) may be absent or broken
                pass
        if self.config["warmup"]:
            warm_up(preloaded)
        gc.collect()
        gc.freeze()  # kernels never scan (and so never copy-on-write) the preloaded heap
        reason = None
        if self.config["isolation"] != "none":
            reason = probe_isolation(self.config)
            self.isolated = reason is None
        self._send({"ready": True, "isolated": self.isolated, "reason": reason, "preloaded": preloaded})

    def _send(self, message: dict, fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.ctl, [data], fds)
        else:
            self.ctl.send(data)

    def spawn(self, kernel_id: int) -> None:
        parent_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        scratch = tempfile.mkdtemp(prefix="cortbench-kernel-")  # a private tmpfs covers it when isolated
        keeper = os.fork()
        if keeper == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _close_fds_except(kernel_end.fileno())
                _keeper(self.config, self.isolated, scratch, kernel_end)
            finally:
                os._exit(EXIT_SETUP_FAILED)
        kernel_end.close()
        self.keepers[keeper] = (kernel_id, scratch)
        self._send({"spawned": kernel_id, "keeper": keeper}, [parent_end.fileno()])
        parent_end.close()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            kernel_id, scratch = self.keepers.pop(pid, (None, None))
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            if kernel_id is not None:
                code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                self._send({"exited": kernel_id, "code": code})

    def shutdown(self) -> None:
        """The harness is gone or done: kill every kernel with everything it started, delete scratch."""
        for keeper in self.keepers:
            try:
                os.kill(keeper, signal.SIGTERM)  # the keeper kills its kernel's whole group
            except OSError:
                pass
        for keeper, (_, scratch) in list(self.keepers.items()):
            try:
                os.waitpid(keeper, 0)
            except ChildProcessError:
                pass
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        self.keepers.clear()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        while True:
            ready, _, _ = select.select([self.ctl, wake_r], [], [])
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
    _isolation.set_parent_death_signal()
    if os.getppid() != int(os.environ.get("CORTBENCH_HARNESS_PID", os.getppid())):
        sys.exit(1)  # the harness died before we set the signal
    ctl = socket.socket(fileno=int(sys.argv[1]))
    zygote = Zygote(ctl)
    try:
        zygote.start()
        zygote.serve()
    except (ConnectionError, EOFError):
        zygote.shutdown()  # the harness went away


if __name__ == "__main__":
    main()
