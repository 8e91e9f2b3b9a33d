"""Any OpenAI-compatible completions endpoint: vLLM serve, SGLang, llama.cpp server, hosted APIs.

The harness renders prompts itself (with the model's chat template) and calls `/v1/completions`,
so every server sees exactly the same text (chat endpoints reformat prompts their own way).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from ...tasks.spec import CORT_PROTOCOL
from ..chat import count_with_tokenizer, render_with_tokenizer
from ..extras import require
from ..fences import stripped_stop
from ..rollout import Completion
from . import BackendError, BackendUnavailable, register_backend

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _Retry(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retry | httpx.TransportError)


@register_backend("openai")
class OpenAIGenerator:
    """Completions over HTTP with a concurrency limit and retries with backoff (429, 5xx, timeouts).

    Args:
        base_url: e.g. "http://127.0.0.1:8000/v1".
        model: the served model's name (default: the first one `/models` lists).
        api_key: default from OPENAI_API_KEY (none needed for local servers).
        tokenizer: an HF tokenizer name/path (or object) for exact token counts; without one,
            prompt and output tokens are approximated (4 characters a token) and marked so.
        max_concurrency: requests in flight at once; retries, backoff_s: retry policy.
        extra_body: fields added to every request (server-specific sampling: seed, top_k,
            repetition_penalty, cache_prompt, ...).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        temperature: float = CORT_PROTOCOL.temperature,
        top_p: float = CORT_PROTOCOL.top_p,
        tokenizer: Any = None,
        max_concurrency: int = 64,
        timeout_s: float = 600.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.extra_body = dict(extra_body or {})
        self.model = model
        self.temperature, self.top_p = temperature, top_p
        self.retries, self.backoff_s = retries, backoff_s
        key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))
        self._slots = asyncio.Semaphore(max_concurrency)
        self.max_concurrency = max_concurrency
        if isinstance(tokenizer, str):
            transformers = require("transformers", "hf", "the openai backend's --tokenizer")
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer)
            except OSError as exc:
                raise BackendError(
                    f"cannot load tokenizer {tokenizer!r}: {str(exc).splitlines()[0]}"
                ) from None
        self.tokenizer = tokenizer
        self.approximate_tokens = tokenizer is None

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer is None:
            raise BackendError(
                "the openai backend renders prompts with the model's chat template: pass --tokenizer "
                "(an HF tokenizer name or folder)"
            )
        return render_with_tokenizer(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return (len(text) + 3) // 4
        return count_with_tokenizer(self.tokenizer, text)

    async def _post(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.retries),
                wait=wait_exponential(multiplier=self.backoff_s, max=30),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    if payload is None:
                        response = await self._client.get(url)
                    else:
                        response = await self._client.post(url, json=payload)
                    if response.status_code in _RETRY_STATUS:
                        raise _Retry(response)
        except _Retry as exc:
            raise BackendUnavailable(f"{url} kept answering HTTP {exc.response.status_code}") from None
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise BackendError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    async def _model_name(self) -> str:
        if self.model is None:
            models = (await self._post("/models")).get("data") or []
            if not models:
                raise BackendError(f"{self.base_url}/models lists no model; pass --model")
            self.model = models[0]["id"]
        return self.model

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        payload = {
            "model": await self._model_name(),
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            **self.extra_body,
        }
        if stop:
            payload["stop"] = list(stop)
        async with self._slots:
            body = await self._post("/completions", payload)
        choice = body["choices"][0]
        text = choice.get("text") or ""
        finish: Literal["stop", "length"] = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = body.get("usage") or {}
        tokens = usage.get("completion_tokens") or self.count_tokens(text)
        return Completion(text, finish, tokens, stop=self._matched_stop(choice, prompt + text, stop, finish))

    @staticmethod
    def _matched_stop(choice: dict[str, Any], so_far: str, stop: tuple[str, ...], finish: str) -> str | None:
        """Which stop string ended the completion (servers strip it). vLLM says so in `stop_reason`,
        SGLang in `matched_stop`, llama.cpp's server in `stopping_word`; otherwise it is inferred
        from where the text ends (fences.stripped_stop)."""
        if finish != "stop" or not stop:
            return None
        for field in ("stop_reason", "matched_stop", "stopping_word"):
            if field in choice:
                reason = choice[field]
                return reason if isinstance(reason, str) and reason in stop else None
        return stripped_stop(so_far, stop)

    async def aclose(self) -> None:
        await self._client.aclose()
