"""Hostile cells of issue 12's table, as data: each prints one JSON line of what it could do.

Used in-process by tests/test_sandbox_boundary.py (as root, which CI is) and, through `main()`,
in a process of an unprivileged user (uid 65534) started by the same tests. A cell only ever
opens a sysctl for writing, never writes one.

    python tests/sandbox_battery.py HOST_JSON     # prints {"layers": ..., "results": {...}}
"""

from __future__ import annotations

import asyncio
import json
import sys

SYSCTLS = (
    "/proc/sys/kernel/printk_ratelimit", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
    "/proc/sys/kernel/panic", "/proc/sys/fs/file-max", "/proc/sys/kernel/pid_max",
    "/proc/sys/user/max_user_namespaces", "/proc/sys/kernel/modprobe", "/proc/sysrq-trigger",
    "/sys/fs/cgroup/pids/release_agent", "/sys/kernel/uevent_helper",
)  # fmt: skip

SYSCTL_CELL = f"""
import json, os
out = {{}}
for path in {SYSCTLS!r}:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        out[path] = exc.strerror
    else:
        os.close(fd)  # opened only: never written
        out[path] = "OPENED"
print(json.dumps(out))
"""


def read_cell(paths: list[str]) -> str:
    """Try to read each path (file or folder); prints {path: "READ" | "LISTED ..." | error}."""
    return f"""
import json, os
out = {{}}
for path in {paths!r}:
    try:
        if os.path.isdir(path):
            out[path] = "LISTED " + ",".join(sorted(os.listdir(path)))
        else:
            with open(path, "rb") as fh:
                fh.read(16)
            out[path] = "READ"
    except OSError as exc:
        out[path] = exc.strerror
print(json.dumps(out))
"""


def socket_cell(path: str, abstract: str) -> str:
    """Connect to a unix socket file and an abstract unix socket of the host."""
    return f"""
import json, socket
out = {{}}
for name, address in (("file", {path!r}), ("abstract", "\\0" + {abstract!r})):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(address)
        s.sendall(b"hello from the sandbox")
        out[name] = "CONNECTED"
    except OSError as exc:
        out[name] = exc.strerror or type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


FORK_CELL = """
import json, os, time
kids, error = [], None
for i in range(150):
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.strerror
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
try:
    os.close(os.open("/proc/sys/kernel/pid_max", os.O_WRONLY))
    pid_max = "OPENED"
except OSError as exc:
    pid_max = exc.strerror
print(json.dumps({"started": len(kids), "error": error, "pid_max": pid_max}))
"""

# What a cell writes on the kernel's own wire socket, as the harness would read it.
_REPLY = '{{"status":"ok","stdout":{{"head":{head},"tail":"","total":{total}}},"stderr":{{"head":"","tail":"","total":0}},"seq":{seq}}}'
FRAMES = {
    "nested": "b'[' * 100_000",
    "huge_int": "b'{\"status\": \"ok\", \"seq\": ' + b'9' * 401 + b'}'",
    "nan": 'b\'{"status": "ok", "cpu": NaN, "seq": 1}\'',
    "infinity": 'b\'{"status": "ok", "cpu": 1e999, "seq": 1}\'',
    "non_utf8": 'b\'{"status": "ok", "stdout": "\\xff\\xfe"}\'',
    "not_an_object": "b'[1, 2, 3]'",
    "forged_7mb_stdout": f"{_REPLY!r}.format(head='\"' + 'x' * 7_000_000 + '\"', total=7_000_000, seq=SEQ).encode()",
    "forged_oversized_field": f"{_REPLY!r}.format(head='\"' + 'x' * 100_000 + '\"', total=100_000, seq=SEQ).encode()",
    "wrong_seq": f"{_REPLY!r}.format(head='\"forged\"', total=6, seq=SEQ + 7).encode()",
    "negative_total": f"{_REPLY!r}.format(head='\"forged\"', total=-5, seq=SEQ).encode()",
    "huge_length_prefix": "None",
}


def frame_cell(kind: str) -> str:
    """Write a hostile frame on the kernel's socket to the harness, then end normally."""
    return f"""
import os, struct, sys
SEQ = sys._getframe(1).f_locals["request"].get("seq", 0)  # the request this cell answers
def is_socket(fd):
    try:
        return os.readlink(f"/proc/self/fd/{{fd}}").startswith("socket:")
    except OSError:  # the descriptor listdir itself used
        return False
fd = next(int(f) for f in os.listdir("/proc/self/fd") if is_socket(f))
body = {FRAMES[kind]}
frame = struct.pack("!I", 0xFFFFFFF0) if body is None else struct.pack("!I", len(body)) + body
os.write(fd, frame)
"""


MEMORY_CELL = """
import os
written = 0
try:
    for i in range(5):  # 5 x 50 MiB files (RLIMIT_FSIZE caps one file at 64 MiB)
        with open(f"/tmp/fill-{i}", "wb") as fh:
            for _ in range(50):
                fh.write(b"x" * (1 << 20))
                written += 1
    with open("/dev/shm/fill", "wb") as fh:
        for _ in range(60):
            fh.write(b"y" * (1 << 20))
            written += 1
except OSError as exc:
    print("stopped:", exc.strerror)
print("written MiB:", written)
"""


async def run_battery(host: dict, config_overrides: dict | None = None) -> dict:
    """Every cell of the table in a fresh sandbox; `host` names what the host side prepared."""
    from cortbench.harness.sandbox import LocalSandbox, SandboxConfig

    results: dict = {}
    config = SandboxConfig(warm_kernels=0, max_processes=64, **(config_overrides or {}))
    async with LocalSandbox(config) as sandbox:
        results["layers"] = sandbox.layers

        async def cell(code: str) -> dict:
            async with sandbox.session() as kernel:
                result = await kernel.run(code)
            try:
                return json.loads(result.output.splitlines()[0])
            except (ValueError, IndexError):
                return {"unparsed": result.output[:500], "status": str(result.status)}

        results["sysctls"] = await cell(SYSCTL_CELL)
        results["reads"] = await cell(read_cell(host["secrets"]))
        results["sockets"] = await cell(socket_cell(host["socket"], host["abstract"]))
        results["fork"] = await cell(FORK_CELL)
        frames = {}
        for kind in FRAMES:
            async with sandbox.session() as kernel:
                await kernel.run("x = 41")
                hostile = await kernel.run(frame_cell(kind))
                after = await kernel.run("print(x + 1)")
                fresh = await kernel.run("print('fresh')")
            frames[kind] = {"status": str(hostile.status), "restarted": hostile.kernel_restarted,
                            "after": after.error_name or after.output, "fresh": fresh.output}  # fmt: skip
        results["frames"] = frames
    return results


def main() -> None:
    host = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run_battery(host))))


if __name__ == "__main__":
    main()
