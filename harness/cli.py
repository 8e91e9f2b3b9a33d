"""The `cortbench` command line.

The harness's own commands live here. The other parts (tasks, analyzers, leaderboards, trainers)
and third-party packages add theirs through the `cortbench.commands` entry-point group: each entry
is a function that takes the typer app. That keeps the data flow one way: the harness never
imports the parts downstream of it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from enum import StrEnum
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from ..tasks.spec import CORT_PROTOCOL
from .console import console, err_console, fail, plural, say_error
from .sandbox import ExecResult, LocalSandbox, Sandbox, SandboxConfig, SandboxError, make_sandbox

app = typer.Typer(
    name="cortbench",
    help="Benchmark harness for tool-integrated reasoning: models solve problems while a sandboxed "
    "Python interpreter runs the code they write (CoRT protocol).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: readable at 80 columns, in pipes and CI logs
)
sandbox_app = typer.Typer(
    help="The sandboxed, stateful Python interpreter: run cells, check isolation, serve over HTTP.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(sandbox_app, name="sandbox")


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
def options(
    _: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """cortbench: evaluate and train models that reason with a Python interpreter."""


def _run(coro):
    """Run a command's coroutine; sandbox failures become one clear line and exit status 1."""
    try:
        return asyncio.run(coro)
    except SandboxError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")


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


BackendName = Annotated[str, typer.Option(help="llamacpp (embedded default), hf, openai, vllm.")]
ModelName = Annotated[
    str | None, typer.Option(help="Model path or id (llamacpp: a GGUF; default: embedded SmolLM2).")
]
BaseUrl = Annotated[str | None, typer.Option(help="openai backend: the server's /v1 URL.")]
TokenizerName = Annotated[
    str | None, typer.Option(help="openai backend: HF tokenizer for the chat template and token counts.")
]
BackendArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--backend-arg",
        help="KEY=VALUE passed to the backend, repeatable (vllm: tensor_parallel_size=4, max_model_len=32768, "
        "gpu_memory_utilization=0.9, ...; llamacpp: n_ctx=8192; hf: device=cuda).",
    ),
]


SandboxName = Annotated[
    str,
    typer.Option(
        "--sandbox",
        help="Where the model's code runs: local (default: isolated kernels on this machine), remote (a "
        "`cortbench sandbox serve`), sandboxfusion, or a plug-in's sandbox.",
    ),
]
SandboxArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--sandbox-arg",
        help="KEY=VALUE passed to the sandbox, repeatable (remote: url=http://host:8080, token=...; "
        "local: SandboxConfig fields, memory_mb=2048, ...).",
    ),
]


def _options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Repeated KEY=VALUE options (`--backend-arg`, `--sandbox-arg`, ...) as keyword arguments; a bad
    one is one line and exit 1."""
    from .registry import OptionError, parse_options

    try:
        return parse_options(items, flag)
    except OptionError as exc:
        fail(str(exc))


def _sandbox(name: str, args: dict[str, Any], config: SandboxConfig) -> Sandbox:
    """The `--sandbox` (not started) with its `--sandbox-arg`s; a bad one is one line and exit 1."""
    try:
        return make_sandbox(name, config, args)
    except SandboxError as exc:
        fail(str(exc))


def _backend_options(
    backend: str, model, base_url, tokenizer, temperature: float, top_p: float, extra: list[str] | None = None
) -> dict:
    options: dict[str, Any] = {"temperature": temperature, "top_p": top_p, **_options(extra, "--backend-arg")}
    if backend == "openai":
        if not base_url:
            fail("the openai backend needs --base-url")
        options.update(base_url=base_url, model=model, tokenizer=tokenizer)
    elif model:
        options["model"] = model
    return options


@app.command("run")
def run(
    tasks: Annotated[
        str,
        typer.Option(
            "--tasks",
            help="Comma-separated task names or groups (cortbench tasks), .jsonl files with 'problem' and "
            "'gt_answer' rows, or task .yaml files.",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory, e.g. runs/x.")],
    backend: BackendName = "llamacpp",
    model: ModelName = None,
    base_url: BaseUrl = None,
    tokenizer: TokenizerName = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Local folder with the benchmark files (default: $CORTBENCH_DATA_DIR, else the hub)."
        ),
    ] = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Samples per problem (default: each task's k).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="First N problems of each task.")] = None,
    hint: Annotated[
        str,
        typer.Option(help="Hint policy: none, prompt-hint (CoRT), code (opens the turn in a python block)."),
    ] = "none",
    temperature: Annotated[float | None, typer.Option(help="Default: the tasks' protocol.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Default: the tasks' protocol.")] = None,
    max_tool_calls: Annotated[int | None, typer.Option(help="Default: the tasks' protocol.")] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            help="Tokens per trajectory (default: the tasks' protocol; capped by the model's context)."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds per cell (protocol: 30).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Trajectories at once (capped by what the backend can serve at once).")
    ] = 16,
    backend_arg: BackendArgs = None,
    sandbox: SandboxName = "local",
    sandbox_arg: SandboxArgs = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in --output.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run in --output.")
    ] = False,
    no_score: Annotated[
        bool, typer.Option("--no-score", help="Do not grade the run at the end (cortbench score does).")
    ] = False,
) -> None:
    """Run a model on problems with the interpreter in the loop; every trajectory is recorded."""
    from .backends import get_backend
    from .progress import RunProgress
    from .registry import shown_options
    from .rollout import Limits
    from .run_settings import RUN_IDENTITY, RunSettingsError, resolve_run
    from .runner import SamplingPlan, concurrency_for, run_samples
    from .store import RunStore

    try:
        run = resolve_run(
            tasks, data_dir, limit=limit, n=n, hint=hint, temperature=temperature, top_p=top_p,
            max_tool_calls=max_tool_calls, max_tokens=max_tokens, timeout_s=timeout,
        )  # fmt: skip
    except RunSettingsError as exc:
        fail(str(exc))
    options = _backend_options(backend, model, base_url, tokenizer, run.temperature, run.top_p, backend_arg)
    if backend == "openai":
        options.setdefault("max_concurrency", concurrency)  # a server serves what you pass
    sandbox_args = _options(sandbox_arg, "--sandbox-arg")
    _sandbox(sandbox, sandbox_args, SandboxConfig())  # a bad name or setting fails before the model loads
    config = run.config(backend=backend, model=model, limit=limit, hint=hint,
                        backend_args=backend_arg or [], tokenizer=tokenizer, sandbox=sandbox,
                        sandbox_args=shown_options(sandbox_args))  # fmt: skip

    async def go() -> tuple[RunProgress, int]:
        generator = get_backend(backend, **options)
        if model is None and hasattr(generator, "model_path"):  # the embedded default: say which model ran
            config["model_file"] = os.path.basename(generator.model_path)
        limits = Limits.within_context(
            generator, max_tool_calls=run.max_tool_calls, max_tokens=run.max_tokens
        )
        if limits.max_total_tokens < run.max_tokens:
            err_console.print(
                f"note: the model's context is {limits.max_total_tokens} tokens; trajectories are capped there"
            )
        at_once = concurrency_for(generator, concurrency)
        if at_once < concurrency:
            err_console.print(f"note: the {backend} backend serves {plural(at_once, 'completion')} at a time: "
                              f"running {at_once} at once, not {concurrency} (more would only queue)")  # fmt: skip
        plan = SamplingPlan(hints=run.hints, limits=limits, concurrency=at_once, per_task=run.samples)
        with RunStore.open(
            output, config, resume=resume, overwrite=overwrite, identity=RUN_IDENTITY
        ) as store:
            total = sum(run.samples[p.task][0] for p in run.problems)
            warm = min(at_once, 16)  # trajectories past the warm ones wait for a kernel start
            with RunProgress(total, len(store)) as progress:
                box = make_sandbox(
                    sandbox, SandboxConfig(timeout_s=run.timeout_s, warm_kernels=warm), sandbox_args
                )
                async with box:
                    await run_samples(run.problems, generator, box, store, plan, on_record=progress.add)
            return progress, len(store)

    progress, in_run = _run_to_the_end(go(), output)
    s = progress.stats
    table = Table("", "", title=f"cortbench run -> {output}", show_header=False)
    for label, value in (
        ("samples written now", s.samples), ("in the run", in_run), ("tool calls", s.tool_calls),
        ("code errors", s.code_errors), ("generated tokens", s.tokens), ("hit the length limit", s.length),
        ("failed (see error)", s.failed),
    ):  # fmt: skip
        table.add_row(label, f"{value:,}")
    console.print(table)
    if not no_score and in_run:
        _summaries(output)


def _run_to_the_end(coro, output: Path):
    """Run `cortbench run`'s coroutine; an outage, a store error or Ctrl-C is one line, and every
    finished sample stays written (Ctrl-C cancels the trajectories in flight; backends stop their
    generation at the next token)."""
    from .backends import BackendError
    from .rollout import GenerationUnavailable
    from .store import RunStoreError

    def kept() -> str:
        if (output / "samples.jsonl").is_file():
            return f"finished samples are in {output}: continue with --resume"
        return "nothing was written"

    try:
        return asyncio.run(coro)
    except (BackendError, GenerationUnavailable, RunStoreError, SandboxError) as exc:
        fail(f"{exc}; {kept()}")
    except KeyboardInterrupt:
        fail(f"interrupted; {kept()}")


def _summaries(output: Path) -> None:
    """The other parts' closing summaries of a finished run (the analyzers grade it and show avg@k),
    plugged in through the `cortbench.run_summaries` entry points; one that fails is one warning."""
    for entry in sorted(entry_points(group="cortbench.run_summaries"), key=lambda e: e.name):
        try:
            entry.load()(output, console)
        except Exception as exc:  # noqa: BLE001 - the run itself is written; a summary must not hide that
            err_console.print(f"warning: the {entry.name!r} summary failed: {exc}")


@app.command("import")
def import_command(
    source_format: Annotated[
        str,
        typer.Argument(
            metavar="format",
            help="lm-eval (its --log_samples files) or jsonl (rows of problem, gold and generation).",
        ),
    ],
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files, or folders searched for them (lm-eval: samples_*.jsonl; jsonl: *.jsonl).",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory to write, e.g. runs/x.")],
    task: Annotated[
        str | None,
        typer.Option(
            help="Task of every row (default: lm-eval's file name, cort_aime24 is aime24; jsonl: the "
            "row's task field, else the file name)."
        ),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            help="KEY=NAME: read KEY from field NAME (a.b for nested fields), repeatable. Keys: problem, "
            "gold, generation, task, problem_id, problem_meta, finish_reason.",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name for run.json (lm-eval: default from its results file).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run in --output.")
    ] = False,
) -> None:
    """Turn other tools' outputs into a run folder that score, analyze, check and leaderboard read:
    each generation is a sample, its tool calls read from its ```python and ```output blocks. Bad
    rows are skipped, one line each (docs/import.md)."""
    from .importers import ImportFailed, import_run, parse_fields
    from .store import RunStoreError

    def skipped(line: str) -> None:
        err_console.print(f"skipped {line}", markup=False, highlight=False, soft_wrap=True)

    try:
        report = import_run(
            source_format, paths, output, task=task, fields=parse_fields(field or []), model=model,
            overwrite=overwrite, on_skip=skipped,
        )  # fmt: skip
    except (ImportFailed, RunStoreError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; nothing was written")
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)


@app.command("serve")
def serve_completions(
    backend: BackendName = "llamacpp",
    model: ModelName = None,
    base_url: BaseUrl = None,
    tokenizer: TokenizerName = None,
    host: Annotated[str, typer.Option(help="Address to bind; keep it on a private network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    served_name: Annotated[str, typer.Option(help="Model name reported by /v1/models.")] = "cortbench",
    hint: Annotated[str, typer.Option(help="Hint policy: none, prompt-hint, code.")] = "none",
    prompt_format: Annotated[
        str, typer.Option(help="chat: prompts are user messages (chat template applied); raw: used as is.")
    ] = "chat",
    temperature: Annotated[float, typer.Option(help="Sampling temperature (the protocol's).")] = (
        CORT_PROTOCOL.temperature
    ),
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (the protocol's).")] = CORT_PROTOCOL.top_p,
    max_tool_calls: Annotated[int, typer.Option(help="Executed cells (the protocol's).")] = (
        CORT_PROTOCOL.max_tool_calls
    ),
    max_tokens: Annotated[int, typer.Option(help="Tokens per trajectory (the protocol's).")] = (
        CORT_PROTOCOL.max_tokens
    ),
    timeout: Timeout = CORT_PROTOCOL.timeout_s,
    concurrency: Annotated[int, typer.Option(help="Trajectories at once.")] = 64,
    backend_arg: BackendArgs = None,
    sandbox: SandboxName = "local",
    sandbox_arg: SandboxArgs = None,
    record: Annotated[
        Path | None, typer.Option(help="Also append every trajectory to this run directory (resumable).")
    ] = None,
) -> None:
    """Serve tool-integrated reasoning behind an OpenAI-compatible /v1/completions API: each prompt runs
    the whole tool loop and the completion is the full transcript (for lm-eval's local-completions)."""
    from .backends import BackendError, get_backend
    from .completions_server import ServeConfig, serve
    from .hints import HintError, get_hint_policy
    from .rollout import Limits

    if prompt_format not in ("chat", "raw"):
        fail(f"--prompt-format must be chat or raw, not {prompt_format!r}")
    box = _sandbox(sandbox, _options(sandbox_arg, "--sandbox-arg"), SandboxConfig(timeout_s=timeout))
    try:
        hints = get_hint_policy(hint)
        generator = get_backend(
            backend, **_backend_options(backend, model, base_url, tokenizer, temperature, top_p, backend_arg)
        )
    except (HintError, BackendError) as exc:
        fail(str(exc))
    limits = Limits.within_context(generator, max_tool_calls=max_tool_calls, max_tokens=max_tokens)
    config = ServeConfig(served_name, limits, hints, prompt_format, concurrency, record)  # type: ignore[arg-type]
    try:
        serve(host, port, generator, box, config)
    except SandboxError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")


@sandbox_app.command("demo")
def sandbox_demo(timeout: Timeout = CORT_PROTOCOL.timeout_s) -> None:
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
    timeout: Timeout = CORT_PROTOCOL.timeout_s,
    memory_mb: MemoryMB = 4096,
    echo: Annotated[
        bool, typer.Option(help="Jupyter-style: print the value of each cell's last expression.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON record per cell instead.")] = False,
    allow_errors: Annotated[
        bool, typer.Option(help="Exit 0 even when a cell fails (raises, times out, is killed).")
    ] = False,
) -> None:
    """Run cells in one stateful, sandboxed kernel, as the rollout loop does. Every cell runs; the exit
    status is 1 when one failed (as a script's would), unless --allow-errors."""
    import json

    cells = []
    for path in files:
        try:
            cells.append(sys.stdin.read() if str(path) == "-" else path.read_text())
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}")

    async def go() -> list[int]:
        config = SandboxConfig(
            timeout_s=timeout, memory_mb=memory_mb, echo_last_expression=echo, warm_kernels=0
        )
        failed = []
        async with LocalSandbox(config) as sandbox, sandbox.session() as kernel:
            for i, code in enumerate(cells, 1):
                result = await kernel.run(code)
                if json_out:
                    print(json.dumps(result.to_dict()))
                else:
                    _show(i, code, result)
                if not result.ok:
                    failed.append(i)
        return failed

    failed = _run(go())
    if failed and not allow_errors:
        cells_failed = ", ".join(map(str, failed))
        fail(f"{'cell' if len(failed) == 1 else 'cells'} {cells_failed} failed (--allow-errors exits 0)")


@sandbox_app.command("check")
def sandbox_check() -> None:
    """Report each layer of the sandbox's boundary as on or off (with the reason), then run a cell."""
    from rich.table import Table

    async def go() -> None:
        async with LocalSandbox(SandboxConfig(warm_kernels=0)) as sandbox:
            table = Table("layer", "state", "detail", box=None, show_edge=False)
            table.columns[2].overflow = "fold"
            for name, layer in sandbox.layers.items():
                state = "[green]on[/]" if layer["on"] else "[bold red]off[/]"
                table.add_row(name, state, layer["detail"])
            console.print(table)
            console.print(f"preloaded: {', '.join(sandbox.preloaded)}")
            result = await sandbox.run_code("print(1 + 1)")
            console.print(f"smoke cell: {result.status}, {result.duration_s * 1000:.1f} ms")

    _run(go())


@sandbox_app.command("serve")
def sandbox_serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; other than loopback only with --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    timeout: Timeout = CORT_PROTOCOL.timeout_s,
    memory_mb: MemoryMB = 4096,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Cells executing at once (default: CPU count).")
    ] = None,
    max_sessions: Annotated[int, typer.Option(help="Stateful sessions alive at once.")] = 1024,
    max_sessions_per_client: Annotated[int, typer.Option(help="Sessions one client address may hold.")] = 256,
    session_ttl: Annotated[float, typer.Option(help="Seconds an idle session lives.")] = 600.0,
    max_timeout: Annotated[
        float | None,
        typer.Option(
            help="Largest per-cell timeout a client may ask for (default: the protocol's, or --timeout if longer)."
        ),
    ] = None,
    kernel_wait: Annotated[
        float, typer.Option(help="Seconds a request waits for a free kernel (then 503).")
    ] = 30.0,
    warm_kernels: Annotated[int, typer.Option(help="Pre-started idle kernels.")] = 4,
    max_kernels: Annotated[
        int | None, typer.Option(help="Kernels alive at once (default: from RAM, ~64 MiB each).")
    ] = None,
    isolation: Annotated[
        Isolation, typer.Option(help="auto: every layer where allowed; namespaces: required; none.")
    ] = Isolation.auto,
    token: Annotated[
        str | None,
        typer.Option(envvar="CORTBENCH_SANDBOX_TOKEN", help="Require 'Authorization: Bearer TOKEN'."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback address without a token (trusted networks only).")
    ] = False,
) -> None:
    """Serve the sandbox over HTTP: SandboxFusion-compatible POST /run_code plus stateful sessions."""
    from .sandbox.server import ServerLimits, serve

    config = SandboxConfig(timeout_s=timeout, memory_mb=memory_mb, warm_kernels=warm_kernels,
                           isolation=isolation.value)  # fmt: skip
    if max_kernels:
        config = replace(config, max_kernels=max_kernels)
    limits = ServerLimits(max_sessions=max_sessions, max_sessions_per_client=max_sessions_per_client,
                          session_ttl_s=session_ttl, max_timeout_s=max_timeout, kernel_wait_s=kernel_wait)  # fmt: skip
    try:
        serve(
            host, port, config, token=token, insecure=insecure, limits=limits, max_concurrency=max_concurrency
        )
    except SandboxError as exc:
        fail(str(exc))


def _add_commands_of_other_parts() -> None:
    for entry in sorted(entry_points(group="cortbench.commands"), key=lambda e: e.name):
        try:
            entry.load()(app)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
            err_console.print(f"warning: cannot load the {entry.name!r} commands ({entry.value}): {exc}")


_add_commands_of_other_parts()


def main() -> None:
    """The `cortbench` command: the app, with a missing extra as its one line wherever it is met."""
    from .extras import MissingExtra

    try:
        app()
    except MissingExtra as exc:
        say_error(str(exc))
        sys.exit(1)


if __name__ == "__main__":
    main()
