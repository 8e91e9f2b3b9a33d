"""transformers `generate` as a backend (CPU or GPU); the trainers use it too.

torch and transformers are imported lazily: they are the `hf` extra, not core dependencies.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..chat import count_with_tokenizer, render_with_tokenizer
from ..rollout import Completion
from . import BackendError, register_backend


@register_backend("hf")
class HFGenerator:
    """Sample with `model.generate`; stop strings end a completion exactly at a closing fence.

    Args:
        model: a local path or hub id (loaded with AutoModelForCausalLM / AutoTokenizer), or an
            already loaded model together with `tokenizer`.
        temperature, top_p: sampling (protocol: 0.6 / 0.95); temperature 0 is greedy.
        device: "cpu", "cuda", ... (default: cuda when available).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        temperature: float = 0.6,
        top_p: float = 0.95,
        device: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise BackendError(
                "the hf backend needs torch and transformers: pip install 'cortbench[hf]'"
            ) from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(model, str):
            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(model, **load_kwargs)
                model = AutoModelForCausalLM.from_pretrained(model, **load_kwargs)
            except (OSError, TypeError, ValueError) as exc:  # missing files, unknown or bad options
                raise BackendError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
        if tokenizer is None:
            raise BackendError("pass the tokenizer together with an already loaded model")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.temperature, self.top_p = temperature, top_p
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()  # one generate at a time per model: transformers is not re-entrant

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_with_tokenizer(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return count_with_tokenizer(self.tokenizer, text)

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        return await asyncio.to_thread(self._complete, prompt, max_tokens, stop)

    def _complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        import torch

        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        sampling = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        with self._lock, torch.no_grad():
            output = self.model.generate(
                ids,
                max_new_tokens=max_tokens,
                stop_strings=list(stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **sampling,
            )
        new = output[0, ids.shape[1] :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        text, matched = _cut_at_stop(
            text, stop, len(self.tokenizer.decode(new[-1:], skip_special_tokens=True))
        )
        ended = matched is not None or (new and new[-1] == self.tokenizer.eos_token_id)
        return Completion(
            text, "stop" if ended or len(new) < max_tokens else "length", len(new), stop=matched
        )


def _cut_at_stop(text: str, stop: tuple[str, ...], last_token_chars: int) -> tuple[str, str | None]:
    """generate() stops on the token that completes a stop string, which may run past it
    ("```\n\nThe"): cut the text right after the stop string, as servers do (minus stripping)."""
    window = max(0, len(text) - last_token_chars - max((len(s) for s in stop), default=0) + 1)
    hits = [(i, s) for s in stop if (i := text.find(s, window)) != -1]
    if not hits:
        return text, None
    i, s = min(hits)
    return text[: i + len(s)], s
