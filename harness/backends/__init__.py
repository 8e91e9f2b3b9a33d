"""Generation backends: one async interface (`Generator` in rollout.py), registered by name.

    generator = get_backend("hf", model="path/or/hub-id")
    completion = await generator.complete(prompt, max_tokens=512, stop=("```\\n",))

Built in: `hf` (transformers), `openai` (any OpenAI-compatible server), `llamacpp` (in process; the
embedded default) and `vllm`. Backends return the stop string that ended a completion
(`Completion.stop`), so the loop can restore a fence that a server stripped.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from ..rollout import GenerationUnavailable, Generator


class BackendError(RuntimeError):
    """A backend cannot be built, or rejected a request (missing model file, HTTP 400, ...)."""


class BackendUnavailable(BackendError, GenerationUnavailable):
    """The backend is down or unreachable: the run stops (and resumes later); see rollout.py."""


def _load_builtins() -> None:
    from . import hf, llamacpp, openai, vllm  # noqa: F401 - importing registers them


BACKENDS: Registry[Generator] = Registry("backend", BackendError, _load_builtins)


def register_backend(name: str):
    """Register a backend factory under `name` (usable as `--backend name`)."""
    return BACKENDS.register(name)


def get_backend(name: str, **kwargs: Any) -> Generator:
    return BACKENDS.create(name, **kwargs)


def backend_names() -> list[str]:
    return BACKENDS.names()
