"""In-process vLLM (AsyncLLM): continuous batching, and prefix caching on, so each continuation of
a trajectory reuses the KV cache of the trajectory so far. GPU hosts only (`cortbench[vllm]`)."""

from __future__ import annotations

import uuid
from typing import Any

from ..chat import count_with_tokenizer, render_with_tokenizer
from ..rollout import Completion
from . import BackendError, register_backend


@register_backend("vllm")
class VLLMGenerator:
    """Args: model (path or hub id); tensor_parallel_size / data_parallel_size for multi-GPU hosts;
    other keyword arguments go to vLLM's AsyncEngineArgs unchanged."""

    def __init__(
        self,
        model: str,
        *,
        temperature: float = 0.6,
        top_p: float = 0.95,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        try:
            from transformers import AutoTokenizer
            from vllm import AsyncEngineArgs, SamplingParams
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:
            raise BackendError(
                "the vllm backend needs vLLM on a GPU host: pip install 'cortbench[vllm]'"
            ) from None
        self._sampling = SamplingParams
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        args = AsyncEngineArgs(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            enable_prefix_caching=True,
            max_model_len=max_model_len,
            seed=seed,
            **engine_kwargs,
        )
        self.engine = AsyncLLM.from_engine_args(args)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.context_length = max_model_len or getattr(self.engine.model_config, "max_model_len", None)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_with_tokenizer(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return count_with_tokenizer(self.tokenizer, text)

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        params = self._sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=max_tokens,
            stop=list(stop) or None,
            include_stop_str_in_output=True,
        )
        final = None
        async for output in self.engine.generate(prompt, params, request_id=uuid.uuid4().hex):
            final = output
        choice = final.outputs[0]
        matched = choice.stop_reason if isinstance(choice.stop_reason, str) else None
        finish = "length" if choice.finish_reason == "length" else "stop"
        return Completion(choice.text, finish, len(choice.token_ids), stop=matched)
