"""Generation backends: one async interface (`Generator` in rollout.py), registered by name.

    generator = get_backend("hf", model="path/or/hub-id")
    completion = await generator.complete(prompt, max_tokens=512, stop=("```\\n",))

Backends return the stop string that ended a completion (`Completion.stop`), so the loop can
restore a fence that a server stripped. vllm, openai and llamacpp come with the rollout issue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..rollout import Generator

BackendFactory = Callable[..., Generator]
_REGISTRY: dict[str, BackendFactory] = {}


class BackendError(RuntimeError):
    """A backend cannot be built or reached (missing model file, unreachable server, ...)."""


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend factory under `name` (usable as `--backend name`)."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return decorate


def get_backend(name: str, **kwargs: Any) -> Generator:
    _load_builtins()
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def backend_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    from . import hf, llamacpp, openai, vllm  # noqa: F401 - importing registers them
