"""transformers `generate` as a backend (CPU or GPU); the trainers use it too.

torch and transformers are imported lazily: they are the `hf` extra, not core dependencies.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ...tasks.spec import CORT_PROTOCOL
from ..chat import count_with_tokenizer, render_with_tokenizer
from ..extras import require
from ..fences import cut_at_stop
from ..rollout import Completion
from . import BackendError, register_backend


@register_backend("hf")
class HFGenerator:
    """Sample with `model.generate`; stop strings end a completion exactly at a closing fence.

    Args:
        model: a local path or hub id (loaded with AutoModelForCausalLM / AutoTokenizer), or an
            already loaded model together with `tokenizer`.
        temperature, top_p: sampling (default: the protocol's); temperature 0 is greedy.
        device: "cpu", "cuda", ... (default: cuda when available).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        temperature: float = CORT_PROTOCOL.temperature,
        top_p: float = CORT_PROTOCOL.top_p,
        device: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        torch = require("torch", "hf", "the hf backend")
        transformers = require("transformers", "hf", "the hf backend")
        AutoModelForCausalLM, AutoTokenizer = transformers.AutoModelForCausalLM, transformers.AutoTokenizer
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
        # One generating and one running its cell: generate() recomputes the whole prompt on every
        # call anyway, so a second trajectory costs nothing and hides the interpreter's time.
        self.max_concurrency = 2

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_with_tokenizer(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return count_with_tokenizer(self.tokenizer, text)

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._complete, prompt, max_tokens, stop, cancelled)
        finally:
            cancelled.set()  # a cancelled trajectory (Ctrl-C) stops its generation at the next token

    def _complete(
        self, prompt: str, max_tokens: int, stop: tuple[str, ...], cancelled: threading.Event
    ) -> Completion:
        import torch
        from transformers import StoppingCriteriaList

        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        sampling: dict[str, bool | float] = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}

        def on_cancel(input_ids, _scores, **_) -> torch.Tensor:
            return torch.full(
                (input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device
            )

        with self._lock, torch.no_grad():
            if cancelled.is_set():
                return Completion("", "stop", 0)
            output = self.model.generate(
                ids,
                stopping_criteria=StoppingCriteriaList([on_cancel]),
                max_new_tokens=max_tokens,
                stop_strings=list(stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **sampling,
            )
        new = output[0, ids.shape[1] :].tolist()
        text, matched = decode_to_stop(self.tokenizer, new, stop)
        ended = matched is not None or (new and new[-1] == self.tokenizer.eos_token_id)
        return Completion(
            text, "stop" if ended or len(new) < max_tokens else "length", len(new), stop=matched
        )


def decode_to_stop(tokenizer: Any, new: list[int], stop: tuple[str, ...]) -> tuple[str, str | None]:
    """The text of `new` (generated ids) and the stop string it ended on, if any. generate() stops on
    the token that completes a stop string, which may run past it ("```\n\nThe"): the text is cut
    right after it, looked for within the last token's reach only (an earlier match is no stop)."""
    text = tokenizer.decode(new, skip_special_tokens=True)
    last = len(tokenizer.decode(new[-1:], skip_special_tokens=True))
    return cut_at_stop(text, stop, start=len(text) - last - max(map(len, stop), default=0) + 1)
