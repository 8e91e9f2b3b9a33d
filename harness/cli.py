"""The `cortbench` command line."""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from .sandbox import ExecResult, LocalSandbox, SandboxConfig, SandboxError

app = typer.Typer(
    name="cortbench",
    help="Benchmark harness for tool-integrated reasoning: models solve problems while a sandboxed "
    "Python interpreter runs the code they write (CoRT protocol).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(
    help="The sandboxed, stateful Python interpreter: run cells, check isolation, serve over HTTP.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")
console = Console()
err_console = Console(stderr=True)


class Isolation(StrEnum):
    auto = "auto"
    namespaces = "namespaces"
    none = "none"


Timeout = Annotated[float, typer.Option("--timeout", help="Seconds per cell (protocol: 30).")]
MemoryMB = Annotated[int, typer.Option("--memory-mb", help="Address-space limit per kernel, in MiB.")]


def _version(value: bool) -> None:
    if value:
        console.print(f"cortbench {version('cortbench')}")
        raise typer.Exit()


@app.callback()
def main(
    _: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """cortbench: evaluate and train models that reason with a Python interpreter."""


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def _run(coro):
    """Run a command's coroutine; sandbox failures become one clear line and exit status 1."""
    try:
        return asyncio.run(coro)
    except SandboxError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")


def _show(index: int, code: str, result: ExecResult) -> None:
    title = f"cell {index} · {result.status} · {result.duration_s * 1000:.1f} ms"
    console.print(Panel(code.rstrip(), title=title, title_align="left", border_style="cyan"))
    console.print(f"```output\n{result.output}\n```", markup=False, highlight=False, soft_wrap=True)


DEMO_CELLS = [
    "import sympy as sp\nx = sp.symbols('x')\nroots = sp.solve(x**3 - 6*x**2 + 11*x - 6, x)\nprint(roots)",
    "# state persists: `roots` and `sp` are still defined\nprint(sum(r**2 for r in roots), sp.factorint(2**32 + 1))",
    "print(undefined_name)",
    "import numpy as np\nA = np.array([[2, 1], [1, 3]])\nprint(np.linalg.eigvalsh(A).round(4))",
    "# hostile code is contained: no network, read-only filesystem, capped output\n"
    "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\nexcept OSError as e:\n    print('network:', e)\n"
    "try:\n    open('/etc/passwd', 'a')\nexcept OSError as e:\n    print('filesystem:', e)\nprint('x' * 10**6)",
    "import ctypes\nctypes.string_at(0)  # segfault: the kernel is restarted and the model told so",
    "print(roots)",
]


@sandbox_app.command("demo")
def sandbox_demo(timeout: Timeout = 30.0) -> None:
    """Run a short CoRT-style trajectory in one stateful kernel and show what the model would see."""

    async def go() -> None:
        async with LocalSandbox(SandboxConfig(timeout_s=timeout, warm_kernels=1)) as sandbox:
            console.print(f"isolated: {sandbox.isolated}  preloaded: {', '.join(sandbox.preloaded)}")
            async with sandbox.session() as kernel:
                for i, code in enumerate(DEMO_CELLS, 1):
                    _show(i, code, await kernel.run(code))

    _run(go())


@sandbox_app.command("exec")
def sandbox_exec(
    files: Annotated[
        list[Path], typer.Argument(help="Cells to run in order in one kernel; '-' reads one cell from stdin.")
    ],
    timeout: Timeout = 30.0,
    memory_mb: MemoryMB = 4096,
    echo: Annotated[
        bool, typer.Option(help="Jupyter-style: print the value of each cell's last expression.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON record per cell instead.")] = False,
) -> None:
    """Run cells in one stateful, sandboxed kernel, as the rollout loop does."""
    import json

    cells = []
    for path in files:
        try:
            cells.append(sys.stdin.read() if str(path) == "-" else path.read_text())
        except OSError as exc:
            _fail(f"cannot read {path}: {exc.strerror}")

    async def go() -> None:
        config = SandboxConfig(
            timeout_s=timeout, memory_mb=memory_mb, echo_last_expression=echo, warm_kernels=0
        )
        async with LocalSandbox(config) as sandbox, sandbox.session() as kernel:
            for i, code in enumerate(cells, 1):
                result = await kernel.run(code)
                if json_out:
                    print(json.dumps(result.to_dict()))
                else:
                    _show(i, code, result)

    _run(go())


@sandbox_app.command("check")
def sandbox_check() -> None:
    """Report which isolation this machine allows and which modules are pre-loaded."""

    async def go() -> None:
        async with LocalSandbox(SandboxConfig(warm_kernels=0)) as sandbox:
            if sandbox.isolated:
                console.print(
                    "[green]isolation: namespaces[/] (user, PID, mount, network, IPC, UTS), read-only filesystem, no capabilities"
                )
            else:
                console.print(f"[bold red]isolation: rlimits only[/] ({sandbox.isolation_problem})")
            console.print(f"preloaded: {', '.join(sandbox.preloaded)}")
            result = await sandbox.run_code("print(1 + 1)")
            console.print(f"smoke cell: {result.status}, {result.duration_s * 1000:.1f} ms")

    _run(go())


@sandbox_app.command("serve")
def sandbox_serve(
    host: Annotated[str, typer.Option(help="Address to bind; keep it on a private network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    timeout: Timeout = 30.0,
    memory_mb: MemoryMB = 4096,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Cells executing at once (default: CPU count).")
    ] = None,
    max_sessions: Annotated[int, typer.Option(help="Stateful sessions alive at once.")] = 1024,
    session_ttl: Annotated[float, typer.Option(help="Seconds an idle session lives.")] = 600.0,
    warm_kernels: Annotated[int, typer.Option(help="Pre-started idle kernels.")] = 4,
    isolation: Annotated[
        Isolation, typer.Option(help="auto: namespaces where allowed; namespaces: required; none.")
    ] = Isolation.auto,
) -> None:
    """Serve the sandbox over HTTP: SandboxFusion-compatible POST /run_code plus stateful sessions.

    There is no authentication: bind to loopback or a private network only.
    """
    from .sandbox.server import serve

    config = SandboxConfig(
        timeout_s=timeout, memory_mb=memory_mb, warm_kernels=warm_kernels, isolation=isolation.value
    )
    try:
        serve(
            host,
            port,
            config,
            max_sessions=max_sessions,
            session_ttl_s=session_ttl,
            max_concurrency=max_concurrency,
        )
    except SandboxError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")


if __name__ == "__main__":
    app()
