"""Exact stop detection and segmentation of the CoRT text protocol."""

import pytest

from cortbench.harness.fences import (
    closed_code,
    cut_at_stop,
    output_block,
    restore_stop,
    split_segments,
    stripped_stop,
)


@pytest.mark.parametrize(
    "text, code",
    [
        ("Let me compute.\n```python\nprint(1 + 1)\n```\n", "print(1 + 1)"),
        ("```python\nx = 1\nprint(x)\n```", "x = 1\nprint(x)"),
        ("a\n```python  \ny = 2\n```  \n", "y = 2"),
        ("```python\ns = '```'\nprint(s)\n```\n", "s = '```'\nprint(s)"),  # a fence inside a string line
    ],
)
def test_closed_python_block_is_detected(text, code):
    assert closed_code(text) == code


@pytest.mark.parametrize(
    "text",
    [
        "Some `inline` code `x`\n",  # a backtick at a line end is not a fence
        "```python\nprint(1)\n",  # unclosed at the length limit: never executed
        "```\nplain block\n```\n",  # not a python block
        "```python\nprint(1)\n```\n```output\n1\n```\n",  # ends with an output block
        "```python\nprint(1)\n```\nThe answer is 2.",  # the closing fence is not at the end
        "",
    ],
)
def test_no_code_to_run(text):
    assert closed_code(text) is None


def test_restore_stop_adds_the_fence_once():
    assert restore_stop("```python\nx=1\n", "```\n") == "```python\nx=1\n```\n"
    assert restore_stop("```python\nx=1\n```\n", "```\n") == "```python\nx=1\n```\n"
    assert restore_stop("done", None) == "done"


def test_split_segments_in_order():
    generation = (
        "Think.\n```python\nprint(2**10)\n```\n" + output_block("1024") + "So the answer is \\boxed{1024}."
    )
    kinds = [(s.kind, s.text) for s in split_segments(generation)]
    assert kinds == [
        ("text", "Think.\n"),
        ("code", "print(2**10)"),
        ("output", "1024"),
        ("text", "So the answer is \\boxed{1024}."),
    ]
    assert "".join(s.text for s in split_segments("no code at all")) == "no code at all"


@pytest.mark.parametrize(
    "so_far, matched",
    [
        ("Compute.\n```python\nprint(1)\n", "```\n"),  # closes python
        ("I need scipy.\n```bash\npip install scipy\n", "```\n"),  # closes another block
        ("Output:\n```\n42\n", "```\n"),  # closes a plain block
        ("So the answer is \\boxed{42}.", None),  # an end of sequence
        ("So the answer is \\boxed{42}.\n", None),  # after a newline, outside any block
        ("```python\nx = 1\n```\n```output\n\n```\nDone.\n", None),  # every block closed
    ],
)
def test_a_stripped_stop_is_told_from_an_end_of_sequence(so_far, matched):
    assert stripped_stop(so_far, ("```\n",)) == matched


def test_cut_at_stop_keeps_the_first_stop_and_drops_what_the_token_ran_past():
    assert cut_at_stop("ls\n```\n\nThe", ("```\n",)) == ("ls\n```\n", "```\n")
    assert cut_at_stop("no fence here", ("```\n",)) == ("no fence here", None)
