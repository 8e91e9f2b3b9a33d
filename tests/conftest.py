import pytest_asyncio

from cortbench.harness.sandbox import LocalSandbox, SandboxConfig


@pytest_asyncio.fixture
async def sandbox():
    """An isolated local sandbox with small limits so attack tests finish fast."""
    async with LocalSandbox(SandboxConfig(timeout_s=5, memory_mb=1024, warm_kernels=2)) as sb:
        yield sb
