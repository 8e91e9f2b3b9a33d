"""Trajectory records as token ids with a loss mask: what every trainer feeds TRL.

CoRT trains on what the model wrote (reasoning, code, its final answer) and never on the prompt or
on what the interpreter wrote back: TRL's `completion_only_loss`/`assistant_only_loss` cannot hide
output blocks that sit inline in the assistant text, so the trainers pass pre-tokenized rows. The
completion is tokenized piece by piece at the boundaries between model-written and inserted text,
so a mask boundary never falls inside a token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cortbench.analyzers.behaviours import merge_spans
from cortbench.harness.records import TrajectoryRecord

IGNORE_INDEX = -100  # labels with this value are left out of the loss (torch's cross-entropy default)

# An output block the harness appended: it follows a closed python block, newlines aside.
_TOOL_OUTPUT = re.compile(
    r"^```python[ \t]*\n.*?^```[ \t]*\n(?P<out>\n?```output[ \t]*\n.*?^```[ \t]*(?:\n|$))",
    re.MULTILINE | re.DOTALL,
)


@dataclass
class EncodedTrajectory:
    """One trajectory as ids. `completion_mask` is 1 where the model wrote the token (trained) and 0
    where the harness inserted it (interpreter output; hints unless trained on)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    completion_mask: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    @property
    def labels(self) -> list[int]:
        """Causal-LM labels: the prompt and every masked token are IGNORE_INDEX."""
        completion = [t if m else IGNORE_INDEX for t, m in zip(self.completion_ids, self.completion_mask)]
        return [IGNORE_INDEX] * len(self.prompt_ids) + completion

    def row(self) -> dict[str, list[int]]:
        """A pre-tokenized SFT row: TRL's SFTTrainer uses `input_ids` and `labels` as given."""
        return {"input_ids": self.input_ids, "labels": self.labels}


def inserted_spans(record: TrajectoryRecord, *, hints: bool = True) -> list[tuple[int, int]]:
    """Character spans of `record.generation` the harness wrote: the outputs of executed cells (at
    most one per tool call, so an output block the model typed itself after the tool limit stays
    the model's) and, if `hints`, the text a hint policy inserted."""
    spans = [m.span("out") for m in _TOOL_OUTPUT.finditer(record.generation)][: len(record.tool_calls)]
    if hints:
        spans += [(h.offset, h.offset + len(h.text)) for h in record.hints if h.text]
    return merge_spans(spans)  # a hint right after an output joins it


def encode_trajectory(
    tokenizer: Any, record: TrajectoryRecord, *, train_on_hints: bool = False, add_eos: bool = True
) -> EncodedTrajectory:
    """Tokenize one record. `train_on_hints`: Hint-Engineering data teaches the model to write the
    hints itself (SFT), whereas hints inserted during RL rollouts are the environment's. `add_eos`
    closes a trajectory that ended on its own (finish_reason "stop" or "tool_limit") with the end-of-sequence token,
    so the model learns to stop."""
    prompt_ids = _ids(tokenizer, record.prompt)
    completion_ids: list[int] = []
    mask: list[int] = []
    pos = 0
    for start, end in [*inserted_spans(record, hints=not train_on_hints), (len(record.generation),) * 2]:
        for text, trained in ((record.generation[pos:start], 1), (record.generation[start:end], 0)):
            ids = _ids(tokenizer, text)
            completion_ids += ids
            mask += [trained] * len(ids)
        pos = end
    if add_eos and record.ended and tokenizer.eos_token_id is not None:
        completion_ids.append(tokenizer.eos_token_id)
        mask.append(1)
    return EncodedTrajectory(prompt_ids, completion_ids, mask)


def _ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of `text` alone: the prompt already carries the chat template's special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
