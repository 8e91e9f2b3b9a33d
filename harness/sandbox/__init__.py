"""The sandboxed, stateful Python interpreter that runs model-written code.

    async with LocalSandbox() as sandbox:
        async with sandbox.session() as kernel:      # one per trajectory
            result = await kernel.run("x = 2\\nprint(x ** 10)")
            result.output                            # the text for the ```output block

Implementations are registered by name: `get_sandbox("local" | "remote" | "sandboxfusion")`, or
`make_sandbox(name, config, args)` as `--sandbox NAME --sandbox-arg KEY=VALUE` do; packages add
theirs through the `cortbench.sandboxes` entry-point group (docs/extending.md).
"""

from ._base import (
    KernelSession,
    Sandbox,
    SandboxError,
    get_sandbox,
    make_sandbox,
    register_sandbox,
    sandbox_names,
)
from ._config import DEFAULT_PRELOAD, SandboxConfig
from ._local import LocalSandbox
from ._records import STATE_LOST_TEXT, SUCCEEDED, TIMEOUT_TEXT, ExecResult, ExecStatus, truncate_middle

__all__ = [
    "DEFAULT_PRELOAD",
    "ExecResult",
    "ExecStatus",
    "KernelSession",
    "LocalSandbox",
    "STATE_LOST_TEXT",
    "SUCCEEDED",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "TIMEOUT_TEXT",
    "get_sandbox",
    "make_sandbox",
    "register_sandbox",
    "sandbox_names",
    "truncate_middle",
]
