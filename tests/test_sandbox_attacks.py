"""Hostile cells, each in a bounded form: the harness survives, nothing escapes, the model is told."""

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from cortbench.harness.sandbox import STATE_LOST_TEXT, ExecStatus, LocalSandbox, SandboxConfig


def _cell_processes(sandbox) -> list[int]:
    """Host processes started by cells: descendants of the zygote below its keepers and kernels."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass

    def depth(pid: int) -> int:
        for level in range(1, 64):
            pid = parents.get(pid, 0)
            if pid == sandbox._zygote.pid:
                return level
            if pid <= 1:
                return 0
        return 0

    return [pid for pid in parents if depth(pid) >= 3]  # zygote -> keeper (1) -> kernel (2) -> cell's (3+)


async def _no_cell_processes_left(sandbox) -> bool:
    for _ in range(100):
        if not _cell_processes(sandbox):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_fork_bomb_is_capped_and_cleaned_up(sandbox):
    """max_processes holds (the kernel's cgroup and RLIMIT_NPROC: it runs as no host root)."""
    code = (
        "import os, time\nkids = 0\n"
        "for i in range(200):\n"
        "    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n"
        "    kids += 1\n"
        "print(kids)"
    )
    async with sandbox.session() as k:
        result = await k.run(code)
        cleaned = await _no_cell_processes_left(sandbox)  # while the kernel itself lives on
        after = await k.run("print(kids < 64)")
    assert result.error_name == "BlockingIOError" and "Resource temporarily unavailable" in result.output
    assert "background process(es)" in result.output
    assert cleaned
    assert after.output == "True"  # state survived the cleanup


async def test_unbounded_fork_bomb_hits_the_process_cap(sandbox):
    code = "import os\nn = 0\nwhile True:\n    os.fork()\n    n += 1"
    async with sandbox.session() as k:
        result = await k.run(code, timeout=20)
        cleaned = await _no_cell_processes_left(sandbox)
        ok = await k.run("print('alive')")
    assert result.status in (ExecStatus.ERROR, ExecStatus.MEMORY, ExecStatus.TIMEOUT, ExecStatus.KILLED)
    assert cleaned
    assert ok.output.endswith("alive")


async def test_memory_bomb_raises_memory_error_and_keeps_state(sandbox):
    code = "keep = 7\nblocks = []\ntry:\n    while True: blocks.append(bytearray(64 * 1024 * 1024))\nexcept MemoryError:\n    print('caught', len(blocks) < 20)\n    blocks = None"
    async with sandbox.session() as k:
        caught = await k.run(code)
        direct = await k.run("x = bytearray(8 * 1024 ** 3)")
        after = await k.run("print(keep)")
    assert caught.output == "caught True"
    assert direct.status == ExecStatus.MEMORY and direct.error_name == "MemoryError"
    assert after.output == "7"


async def test_hundred_megabyte_print_is_capped(sandbox):
    async with sandbox.session() as k:
        big = await k.run("print('x' * 100_000_000)")
        raw = await k.run("import os\nos.write(1, b'y' * 100_000_000)\nprint('done')")
    assert big.status == ExecStatus.OUTPUT_TRUNCATED
    assert big.output == "x" * 400 + "..." + "x" * 400
    assert big.stdout_chars == 100_000_001 and len(big.stdout) < 100_000
    assert raw.status in (ExecStatus.OUTPUT_TRUNCATED, ExecStatus.ERROR)
    assert len(raw.output) <= 803 + 200


async def test_segfault_restarts_the_kernel_and_says_so(sandbox):
    async with sandbox.session() as k:
        await k.run("x = 1")
        crash = await k.run("import ctypes\nctypes.string_at(0)")
        after = await k.run("print(x)")
        fresh = await k.run("print('works')")
    assert crash.status == ExecStatus.KILLED
    assert crash.error_name == "SIGSEGV"
    assert "segmentation fault" in crash.output and crash.output.endswith(STATE_LOST_TEXT)
    assert after.error_name == "NameError"
    assert fresh.output == "works"


async def test_os_exit_is_reported_as_exit_not_timeout(sandbox):
    result = await sandbox.run_code("import os\nos._exit(3)")
    assert result.status == ExecStatus.KILLED
    assert "exited with code 3" in result.output and result.kernel_restarted
    assert result.duration_s < 2


async def test_killing_the_parent_cannot_reach_the_harness(sandbox):
    result = await sandbox.run_code(
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)\nprint('still here')"
    )
    assert os.getpid() > 0  # we are alive to assert
    assert result.status in (ExecStatus.OK, ExecStatus.KILLED, ExecStatus.ERROR)
    later = await sandbox.run_code("print(1)")
    assert later.output == "1"


async def test_harness_processes_are_invisible(sandbox):
    result = await sandbox.run_code(
        "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    )
    assert result.output == "[1]"


async def test_background_subprocess_is_killed(sandbox):
    async with sandbox.session() as k:
        result = await k.run("import subprocess\np = subprocess.Popen(['sleep', '100'])\nprint('started')")
        check = await k.run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert result.output.startswith("started") and "were killed" in result.output
    assert check.output == "[1]"


async def test_background_thread_forces_a_restart(sandbox):
    async with sandbox.session() as k:
        await k.run("x = 1")
        result = await k.run(
            "import threading, time\nthreading.Thread(target=time.sleep, args=(100,), daemon=True).start()\nprint('ok')"
        )
        after = await k.run("print(x)")
    assert result.status == ExecStatus.KERNEL_RESTARTED and result.kernel_restarted
    assert result.output.startswith("ok") and result.output.endswith(STATE_LOST_TEXT)
    assert after.error_name == "NameError"


async def test_nothing_outside_scratch_changes(sandbox):
    sentinel = Path(__file__).with_name(f".sentinel-{os.getpid()}")  # the checkout is not even visible
    code = f"open({str(sentinel)!r}, 'w').write('escaped')"
    result = await sandbox.run_code(code)
    etc = await sandbox.run_code("import os\nos.remove('/etc/hostname')")
    usr = await sandbox.run_code("open('/usr/cortbench-escape', 'w')")
    local = await sandbox.run_code(
        "open('scratch.txt', 'w').write('fine')\nprint(open('scratch.txt').read())"
    )
    assert result.status == ExecStatus.ERROR and "No such file or directory" in result.output
    assert not sentinel.exists()
    assert etc.status == ExecStatus.ERROR and os.path.exists("/etc/hostname")
    assert usr.status == ExecStatus.ERROR and not os.path.exists("/usr/cortbench-escape")
    assert local.output == "fine"


async def test_raw_devices_are_not_reachable(sandbox):
    result = await sandbox.run_code("import os\nprint(sorted(os.listdir('/dev')))")
    assert "vda" not in result.output and "sda" not in result.output and "mem" not in result.output.split("'")


async def test_loopback_is_unreachable(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(3)
    port = server.getsockname()[1]
    hits = []

    def accept():
        try:
            hits.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    result = await sandbox.run_code(
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
    )
    thread.join()
    server.close()
    assert result.status == ExecStatus.ERROR
    assert not hits


async def test_secrets_in_the_environment_do_not_leak(monkeypatch):
    monkeypatch.setenv("CORTBENCH_TEST_SECRET", "s3cr3t-token")
    async with LocalSandbox(SandboxConfig(warm_kernels=0)) as sb:
        result = await sb.run_code(
            "import os\nprint(dict(os.environ))\n"
            "for p in os.listdir('/proc'):\n"
            "    try: print(open(f'/proc/{p}/environ', 'rb').read())\n"
            "    except Exception: pass"
        )
    assert "s3cr3t" not in result.stdout


async def test_privileges_are_dropped(sandbox):
    result = await sandbox.run_code(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mount(b'none', b'/', None, 32 | 1, None), libc.unshare(0x10000000))\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    )
    assert result.output.split() == ["-1", "-1", "0000000000000000"]


@pytest.mark.parametrize("isolation", ["none"])
async def test_without_namespaces_limits_and_cleanup_still_apply(isolation):
    async with LocalSandbox(SandboxConfig(isolation=isolation, warm_kernels=0, memory_mb=1024)) as sb:
        assert not sb.isolated
        async with sb.session() as k:
            where = (await k.run("import os\nprint(os.getcwd())")).output
            memory = await k.run("x = bytearray(4 * 1024 ** 3)")
            procs = await k.run("import subprocess\nsubprocess.Popen(['sleep', '100'])")
        assert memory.status == ExecStatus.MEMORY
        assert "were killed" in procs.output
    assert where.startswith("/tmp/cortbench-kernel-")
    assert not os.path.exists(where)  # the scratch dir is deleted with the kernel


async def test_credential_files_are_not_there(sandbox):
    result = await sandbox.run_code(
        "import os\nprint([p for p in ('/etc/shadow', '/etc/gshadow', '/etc/ssh', '/root/.ssh') if os.path.exists(p)])"
    )
    assert result.output == "[]"


async def test_scratch_is_a_private_tmpfs_that_vanishes(sandbox):
    async with sandbox.session() as k:
        where = (await k.run("import os\nopen('f.txt', 'w').write('x')\nprint(os.getcwd())")).output
        mounts = (await k.run("print([m for m in open('/proc/self/mounts') if ' /tmp ' in m])")).output
    assert where == "/tmp" and "tmpfs /tmp tmpfs rw,nosuid,nodev" in mounts
    assert not os.path.exists("/tmp/f.txt")  # the host's /tmp never saw it


WARN_ONCE = """
import asyncio
from cortbench.harness.sandbox import LocalSandbox, SandboxConfig

async def main():
    for _ in range(2):
        async with LocalSandbox(SandboxConfig(warm_kernels=0)) as sb:
            print(sb.isolated, (await sb.run_code("print(2 + 2)")).output)

asyncio.run(main())
"""


def test_missing_namespaces_are_reported_once_loudly_and_cells_still_run():
    """Simulate a host that forbids user namespaces (as some containers do), as an unprivileged
    user: root mapped to itself in a user namespace would be refused (test_sandbox_boundary)."""
    import shutil
    import sys

    from conftest import run_unprivileged

    if not shutil.which("unshare"):
        pytest.skip("needs util-linux unshare")
    forbid = "echo 0 > /proc/sys/user/max_user_namespaces"
    proc = run_unprivileged(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            f'{forbid} && exec "$0" -c "$1"',
            sys.executable,
            WARN_ONCE,
        ],
        timeout=120,
    )
    if proc.returncode != 0 and "max_user_namespaces" in proc.stderr:
        pytest.skip("cannot simulate a host without user namespaces here")
    assert proc.stdout.split("\n")[:2] == ["False 4", "False 4"], proc.stderr
    assert proc.stderr.count("WARNING: sandbox namespaces are unavailable") == 1
