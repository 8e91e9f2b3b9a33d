"""Render chat messages with a model's own template (the same Jinja2 dialect transformers uses)."""

from __future__ import annotations

from functools import lru_cache

from jinja2.sandbox import ImmutableSandboxedEnvironment


@lru_cache(maxsize=16)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def _raise(message: str):
    raise ValueError(message)


def render_chat_template(template: str, messages: list[dict[str, str]], **special_tokens: str) -> str:
    """The prompt text for `messages`, ending where the assistant's turn begins."""
    return _compile(template).render(messages=messages, add_generation_prompt=True, **special_tokens)


def render_with_tokenizer(tokenizer, messages: list[dict[str, str]]) -> str:
    """The same rendering through a transformers tokenizer's own template."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def count_with_tokenizer(tokenizer, text: str) -> int:
    """Tokens of `text` as the model sees it inside a trajectory (no BOS/EOS added)."""
    return len(tokenizer(text, add_special_tokens=False).input_ids)
