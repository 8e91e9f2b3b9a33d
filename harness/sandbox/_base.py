"""The sandbox interface every implementation provides, and the registry users plug into."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, runtime_checkable

from ..registry import Registry
from ._records import ExecResult


class SandboxError(RuntimeError):
    """The sandbox itself failed (cannot start, spawn or reach its server); not a cell's error."""


@runtime_checkable
class KernelSession(Protocol):
    """One trajectory's stateful interpreter: variables, imports and functions persist across cells."""

    async def run(
        self, code: str, *, timeout: float | None = None, echo: bool | None = None
    ) -> ExecResult: ...


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


class SandboxBase:
    """Shared plumbing: `async with SomeSandbox(...) as sandbox:` starts and closes it, and
    `async with sandbox.session() as kernel:` closes the kernel session however the block ends."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def new_session(self) -> KernelSession:
        """A session that gets its kernel lazily, on its first cell; closed by `session()`."""
        raise NotImplementedError

    @asynccontextmanager
    async def session(self) -> AsyncIterator[KernelSession]:
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
    """Register a sandbox implementation under `name` (usable as `--sandbox name`)."""
    return SANDBOXES.register(name)


def sandbox_names() -> list[str]:
    return SANDBOXES.names()


def get_sandbox(name: str = "local", **kwargs: Any) -> Sandbox:
    """Build a registered sandbox, e.g. `get_sandbox("remote", url="http://127.0.0.1:8080")`."""
    return SANDBOXES.create(name, **kwargs)
