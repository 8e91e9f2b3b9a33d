"""The HTTP sandbox server, RemoteSandbox and SandboxFusionSandbox, against a real server process."""

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

import httpx
import pytest

from cortbench.harness.sandbox import (
    STATE_LOST_TEXT,
    TIMEOUT_TEXT,
    ExecStatus,
    Sandbox,
    SandboxError,
    get_sandbox,
)
from cortbench.harness.sandbox.client import RemoteSandbox, SandboxFusionSandbox, replay_program

MAX_SESSIONS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(*args: str, health_headers: dict | None = None):
    port = _free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cortbench.harness.cli", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--warm-kernels", "2", "--timeout", "5", "--memory-mb", "1024", *args],
        stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"sandbox server exited with {proc.returncode}: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1, headers=health_headers).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail("sandbox server did not come up within 60 s")


def _stop_server(proc: subprocess.Popen, log) -> None:
    proc.terminate()  # SIGTERM: uvicorn runs the lifespan shutdown (sessions and zygote closed)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def server():
    proc, url, log = _start_server("--max-sessions", str(MAX_SESSIONS), "--max-concurrency", "2")
    yield url
    _stop_server(proc, log)
    assert proc.returncode is not None


@pytest.fixture(scope="module")
def short_ttl_server():
    proc, url, log = _start_server("--session-ttl", "0.5")
    yield url
    _stop_server(proc, log)


# ----------------------------------------------------------------------------- server endpoints


def test_health_fields(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok"
    assert isinstance(health["isolated"], bool)
    assert health["sessions"] == 0 and health["running"] == 0 and health["queued"] == 0
    assert "math" in health["preloaded"] and "sympy" in health["preloaded"]
    assert health["version"] == version("cortbench")
    assert health["max_sessions"] == MAX_SESSIONS and health["max_concurrency"] == 2


def test_run_code_has_sandboxfusion_shape(server):
    ok = httpx.post(f"{server}/run_code", json={"code": "print(6 * 7)", "language": "python"}).json()
    assert ok["status"] == "Success" and ok["message"] == "" and ok["compile_result"] is None
    assert ok["run_result"]["status"] == "Finished" and ok["run_result"]["return_code"] == 0
    assert ok["run_result"]["stdout"] == "42\n" and ok["run_result"]["stderr"] == ""
    assert isinstance(ok["run_result"]["execution_time"], float)
    assert ok["executor_pod_name"] == socket.gethostname() and ok["files"] == {}
    assert ok["cortbench"]["status"] == "ok" and ok["cortbench"]["output"] == "42"

    code = "import sys\nprint('before')\nprint('warn', file=sys.stderr)\n1 / 0"
    failed = httpx.post(f"{server}/run_code", json={"code": code, "language": "python3"}).json()
    assert failed["status"] == "Failed"
    run = failed["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 1 and run["stdout"] == "before\n"
    assert run["stderr"].startswith("warn\nTraceback (most recent call last):")
    assert run["stderr"].rstrip().endswith("ZeroDivisionError: division by zero")
    assert failed["cortbench"]["error_name"] == "ZeroDivisionError"

    slow = httpx.post(
        f"{server}/run_code", json={"code": "while True: pass", "language": "python", "run_timeout": 1}
    ).json()
    assert slow["status"] == "Failed" and slow["run_result"]["status"] == "TimeLimitExceeded"
    assert slow["run_result"]["return_code"] is None and slow["cortbench"]["output"] == TIMEOUT_TEXT

    cpp = httpx.post(f"{server}/run_code", json={"code": "int main(){}", "language": "cpp"}).json()
    assert (
        cpp["status"] == "SandboxError" and "only runs Python" in cpp["message"] and cpp["run_result"] is None
    )


def test_run_code_stdin_files_and_fetch(server):
    body = {
        "code": "data = open('in/a.txt').read()\nopen('out.txt', 'w').write(data * 2)\nprint(input())",
        "language": "python", "stdin": "hello\n", "files": {"in/a.txt": "YWJj"}, "fetch_files": ["out.txt", "nope"],
    }  # fmt: skip
    reply = httpx.post(f"{server}/run_code", json=body).json()
    assert reply["status"] == "Success" and reply["run_result"]["stdout"] == "hello\n"
    assert reply["files"] == {"out.txt": "YWJjYWJj"} and "nope" in reply["message"]


def test_oversized_requests_get_413(server):
    big = "#" * ((1 << 20) + 1)
    assert httpx.post(f"{server}/run_code", json={"code": big, "language": "python"}).status_code == 413
    sid = httpx.post(f"{server}/sessions").json()["session_id"]
    try:
        assert httpx.post(f"{server}/sessions/{sid}/run", json={"code": big}).status_code == 413
    finally:
        httpx.delete(f"{server}/sessions/{sid}")
    huge = b'{"code": "' + b"a" * (17 << 20) + b'"}'
    assert (
        httpx.post(
            f"{server}/run_code", content=huge, headers={"content-type": "application/json"}
        ).status_code
        == 413
    )


def test_unknown_session_is_404(server):
    assert httpx.post(f"{server}/sessions/nope/run", json={"code": "1"}).status_code == 404
    assert httpx.delete(f"{server}/sessions/nope").status_code == 404


def test_session_cap_answers_429(server):
    created = []
    try:
        for _ in range(MAX_SESSIONS):
            response = httpx.post(f"{server}/sessions")
            assert response.status_code == 200
            created.append(response.json()["session_id"])
        full = httpx.post(f"{server}/sessions")
        assert full.status_code == 429 and "too many sessions" in full.json()["detail"]
        assert httpx.get(f"{server}/health").json()["sessions"] == MAX_SESSIONS
    finally:
        for sid in created:
            httpx.delete(f"{server}/sessions/{sid}")
    assert httpx.get(f"{server}/health").json()["sessions"] == 0
    sid = httpx.post(f"{server}/sessions").json()["session_id"]
    assert httpx.delete(f"{server}/sessions/{sid}").status_code == 200


async def test_cells_queue_beyond_max_concurrency(server):
    async with RemoteSandbox(server) as sb:
        start = time.monotonic()
        cells = [asyncio.create_task(sb.run_code("import time\ntime.sleep(0.6)")) for _ in range(3)]
        await asyncio.sleep(0.3)
        health = await sb.health()
        results = await asyncio.gather(*cells)
    assert health["running"] == 2 and health["queued"] == 1
    assert all(r.status == ExecStatus.OK for r in results)
    assert time.monotonic() - start >= 1.2


# ----------------------------------------------------------------------------- RemoteSandbox


async def test_remote_session_is_stateful(server):
    async with get_sandbox("remote", url=server) as sb:
        assert isinstance(sb, RemoteSandbox) and isinstance(sb, Sandbox)
        assert sb.isolated == httpx.get(f"{server}/health").json()["isolated"]
        async with sb.session() as k, sb.session() as other:
            assert (await k.run("x = 1")).output == ""
            result = await k.run("print(x + 1)")
            leaked = await other.run("print(x)")
            assert httpx.get(f"{server}/health").json()["sessions"] == 2
    assert result.status == ExecStatus.OK and result.output == "2"
    assert leaked.status == ExecStatus.ERROR and leaked.error_name == "NameError"
    assert httpx.get(f"{server}/health").json()["sessions"] == 0  # deleted at session exit


async def test_remote_errors_timeouts_and_echo(server):
    async with RemoteSandbox(server) as sb, sb.session() as k:
        await k.run("y = 5")
        error = await k.run("print('lost')\n1 / 0")
        timeout = await k.run("while True: pass", timeout=1)
        echoed = await k.run("y * 2", echo=True)
        big = await k.run("#" * ((1 << 20) + 1))
    assert error.status == ExecStatus.ERROR and error.error_name == "ZeroDivisionError"
    assert error.output.startswith("Traceback (most recent call last):") and "lost" not in error.output
    assert timeout.status == ExecStatus.TIMEOUT and timeout.output == TIMEOUT_TEXT
    assert echoed.output == "10"  # state survived the timeout
    assert big.status == ExecStatus.ERROR and big.error_name == "CodeTooLarge" and "too large" in big.output


async def test_remote_run_code_is_stateless(server):
    async with RemoteSandbox(server) as sb:
        first = await sb.run_code("z = 3\nprint(z * 14)")
        second = await sb.run_code("print(z)")
    assert first.status == ExecStatus.OK and first.output == "42"
    assert second.status == ExecStatus.ERROR and second.error_name == "NameError"


async def test_remote_session_over_the_cap_raises(server):
    async with RemoteSandbox(server, retries=2, backoff_s=0.01) as sb:
        sessions = [sb.session() for _ in range(MAX_SESSIONS + 1)]
        kernels = [await s.__aenter__() for s in sessions]
        try:
            for kernel in kernels[:MAX_SESSIONS]:
                await kernel.run("pass")
            with pytest.raises(SandboxError, match="429"):
                await kernels[-1].run("pass")
        finally:
            for s in sessions:
                await s.__aexit__(None, None, None)
    assert httpx.get(f"{server}/health").json()["sessions"] == 0


async def test_remote_start_against_closed_port_fails_fast():
    url = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(SandboxError, match="cannot reach the sandbox server at " + url):
        await RemoteSandbox(url).start()
    assert time.monotonic() - start < 5


async def test_expired_session_is_404_and_the_client_recovers(short_ttl_server):
    url = short_ttl_server
    sid = httpx.post(f"{url}/sessions").json()["session_id"]
    async with RemoteSandbox(url) as sb, sb.session() as k:
        await k.run("x = 1")
        await asyncio.sleep(1.2)
        assert httpx.get(f"{url}/health").json()["sessions"] == 0  # reaped while idle
        assert httpx.post(f"{url}/sessions/{sid}/run", json={"code": "1"}).status_code == 404
        lost = await k.run("print(x)")
        fresh = await k.run("x = 2\nprint(x)")
        kept = await k.run("print(x + 1)")
    assert lost.kernel_restarted and lost.status == ExecStatus.ERROR and lost.error_name == "NameError"
    assert lost.output.endswith(STATE_LOST_TEXT) and k.restarts == 1
    assert fresh.output == "2" and not fresh.kernel_restarted and kept.output == "3"


# ----------------------------------------------------------------------------- SandboxFusionSandbox


async def test_sandboxfusion_sandbox_maps_responses(server):
    async with get_sandbox("sandboxfusion", url=f"{server}/run_code") as sb:
        assert isinstance(sb, SandboxFusionSandbox) and isinstance(sb, Sandbox)
        ok = await sb.run_code("print('  hi  ')\nprint(2 ** 10)")
        error = await sb.run_code("import sys\nprint('out')\nprint('noise', file=sys.stderr)\n[][1]")
        timeout = await sb.run_code("while True: pass", timeout=1)
        long = await sb.run_code("print('a' * 500 + 'b' * 500)")
    assert ok.status == ExecStatus.OK and ok.output == "hi  \n1024"
    assert error.status == ExecStatus.ERROR and error.error_name == "IndexError"
    assert error.output.startswith("Traceback (most recent call last):") and "noise" not in error.output
    assert error.output.endswith("IndexError: list index out of range") and error.stdout == "out\n"
    assert timeout.status == ExecStatus.TIMEOUT and timeout.output == TIMEOUT_TEXT
    assert long.status == ExecStatus.OUTPUT_TRUNCATED and long.output == "a" * 400 + "..." + "b" * 400


async def test_sandboxfusion_replay_session(server):
    async with SandboxFusionSandbox(server) as sb, sb.session() as k:
        first = await k.run("x = 1\nprint('first')")
        second = await k.run("print(x + 1)")
        failed = await k.run("y = 10\n\n1 / 0")  # not replayed: y stays undefined
        after = await k.run("print(x + 2)\nprint(y)")
    assert first.output == "first"
    assert second.status == ExecStatus.OK and second.output == "2"  # 'first' is not printed again
    assert failed.status == ExecStatus.ERROR
    assert '", line 3, in <module>' in failed.output  # line numbers of the cell itself, not the program
    assert after.status == ExecStatus.ERROR and after.error_name == "NameError" and after.stdout == "3\n"
    assert '", line 2, in <module>' in after.output
    assert [cell for cell, _ in k.cells] == ["x = 1\nprint('first')", "print(x + 1)"]


async def test_sandboxfusion_replay_failure_restarts(server):
    deadline = time.time() + 1.0
    async with SandboxFusionSandbox(server) as sb, sb.session() as k:
        first = await k.run(f"import time\nassert time.time() < {deadline}\nprint('ran')")
        await asyncio.sleep(max(0.0, deadline - time.time()) + 0.1)
        second = await k.run("print(time.time() > 0)")
    assert first.output == "ran"
    assert second.kernel_restarted and second.output.endswith(STATE_LOST_TEXT)
    assert second.error_name == "NameError" and k.restarts == 1 and k.cells == []


def test_replay_program_without_history_is_the_code():
    assert replay_program([], "print(1)") == "print(1)"
    assert replay_program(["a = 1"], "print(a)").endswith("\nprint(a)")
    assert replay_program(["a = 1"], "print(a)").count("\n") == 1


async def test_sandboxfusion_unreachable_fails(server):
    with pytest.raises(SandboxError, match="does not work"):
        await SandboxFusionSandbox(f"http://127.0.0.1:{_free_port()}", retries=1).start()


# ----------------------------------------------------------------------------- hardening (issue 12)


@pytest.fixture(scope="module")
def tight_server():
    """Two kernels at most, one cell at a time, a 1 s wait for a kernel, two sessions per client,
    cells of at most 2 s, and a bearer token."""
    proc, url, log = _start_server("--max-kernels", "2", "--max-concurrency", "1", "--kernel-wait", "1",
                                   "--max-sessions-per-client", "3", "--max-timeout", "2", "--token", "s3cret",
                                   health_headers=AUTH)  # fmt: skip
    yield url
    _stop_server(proc, log)


AUTH = {"Authorization": "Bearer s3cret"}


def test_a_token_is_required_when_set(tight_server):
    assert httpx.get(f"{tight_server}/health").status_code == 401
    assert httpx.get(f"{tight_server}/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(f"{tight_server}/run_code", json={"code": "print(1)"}).status_code == 401
    assert httpx.get(f"{tight_server}/health", headers=AUTH).status_code == 200


async def test_the_remote_client_sends_the_token(tight_server, monkeypatch):
    monkeypatch.setenv("CORTBENCH_SANDBOX_TOKEN", "s3cret")
    async with RemoteSandbox(tight_server) as sb:
        assert (await sb.run_code("print(6 * 7)")).output == "42"
    monkeypatch.delenv("CORTBENCH_SANDBOX_TOKEN")
    with pytest.raises(SandboxError, match="401"):
        async with RemoteSandbox(tight_server):
            pass


def test_idle_sessions_cannot_wedge_the_server(tight_server):
    """Two idle sessions hold both kernels: a third session's cell answers 503 (not run) within
    the kernel wait, while the idle sessions' own cells still run."""
    sids = [httpx.post(f"{tight_server}/sessions", headers=AUTH).json()["session_id"] for _ in range(3)]
    try:
        for sid in sids[:2]:
            assert (
                httpx.post(
                    f"{tight_server}/sessions/{sid}/run", json={"code": "x = 1"}, headers=AUTH
                ).status_code
                == 200
            )
        start = time.monotonic()
        blocked = httpx.post(
            f"{tight_server}/sessions/{sids[2]}/run", json={"code": "print(1)"}, headers=AUTH, timeout=10
        )
        assert blocked.status_code == 503 and blocked.headers["X-Cortbench-Not-Run"] == "1"
        assert blocked.headers["Retry-After"] == "1" and time.monotonic() - start < 5
        again = httpx.post(
            f"{tight_server}/sessions/{sids[0]}/run", json={"code": "print(x + 1)"}, headers=AUTH, timeout=10
        )
        assert again.status_code == 200 and again.json()["output"] == "2"
    finally:
        for sid in sids:
            httpx.delete(f"{tight_server}/sessions/{sid}", headers=AUTH)


def test_sessions_per_client_are_capped(tight_server):
    sids = []
    try:
        for _ in range(3):
            response = httpx.post(f"{tight_server}/sessions", headers=AUTH)
            assert response.status_code == 200
            sids.append(response.json()["session_id"])
        over = httpx.post(f"{tight_server}/sessions", headers=AUTH)
        assert over.status_code == 429 and "per client" in over.json()["detail"]
    finally:
        for sid in sids:
            httpx.delete(f"{tight_server}/sessions/{sid}", headers=AUTH)


def test_timeouts_are_capped_and_numbers_must_be_finite(tight_server):
    long = httpx.post(f"{tight_server}/run_code", headers=AUTH, timeout=20,
                      json={"code": "import time\ntime.sleep(10)", "run_timeout": 3600}).json()  # fmt: skip
    assert long["run_result"]["status"] == "TimeLimitExceeded" and long["run_result"]["execution_time"] < 5
    sid = httpx.post(f"{tight_server}/sessions", headers=AUTH).json()["session_id"]
    try:
        over = httpx.post(
            f"{tight_server}/sessions/{sid}/run", json={"code": "1", "timeout": 3}, headers=AUTH
        )
        assert over.status_code == 422 and "limit of 2" in over.json()["detail"]
        for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            raw = b'{"code": "1", "timeout": ' + literal + b"}"
            bad = httpx.post(f"{tight_server}/sessions/{sid}/run", content=raw,
                             headers={**AUTH, "content-type": "application/json"})  # fmt: skip
            assert bad.status_code == 422, literal
        raw = b'{"code": "1", "run_timeout": NaN}'
        assert httpx.post(f"{tight_server}/run_code", content=raw,
                          headers={**AUTH, "content-type": "application/json"}).status_code == 422  # fmt: skip
    finally:
        httpx.delete(f"{tight_server}/sessions/{sid}", headers=AUTH)


def test_files_per_request_are_capped(tight_server):
    many = httpx.post(f"{tight_server}/run_code", headers=AUTH,
                      json={"code": "1", "fetch_files": [f"f{i}" for i in range(17)]})  # fmt: skip
    assert many.status_code == 413 and "fetch_files" in many.json()["detail"]


async def test_fetch_stops_at_its_byte_budget(sandbox):
    from cortbench.harness.sandbox.server import _fetch_file

    async with sandbox.session() as kernel:
        await kernel.run("open('big.bin', 'wb').write(b'z' * 100_000)")
        assert await _fetch_file(kernel, "big.bin", sandbox.config.record_chars, 200_000) == b"z" * 100_000
        assert await _fetch_file(kernel, "big.bin", sandbox.config.record_chars, 50_000) is None


def test_a_cell_whose_client_goes_away_is_stopped(tight_server):
    """The client sends a 4-second cell and hangs up after 0.5 s: the cell stops well before its
    4 s, and the session's next cell runs in a fresh kernel and says the earlier one was cut."""
    sid = httpx.post(f"{tight_server}/sessions", headers=AUTH).json()["session_id"]
    try:
        assert (
            httpx.post(f"{tight_server}/sessions/{sid}/run", json={"code": "x = 1"}, headers=AUTH).status_code
            == 200
        )
        host, port = tight_server.removeprefix("http://").split(":")
        body = b'{"code": "import time\\ntime.sleep(4)"}'
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"POST /sessions/" + sid.encode() + b"/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
            time.sleep(0.5)
            assert httpx.get(f"{tight_server}/health", headers=AUTH).json()["running"] == 1
        hung_up = time.monotonic()
        while (
            httpx.get(f"{tight_server}/health", headers=AUTH).json()["running"]
            and time.monotonic() - hung_up < 10
        ):
            time.sleep(0.05)
        stopped_after = time.monotonic() - hung_up
        after = httpx.post(
            f"{tight_server}/sessions/{sid}/run", headers=AUTH, json={"code": "print(x)"}
        ).json()
    finally:
        httpx.delete(f"{tight_server}/sessions/{sid}", headers=AUTH)
    assert stopped_after < 2.5  # the cell had 3.5 s left
    assert after["error_name"] == "NameError" and "interrupted before it finished" in after["output"]


def test_a_hostile_frame_is_a_result_not_a_server_error(server):
    from test_runner import HOSTILE_FRAME

    sid = httpx.post(f"{server}/sessions").json()["session_id"]
    try:
        reply = httpx.post(f"{server}/sessions/{sid}/run", json={"code": HOSTILE_FRAME}, timeout=30)
        assert (
            reply.status_code == 200
            and reply.json()["status"] == "killed"
            and reply.json()["kernel_restarted"]
        )
        fresh = httpx.post(f"{server}/sessions/{sid}/run", json={"code": "print('fresh')"}).json()
        assert fresh["output"] == "fresh"
    finally:
        httpx.delete(f"{server}/sessions/{sid}")
    stateless = httpx.post(f"{server}/run_code", json={"code": HOSTILE_FRAME}, timeout=30)
    assert stateless.status_code == 200 and stateless.json()["cortbench"]["status"] == "killed"


@pytest.mark.parametrize("extra, starts", [([], False), (["--insecure"], True), (["--token", "t"], True)])
def test_a_public_address_needs_a_token(extra, starts):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cortbench.harness.cli", "sandbox", "serve", "--host", "0.0.0.0",
                             "--port", str(port), "--warm-kernels", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        if not starts:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 1 and "refusing to serve on 0.0.0.0 without a token" in err
            assert len(err.strip().splitlines()) == 1  # one line, no traceback
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code in (200, 401):
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
