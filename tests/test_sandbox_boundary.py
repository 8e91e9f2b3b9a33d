"""The sandbox as a security boundary: issue 12's table, each row as root (CI runs as root) and as
an unprivileged user (uid 65534), plus each layer on its own (host ids, root filesystem, cgroups,
seccomp, Landlock). The cells live in sandbox_battery.py; a sysctl is only opened, never written.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import NOBODY, run_unprivileged
from sandbox_battery import FRAMES, MEMORY_CELL, run_battery

from cortbench.harness.sandbox import ExecStatus, LocalSandbox, SandboxConfig, SandboxError

ROOT = os.geteuid() == 0
UID_BASE = SandboxConfig().uid_base
CHECKOUT = Path(__file__).resolve().parents[1]
BATTERY = Path(__file__).with_name("sandbox_battery.py")
needs_root = pytest.mark.skipif(not ROOT, reason="runs as root (as CI does)")


@pytest.fixture(scope="module")
def host():
    """What a hostile cell would go for on the host: files of root's and files anyone may read,
    a socket file anyone may connect to, an abstract socket, and the harness's own HOME."""
    base = Path(tempfile.mkdtemp(prefix="cortbench-host-"))
    base.chmod(0o755)
    secret, public = base / "root-only", base / "world-readable"
    secret.write_text("host secret")
    secret.chmod(0o600)
    public.write_text("host file")
    public.chmod(0o644)
    home = Path.home()
    hf_token = home / ".cache" / "huggingface" / "token"
    made_token = not hf_token.exists()
    if made_token:
        hf_token.parent.mkdir(parents=True, exist_ok=True)
        hf_token.write_text("hf_not_a_real_token")
        hf_token.chmod(0o600)
    sock_dir = base / "sock"
    sock_dir.mkdir()
    sock_dir.chmod(0o777)
    path = str(sock_dir / "host.sock")
    abstract = f"cortbench-host-{os.getpid()}"
    hits: list[bytes] = []
    servers = []
    for address in (path, "\0" + abstract):
        server = socket.socket(socket.AF_UNIX)
        server.bind(address)
        server.listen()
        server.settimeout(0.2)
        servers.append(server)
    os.chmod(path, 0o777)  # any uid passes the permission check: only the boundary keeps it out
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            for server in servers:
                try:
                    conn, _ = server.accept()
                    hits.append(conn.recv(100))
                    conn.close()
                except OSError:
                    pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    secrets = [str(secret), str(public), str(hf_token), str(home / ".ssh"), str(CHECKOUT / "README.md"),
               str(CHECKOUT), str(home), "/etc/shadow", "/etc/pip.conf", "/var", "/run", "/tmp"]  # fmt: skip
    yield {"secrets": secrets, "socket": path, "abstract": abstract, "hits": hits, "base": base}
    stop.set()
    thread.join()
    for server in servers:
        server.close()
    if made_token:
        hf_token.unlink()
    for child in sorted(base.rglob("*"), reverse=True):
        child.unlink() if not child.is_dir() else child.rmdir()
    base.rmdir()


@pytest.fixture(scope="module")
def batteries(host):
    """The whole battery once per user (about 15 s each)."""
    wanted = {k: v for k, v in host.items() if k in ("secrets", "socket", "abstract")}
    results = {"root": asyncio.run(run_battery(wanted))} if ROOT else {}
    proc = run_unprivileged([sys.executable, str(BATTERY), json.dumps(wanted)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results["nobody"] = json.loads(proc.stdout.splitlines()[-1])
    results["nobody_stderr"] = proc.stderr
    return results


USERS = [pytest.param("root", marks=needs_root), "nobody"]


@pytest.mark.parametrize("user", USERS)
def test_host_sysctls_cannot_be_opened_for_writing(batteries, user):
    opened = [path for path, what in batteries[user]["sysctls"].items() if what == "OPENED"]
    assert opened == []


def _leads_to_python(path: str) -> bool:
    """`path` is the Python installation (a venv's prefix) or a folder on the way to it."""
    return any(p == path or p.startswith(path + "/") for p in (sys.prefix, sys.base_prefix))


@pytest.mark.parametrize("user", USERS)
def test_host_files_home_and_checkout_are_out_of_reach(batteries, host, user):
    reads = batteries[user]["reads"]
    for path in host["secrets"]:
        own = {".cortbench-stderr", ".cortbench-stdout"} if path == "/tmp" else set()  # its own tmpfs
        if own or _leads_to_python(path):  # a folder on the way to the Python installation: only that way
            names = set(reads[path].removeprefix("LISTED ").split(","))
            assert reads[path].startswith("LISTED ") and own <= names, reads[path]
            assert all(_leads_to_python(f"{path}/{n}") for n in names - own), reads[path]
        else:
            assert reads[path] == "No such file or directory", path


@pytest.mark.parametrize("user", USERS)
def test_host_sockets_are_unreachable(batteries, host, user):
    assert batteries[user]["sockets"] == {
        "file": "No such file or directory",
        "abstract": "Connection refused",
    }
    assert host["hits"] == []


@pytest.mark.parametrize("user", USERS)
def test_the_process_cap_holds_and_pid_max_stays(batteries, user):
    fork = batteries[user]["fork"]
    assert fork["started"] < 64 and fork["error"] == "Resource temporarily unavailable"
    assert fork["pid_max"] != "OPENED"


@pytest.mark.parametrize("kind", sorted(FRAMES))
@pytest.mark.parametrize("user", USERS)
def test_a_hostile_frame_costs_only_its_own_kernel(batteries, user, kind):
    frame = batteries[user]["frames"][kind]
    assert frame == {"status": "killed", "restarted": True, "after": "NameError", "fresh": "fresh"}


@needs_root
def test_layers_as_root(batteries):
    layers = batteries["root"]["layers"]
    assert {name: layer["on"] for name, layer in layers.items()} == dict.fromkeys(
        ("namespaces", "uid", "rootfs", "cgroup", "seccomp", "landlock"), True
    )
    assert f"host uid {UID_BASE}" in layers["uid"]["detail"]


def test_layers_as_an_unprivileged_user(batteries):
    layers = batteries["nobody"]["layers"]
    assert {name: layer["on"] for name, layer in layers.items()} == {
        "namespaces": True, "uid": True, "rootfs": True, "cgroup": False, "seccomp": True, "landlock": True,
    }  # fmt: skip
    assert f"own uid {NOBODY}" in layers["uid"]["detail"]
    assert layers["cgroup"]["detail"]  # says why
    assert batteries["nobody_stderr"].count("WARNING: sandbox layers off: cgroup") == 1


# ----------------------------------------------------------------------------- layer by layer


def _status_field(pid: int, name: str) -> list[str]:
    with open(f"/proc/{pid}/status") as fh:
        return next(line.split()[1:] for line in fh if line.startswith(name + ":"))


@needs_root
async def test_kernels_run_under_their_own_unprivileged_host_ids(sandbox):
    async with sandbox.session() as a, sandbox.session() as b:
        ids = [await k.run("import os\nprint(os.getuid(), os.getgid(), open('/proc/self/uid_map').read().split())")
               for k in (a, b)]  # fmt: skip
        pids = [k._proc.pid for k in (a, b)]
        host_uids = [int(_status_field(pid, "Uid")[0]) for pid in pids]
        host_gids = [int(_status_field(pid, "Gid")[0]) for pid in pids]
    assert [r.output.split()[:2] for r in ids] == [["0", "0"]] * 2  # root inside...
    assert all(uid >= UID_BASE for uid in host_uids) and len(set(host_uids)) == 2  # ...nobody's outside
    assert host_gids == host_uids


@needs_root
async def test_each_kernel_has_a_cgroup_with_its_limits(sandbox):
    async with sandbox.session() as k:
        await k.run("pass")
        with open(f"/proc/{k._proc.pid}/cgroup") as fh:
            paths = dict(line.strip().split(":", 2)[1:] for line in fh)
    config = sandbox.config
    memory = Path("/sys/fs/cgroup/memory") / paths["memory"].lstrip("/")
    pids = Path("/sys/fs/cgroup/pids") / paths["pids"].lstrip("/")
    assert memory.name.startswith("k") and memory.parent.name.startswith("cortbench-")
    limit = int((memory / "memory.limit_in_bytes").read_text())
    assert limit == (config.memory_mb + config.scratch_mb + config.shm_mb + 64) << 20
    assert int((pids / "pids.max").read_text()) == config.max_processes + 1
    assert int((memory.parent / "memory.limit_in_bytes").read_text()) < os.sysconf(
        "SC_PHYS_PAGES"
    ) * os.sysconf("SC_PAGE_SIZE")


def _shmem_mb() -> float:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Shmem:")) / 1024


@needs_root
async def test_memory_of_all_kernels_together_is_bounded():
    """Four kernels each fill their /tmp and /dev/shm (310 MiB, which RLIMIT_AS does not see); the
    sandbox's cgroup allows 500 MiB for all: the host's shared memory never grows past that."""
    bound = 500
    config = SandboxConfig(warm_kernels=0, memory_mb=512, scratch_mb=256, shm_mb=64, sandbox_memory_mb=bound)
    before, peak = _shmem_mb(), [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _shmem_mb() - before)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        async with LocalSandbox(config) as sb:
            results = await asyncio.gather(*(sb.run_code(MEMORY_CELL, timeout=60) for _ in range(4)))
            after = await sb.run_code("print('still works')")
    finally:
        done.set()
        sampler.join()
    killed = [r for r in results if r.status == ExecStatus.MEMORY]
    assert killed, [r.output for r in results]
    assert all("exceeding its memory limit" in r.output and r.kernel_restarted for r in killed)
    assert peak[0] < bound + 64, peak  # pages of other processes may come and go meanwhile
    assert after.output == "still works"


SECCOMP_CELL = """
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(number, *args):
    ret = libc.syscall(number, *args)
    return errno.errorcode.get(ctypes.get_errno(), "?") if ret == -1 else f"OK {ret}"
out = {
    "ptrace": call(101, 0, 0, 0, 0),  # PTRACE_TRACEME
    "bpf": call(321, 0, 0, 0),
    "perf_event_open": call(298, 0, 0, -1, -1, 0),
    "keyctl": call(250, 0, 0),
    "add_key": call(248, b"user", b"k", b"v", 1, -4),
    "userfaultfd": call(323, 0),
    "unshare": call(272, 0x10000000),
    "setns": call(308, -1, 0),
    "mount": call(165, b"none", b"/tmp", b"tmpfs", 0, None),
    "umount2": call(166, b"/proc", 2),
    "pivot_root": call(155, b"/tmp", b"/tmp"),
    "clone3": call(435, 0, 0),
    "clone_newuser": call(56, 0x10000000 | 17, 0, 0, 0, 0),
    "kexec_load": call(246, 0, 0, 0, 0),
    "init_module": call(175, 0, 0, 0),
    "io_uring_setup": call(425, 1, 0),
}
for name, family in (("netlink", socket.AF_NETLINK), ("packet", socket.AF_PACKET), ("vsock", 40), ("alg", 38)):
    try:
        socket.socket(family, socket.SOCK_RAW if family != 40 else socket.SOCK_STREAM).close()
        out[name] = "OK"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, "?")
s = socket.socket(); s.close(); out["inet"] = "OK"
import threading; t = threading.Thread(target=lambda: None); t.start(); t.join(); out["thread"] = "OK"
import subprocess; out["subprocess"] = subprocess.run(["true"]).returncode
print(json.dumps(out))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the cell calls x86_64 syscall numbers")
async def test_the_syscall_filter_refuses_what_no_cell_needs(sandbox):
    result = await sandbox.run_code(SECCOMP_CELL)
    out = json.loads(result.output)
    assert {k: v for k, v in out.items() if k not in ("clone3", "inet", "thread", "subprocess")} == {
        "ptrace": "EPERM", "bpf": "EPERM", "perf_event_open": "EPERM", "keyctl": "EPERM", "add_key": "EPERM",
        "userfaultfd": "EPERM", "unshare": "EPERM", "setns": "EPERM", "mount": "EPERM", "umount2": "EPERM",
        "pivot_root": "EPERM", "clone_newuser": "EPERM", "kexec_load": "EPERM", "init_module": "EPERM",
        "io_uring_setup": "EPERM", "netlink": "EAFNOSUPPORT", "packet": "EAFNOSUPPORT", "vsock": "EAFNOSUPPORT",
        "alg": "EAFNOSUPPORT",
    }  # fmt: skip
    assert out["clone3"] == "ENOSYS"  # glibc then falls back to clone, whose flags the filter reads
    assert (out["inet"], out["thread"], out["subprocess"]) == ("OK", "OK", 0)


ROOTFS_CELL = """
import json, os, stat
sockets = []
for top in [d for d in os.listdir("/") if d != "proc"]:
    for folder, dirs, files in os.walk("/" + top):
        for name in files:
            try:
                if stat.S_ISSOCK(os.lstat(os.path.join(folder, name)).st_mode):
                    sockets.append(os.path.join(folder, name))
            except OSError:
                pass
import matplotlib, pandas  # installed, not pre-loaded
print(json.dumps({"top": sorted(os.listdir("/")), "os_release": open("/etc/os-release").read().split("\\n")[0],
                  "passwd": open("/etc/passwd").read().split("\\n")[0], "home": os.environ["HOME"],
                  "cwd": os.getcwd(), "sockets": sockets, "dev": sorted(os.listdir("/dev"))}))
"""


async def test_the_root_filesystem_holds_only_what_python_needs(sandbox):
    result = await sandbox.run_code(ROOTFS_CELL, timeout=60)
    out = json.loads(result.output)
    allowed = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp", "opt"}
    allowed |= {Path(p).parts[1] for p in (sys.prefix, sys.base_prefix)}
    assert set(out["top"]) <= allowed, out["top"]
    assert out["os_release"].startswith(("PRETTY_NAME=", "NAME="))
    assert out["passwd"].startswith("root:x:0:0:") and out["home"] == out["cwd"] == "/tmp"
    assert out["sockets"] == []
    assert out["dev"] == [
        "fd",
        "full",
        "null",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "urandom",
        "zero",
    ]


@needs_root
async def test_without_namespaces_landlock_still_fences_writes_and_reads(host):
    async with LocalSandbox(SandboxConfig(isolation="none", warm_kernels=0)) as sb:
        assert sb.layers["landlock"]["on"]
        outside = host["base"] / "written-by-a-cell"
        result = await sb.run_code(
            f"import json\nout = {{}}\nfor path, mode in (({str(outside)!r}, 'w'), ({host['secrets'][1]!r}, 'r'), "
            f"('/etc/passwd', 'r')):\n    try:\n        open(path, mode).close(); out[path] = 'OK'\n"
            f"    except OSError as exc:\n        out[path] = exc.strerror\nprint(json.dumps(out))"
        )
    out = json.loads(result.output)
    assert out == {
        str(outside): "Permission denied",
        host["secrets"][1]: "Permission denied",
        "/etc/passwd": "OK",
    }
    assert not outside.exists()


@needs_root
async def test_kernel_ids_that_belong_to_someone_are_refused():
    with pytest.raises(SandboxError, match="belongs to 'nobody'"):
        async with LocalSandbox(SandboxConfig(uid_base=NOBODY - 10, warm_kernels=0)):
            pass


START = """
import asyncio
from cortbench.harness.sandbox import LocalSandbox, SandboxConfig, SandboxError
async def main():
    try:
        async with LocalSandbox(SandboxConfig(warm_kernels=0)) as sb:
            print("started", sb.isolated)
    except SandboxError as exc:
        print("refused:", exc)
asyncio.run(main())
"""


@needs_root
def test_uid_0_that_is_host_root_in_a_user_namespace_is_refused():
    """`unshare --map-root-user` run by root maps 0 to host 0 and nothing else: a kernel there
    would be host root for every file it touches, so the sandbox refuses to start."""
    proc = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", START],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "refused: the sandbox cannot start" in proc.stdout and "host root" in proc.stdout, (
        proc.stdout + proc.stderr
    )


def test_sandbox_check_reports_every_layer():
    proc = subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "sandbox", "check"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if len(line.split()) > 1}
    expected = {"namespaces": "on", "uid": "on", "rootfs": "on", "seccomp": "on", "landlock": "on"}
    expected["cgroup"] = "on" if ROOT else "off"
    assert {k: rows.get(k) for k in expected} == expected
    assert "smoke cell: ok" in proc.stdout


UNDER_TMP = """
import asyncio, sys
from cortbench.harness.sandbox import LocalSandbox, SandboxConfig
async def main():
    async with LocalSandbox(SandboxConfig(warm_kernels=0)) as sb:
        result = await sb.run_code("import cortbench_tmp_probe, os\\nprint(cortbench_tmp_probe.VALUE, os.getcwd(), sorted(os.listdir('/tmp')))")
        print(sb.isolated, result.output)
asyncio.run(main())
"""


def test_a_python_installed_under_tmp_stays_importable(tmp_path_factory):
    """A venv under /tmp (CI clones live there) is bound again above each kernel's own /tmp."""
    import venv

    where = Path(tempfile.mkdtemp(prefix="cortbench-venv-", dir="/tmp"))
    try:
        venv.EnvBuilder(symlinks=True, with_pip=False).create(where)
        site = next(where.glob("lib/python3*/site-packages"))
        (site / "cortbench_tmp_probe.py").write_text("VALUE = 42\n")
        ours = next(
            p
            for p in sys.path
            if p.endswith("site-packages") and Path(p).is_dir() and p.startswith(sys.prefix)
        )
        (site / "cortbench-parent.pth").write_text(f"import site; site.addsitedir({ours!r})\n")  # cortbench
        where.chmod(0o755)
        proc = subprocess.run([str(where / "bin" / "python"), "-c", UNDER_TMP], capture_output=True, text=True,
                              timeout=180, cwd="/")  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", str(where)], check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    isolated, output = proc.stdout.strip().split(" ", 1)
    assert isolated == "True"
    value, cwd, listing = output.split(" ", 2)
    assert (value, cwd) == ("42", "/tmp")
    assert where.name in listing  # the venv's path, re-bound read-only above the kernel's own /tmp
