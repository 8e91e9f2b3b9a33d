"""Token-level loss masks: the model's own text is trained, the prompt and interpreter outputs never."""

from __future__ import annotations

import pytest

from cortbench.harness.records import InsertedHint, ToolCall, TrajectoryRecord
from cortbench.trainers.encoding import IGNORE_INDEX, encode_trajectory, inserted_spans

GENERATION = (
    "Let me compute this with python.\n```python\nprint(2 ** 10)\n```\n```output\n1024\n```\n"
    "Let me compute this with python.\n```python\nprint(2 ** 2)\n```\n```output\n4\n```\n"
    "So the answer is \\boxed{1024}."
)
HINT = "Let me compute this with python.\n"


def record(**changes) -> TrajectoryRecord:
    calls = [
        ToolCall("print(2 ** 10)", "1024", "ok", 0.0),
        ToolCall("print(2 ** 2)", "4", "ok", 0.0),
    ]
    fields = dict(
        task="aime24",
        problem_id="1",
        sample_idx=0,
        prompt="<user>What is 2^10?<eos><assistant>",
        generation=GENERATION,
        finish_reason="stop",
        tool_calls=calls,
        hints=[InsertedHint("after_output", GENERATION.index(HINT, 1), HINT)],
    )
    return TrajectoryRecord(**(fields | changes))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def masked_text(tokenizer, encoded, keep: int) -> str:
    ids = [t for t, m in zip(encoded.completion_ids, encoded.completion_mask) if m == keep]
    return tokenizer.decode(ids)


def test_outputs_are_masked_and_everything_the_model_wrote_is_trained(tokenizer):
    encoded = encode_trajectory(tokenizer, record(), train_on_hints=True)
    assert masked_text(tokenizer, encoded, 0) == "```output\n1024\n```\n```output\n4\n```\n"
    outputs_removed = GENERATION.replace("```output\n1024\n```\n", "").replace("```output\n4\n```\n", "")
    assert masked_text(tokenizer, encoded, 1) == outputs_removed + "<eos>"
    prompt_ids = tokenizer(record().prompt, add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[: len(prompt_ids)] == prompt_ids == encoded.prompt_ids


def test_labels_ignore_the_prompt_and_the_outputs(tokenizer):
    encoded = encode_trajectory(tokenizer, record())
    labels = encoded.labels
    assert len(labels) == len(encoded.input_ids)
    assert labels[: len(encoded.prompt_ids)] == [IGNORE_INDEX] * len(encoded.prompt_ids)
    trained = [t for t in labels if t != IGNORE_INDEX]
    assert trained == [t for t, m in zip(encoded.completion_ids, encoded.completion_mask) if m]
    assert tokenizer.decode(trained).count(HINT) == 1  # the inserted one is the environment's text


def test_output_typed_by_the_model_after_the_tool_limit_stays_trained():
    rec = record(tool_calls=record().tool_calls[:1], hints=[])
    spans = inserted_spans(rec)
    assert [GENERATION[s:e] for s, e in spans] == ["```output\n1024\n```\n"]


def test_no_end_of_sequence_token_after_a_cut_trajectory(tokenizer):
    encoded = encode_trajectory(tokenizer, record(finish_reason="length"))
    assert encoded.completion_ids[-1] != tokenizer.eos_token_id
