"""RFT's filters on synthetic trajectories whose properties are known: each filter drops exactly
the trajectories it should, in order, and the per-task counts say so."""

from __future__ import annotations

import pytest

from cortbench.harness.records import ToolCall, TrajectoryRecord
from cortbench.trainers.config import ConfigError
from cortbench.trainers.rft import FILTERS, RFTSection, filter_trajectories, grade

CLEAN = "Let me compute this with python.\n```python\nprint(2 ** 10)\n```\n```output\n1024\n```\nSo the answer is \\boxed{1024}."
DELAYED = (
    "First by hand: 2^2 = 4, 4 * 4 = 16, 16 * 16 = 256, 256 * 4 = 1024, so 2^10 = 1024.\n"
    "```python\nprint(2 ** 10)\n```\n```output\n1024\n```\nSo the answer is \\boxed{1024}."
)
DISTRUST = (
    "```python\nprint(2 ** 10)\n```\n```output\n1024\n```\n"
    "Wait, is that right? Let me double-check manually.\nSo the answer is \\boxed{1024}."
)
FAILED = "```python\nprint(2 ** 10\n```\n```output\nSyntaxError: '(' was never closed\n```\nSo \\boxed{1024}."
NO_CODE = "2^10 = 1024, so the answer is \\boxed{1024}."
WRONG = "```python\nprint(2 ** 9)\n```\n```output\n512\n```\nSo the answer is \\boxed{512}."


def rec(
    generation: str, *, task: str = "aime24", pid: str = "1", idx: int = 0, finish: str = "stop"
) -> TrajectoryRecord:
    calls = []
    for block in generation.split("```python\n")[1:]:
        code, _, rest = block.partition("\n```\n")
        output = rest.split("```output\n", 1)[1].split("\n```", 1)[0]
        calls.append(ToolCall(code, output, "error" if "Error" in output else "ok", 0.0,
                              "SyntaxError" if "Error" in output else None))  # fmt: skip
    return TrajectoryRecord(task, pid, idx, "<user>What is 2^10?<eos><assistant>", generation, finish,
                            gold="1024", tool_calls=calls)  # fmt: skip


def test_each_filter_drops_exactly_what_it_should():
    records = [
        rec(CLEAN, idx=0),  # kept
        rec(CLEAN, idx=1, finish="length"),  # finished
        rec(WRONG, idx=2),  # correct
        rec(FAILED, idx=3),  # code_ok: a cell failed
        rec(NO_CODE, idx=4),  # code_ok: no cell at all
        rec(DELAYED, idx=5),  # no_behaviours
        rec(DISTRUST, idx=6),  # no_behaviours
        rec(CLEAN + " ", idx=7),  # unique: the same text up to whitespace
        rec(CLEAN, pid="2", idx=0),  # kept: another problem
        rec(CLEAN.replace("Let me", "I will"), pid="2", idx=1),  # per_problem_cap
        rec(CLEAN, task="amc23", pid="1"),  # kept: another task
    ]
    correct = grade(records)
    assert correct == [True, True, False, True, True, True, True, True, True, True, True]
    kept, acceptance = filter_trajectories(records, correct, RFTSection(max_per_problem=1))
    assert [(r.task, r.problem_id, r.sample_idx) for r in kept] == [
        ("aime24", "1", 0),
        ("aime24", "2", 0),
        ("amc23", "1", 0),
    ]
    assert acceptance.counts == {
        "sampled": {"aime24": 10, "amc23": 1, "all": 11},
        "finished": {"aime24": 9, "amc23": 1, "all": 10},
        "correct": {"aime24": 8, "amc23": 1, "all": 9},
        "code_ok": {"aime24": 6, "amc23": 1, "all": 7},
        "no_behaviours": {"aime24": 4, "amc23": 1, "all": 5},
        "unique": {"aime24": 3, "amc23": 1, "all": 4},
        "per_problem_cap": {"aime24": 2, "amc23": 1, "all": 3},
    }
    assert list(acceptance.counts) == list(FILTERS)
    assert acceptance.problems == {"aime24": 2, "amc23": 1, "all": 3}
    assert acceptance.problems_with_kept == {"aime24": 2, "amc23": 1, "all": 3}
    assert acceptance.rate("all") == pytest.approx(3 / 11)
    table = acceptance.markdown()
    assert "| aime24 | 10 | 9 | 8 | 6 | 4 | 3 | 2 | 20.0% | 2 / 2 |" in table


def test_relaxed_filters_keep_more():
    records = [
        rec(DELAYED, idx=0),
        rec(WRONG, idx=1),
        rec(NO_CODE, idx=2),
        rec(CLEAN, idx=3, finish="length"),
    ]
    section = RFTSection(finish_reasons=[], require_correct=False, min_tool_calls=0, exclude_behaviours=[])
    kept, acceptance = filter_trajectories(records, [True, False, True, True], section)
    assert len(kept) == 4 and acceptance.rate() == 1.0
    only_distrust = RFTSection(exclude_behaviours=["result_distrust"])
    kept, _ = filter_trajectories([rec(DELAYED), rec(DISTRUST, idx=1)], [True, True], only_distrust)
    assert [r.sample_idx for r in kept] == [0]
    with pytest.raises(ConfigError, match="unknown"):
        filter_trajectories([], [], RFTSection(exclude_behaviours=["rambling"]))
