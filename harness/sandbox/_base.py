"""The sandbox interface every implementation provides, and the registry users plug into."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ..registry import Registry
from ._config import SandboxConfig
from ._records import ExecResult


class SandboxError(RuntimeError):
    """The sandbox itself failed (cannot start, spawn or reach its server); not a cell's error."""


@runtime_checkable
class KernelSession(Protocol):
    """One trajectory's stateful interpreter: variables, imports and functions persist across cells."""

    async def run(
        self, code: str, *, timeout: float | None = None, echo: bool | None = None
    ) -> ExecResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class Sandbox(Protocol):
    """Runs model-written code. `session()` is stateful (one per trajectory), `run_code` is not."""

    isolated: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Sandbox: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def session(self) -> AbstractAsyncContextManager[KernelSession]: ...

    async def run_code(self, code: str, *, timeout: float | None = None) -> ExecResult: ...


SessionT = TypeVar("SessionT", bound=KernelSession)


class SandboxBase(Generic[SessionT]):
    """Shared plumbing: `async with SomeSandbox(...) as sandbox:` starts and closes it, and
    `async with sandbox.session() as kernel:` closes the kernel session however the block ends.
    `SessionT` is the implementation's own session class."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def new_session(self) -> SessionT:
        """A session that gets its kernel lazily, on its first cell; closed by `session()`."""
        raise NotImplementedError

    @asynccontextmanager
    async def session(self) -> AsyncIterator[SessionT]:
        """A stateful kernel for one trajectory, closed (and its state destroyed) at exit."""
        session = self.new_session()
        try:
            yield session
        finally:
            await session.close()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _load_builtins() -> None:
    from . import _local, client  # noqa: F401 - importing registers them


SANDBOXES: Registry[Sandbox] = Registry("sandbox", SandboxError, _load_builtins)


def register_sandbox(name: str):
    """Register a sandbox implementation under `name` (usable as `--sandbox name`); a package
    registers one through the `cortbench.sandboxes` entry-point group (docs/extending.md). Its
    factory takes `config` (a SandboxConfig: the run's cell timeout, warm kernels, ...) and its own
    keyword settings (`--sandbox-arg KEY=VALUE`)."""
    return SANDBOXES.register(name)


def sandbox_names() -> list[str]:
    return SANDBOXES.names()


def get_sandbox(name: str = "local", **kwargs: Any) -> Sandbox:
    """Build a registered sandbox, e.g. `get_sandbox("remote", url="http://127.0.0.1:8080")`."""
    return SANDBOXES.create(name, **kwargs)


def make_sandbox(name: str, config: SandboxConfig, args: Mapping[str, Any] | None = None) -> Sandbox:
    """The sandbox `name` (not started) for a run: `config` carries what the run sets (cell timeout,
    warm kernels), `args` the user's settings (`--sandbox-arg`, a stage's `sandbox:` key; for
    `local`, SandboxConfig fields that override `config`'s). An unknown name or a setting the
    sandbox does not take is a SandboxError (one line)."""
    args = dict(args or {})
    if "config" in args:
        raise SandboxError(f"sandbox {name!r}: 'config' is not a setting; give its fields (timeout_s=...)")
    try:
        return get_sandbox(name, config=config, **args)
    except (TypeError, ValueError) as exc:  # building a sandbox does no I/O: this is a bad setting
        raise SandboxError(f"sandbox {name!r}: {exc}") from None
