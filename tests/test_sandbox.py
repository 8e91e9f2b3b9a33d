"""The interpreter's semantics: state, protocol text, truncation, timeouts, restarts, concurrency."""

import asyncio

import pytest

from cortbench.harness.sandbox import (
    STATE_LOST_TEXT,
    TIMEOUT_TEXT,
    ExecStatus,
    LocalSandbox,
    SandboxConfig,
    truncate_middle,
)


async def test_state_persists_across_cells(sandbox):
    async with sandbox.session() as k:
        await k.run("import sympy as sp\nx = sp.Symbol('x')\ndef f(n):\n    return n * n")
        result = await k.run("print(sp.factor(x**2 - 1), f(7))")
    assert result.status == ExecStatus.OK
    assert result.output == "(x - 1)*(x + 1) 49"


async def test_sessions_do_not_share_state(sandbox):
    async with sandbox.session() as a, sandbox.session() as b:
        await a.run("secret = 42")
        result = await b.run("print(secret)")
    assert result.status == ExecStatus.ERROR
    assert result.error_name == "NameError"


async def test_last_expression_not_echoed_unless_asked(sandbox):
    async with sandbox.session() as k:
        silent = await k.run("1 + 1")
        echoed = await k.run("2 + 3", echo=True)
    assert silent.output == ""
    assert echoed.output == "5"


async def test_error_text_is_compact_traceback_relative_to_cell(sandbox):
    async with sandbox.session() as k:
        await k.run("def g(v):\n    return 1 / v")
        result = await k.run("print('before')\na = 3\ng(0)")
    assert result.status == ExecStatus.ERROR
    assert result.error_name == "ZeroDivisionError"
    assert result.output.startswith("Traceback (most recent call last):")
    assert 'File "<cell-2>", line 3, in <module>' in result.output
    assert 'File "<cell-1>", line 2, in g' in result.output
    assert result.output.endswith("ZeroDivisionError: division by zero")
    assert "cortbench" not in result.output and "_kernel" not in result.output  # no harness frames
    assert "before" not in result.output  # CoRT: the traceback replaces stdout...
    assert result.stdout == "before\n"  # ...but the record keeps it


async def test_syntax_error(sandbox):
    result = await sandbox.run_code("x = (1,\nprint(x)")
    assert result.status == ExecStatus.ERROR
    assert result.error_name == "SyntaxError"
    assert "<cell-1>" in result.output


async def test_output_is_stripped_and_truncated_like_cort(sandbox):
    result = await sandbox.run_code("print('\\n' + 'a' * 500 + 'b' * 500 + '\\n\\n')")
    assert result.status == ExecStatus.OUTPUT_TRUNCATED
    assert result.truncated
    assert result.output == "a" * 400 + "..." + "b" * 400
    assert result.stdout_chars == 1004


def test_truncate_middle_configurable():
    assert truncate_middle("abcdef", 2, 2) == ("ab...ef", True)
    assert truncate_middle("abcd", 2, 2) == ("abcd", False)


async def test_truncation_sizes_configurable():
    async with LocalSandbox(SandboxConfig(output_head=5, output_tail=0, warm_kernels=0)) as sb:
        result = await sb.run_code("print('0123456789')")
    assert result.output == "01234..."


async def test_soft_timeout_keeps_state(sandbox):
    async with sandbox.session() as k:
        await k.run("keep = 'me'")
        result = await k.run("import time\nwhile True: time.sleep(0.01)", timeout=0.5)
        after = await k.run("print(keep)")
    assert result.status == ExecStatus.TIMEOUT
    assert result.output == TIMEOUT_TEXT
    assert not result.kernel_restarted
    assert after.output == "me"


async def test_loop_that_ignores_the_timeout_signal_is_killed_and_restarted(sandbox):
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass"
    async with sandbox.session() as k:
        await k.run("keep = 1")
        result = await k.run(code, timeout=0.5)
        after = await k.run("print(keep)")
    assert result.status == ExecStatus.TIMEOUT
    assert result.kernel_restarted
    assert result.output == TIMEOUT_TEXT + "\n" + STATE_LOST_TEXT
    assert after.error_name == "NameError"  # the new kernel starts empty, and works


async def test_stdout_from_fd_and_children_is_captured(sandbox):
    code = (
        "import os, subprocess, sys\nos.write(1, b'raw\\n')\nsubprocess.run(['echo', 'child'])\nprint('py')"
    )
    result = await sandbox.run_code(code)
    assert result.status == ExecStatus.OK
    assert set(result.output.split()) == {"raw", "child", "py"}


async def test_input_fails_instead_of_hanging(sandbox):
    result = await sandbox.run_code("input('? ')")
    assert result.error_name == "EOFError"


async def test_many_concurrent_trajectories_keep_their_own_state(sandbox):
    async def trajectory(i: int) -> list[str]:
        async with sandbox.session() as k:
            await k.run(f"n = {i}")
            outs = []
            for _ in range(3):
                outs.append((await k.run("n += 1\nprint(n)")).output)
            return outs

    results = await asyncio.gather(*(trajectory(i) for i in range(30)))
    assert results == [[str(i + 1), str(i + 2), str(i + 3)] for i in range(30)]


async def test_records_are_typed_and_round_trip(sandbox):
    result = await sandbox.run_code("print('hi')")
    data = result.to_dict()
    assert data["status"] == "ok" and data["duration_s"] > 0 and data["peak_memory_mb"] > 0
    assert type(result).from_dict(data) == result


@pytest.mark.parametrize("module", ["sympy", "numpy", "fractions", "itertools", "math"])
async def test_common_modules_are_preloaded(sandbox, module):
    assert module in sandbox.preloaded


async def test_kernels_draw_independent_random_numbers(sandbox):
    code = "import random, numpy as np, sympy\nprint(random.random(), np.random.rand(), sympy.randprime(10**6, 10**7))"
    draws = [(await sandbox.run_code(code)).output for _ in range(3)]
    for i, draw in enumerate(draws):
        assert all(a != b for a, b in zip(draw.split(), draws[i - 1].split()))


async def test_warmup_leaves_no_names_behind(sandbox):
    result = await sandbox.run_code("print(sorted(k for k in globals() if not k.startswith('__')))")
    assert result.output == "[]"


async def test_cell_cpu_time_is_recorded(sandbox):
    busy = await sandbox.run_code("sum(i * i for i in range(3 * 10**6))")
    idle = await sandbox.run_code("import time\ntime.sleep(0.3)")
    assert busy.cpu_s > 0.05
    assert idle.cpu_s < idle.duration_s / 2


async def test_live_kernels_are_capped():
    """A burst of trajectories waits for kernels instead of exhausting memory."""
    async with LocalSandbox(SandboxConfig(max_kernels=1, warm_kernels=0)) as sb:
        order = []

        async def first():
            async with sb.session() as k:
                await k.run("x = 1")
                order.append("first ran")
                await asyncio.sleep(0.3)
                order.append("first closes")

        async def second():
            await asyncio.sleep(0.1)
            async with sb.session() as k:
                await k.run("y = 1")
                order.append("second ran")

        await asyncio.gather(first(), second())
    assert order == ["first ran", "first closes", "second ran"]


def test_sandbox_exec_exits_non_zero_when_a_cell_fails(tmp_path):
    """`cortbench sandbox exec` runs every cell, then fails like a script would (exit 1, one line
    naming the cells) unless --allow-errors; state carries across the files."""
    import subprocess
    import sys

    cells = [tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"]
    for path, code in zip(cells, ["x = 41", "1 / 0", "print(x + 1)"]):
        path.write_text(code)

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "cortbench.harness.cli", "sandbox", "exec", "--json", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    done = run(*map(str, cells))
    assert done.returncode == 1
    statuses = [line.split('"status": "')[1].split('"')[0] for line in done.stdout.splitlines()]
    assert statuses == ["ok", "error", "ok"] and '"output": "42"' in done.stdout.splitlines()[2]
    assert done.stderr.strip() == "error: cell 2 failed (--allow-errors exits 0)"
    assert run("--allow-errors", *map(str, cells)).returncode == 0
    assert run(str(cells[0]), str(cells[2])).returncode == 0
