"""The answer grader: math-verify as the CoRT protocol runs it, in a pool that survives bad samples.

Everything here uses the real math-verify. The benchmark files come from ../shared/data/cort.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from latex2sympy2_extended.sets import FiniteSet
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from cortbench.analyzers.grading import Grade, Grader, GradingError, _fingerprint, grade

TASKS = ("aime24", "aime25", "amc23", "math500", "olympiad_bench")
SLOW = "5", "The answer is \\boxed{10^{10^{8}}}."  # verify evaluates the power: minutes of big-int work
FAR = "Let me reconsider the case analysis once more, carefully checking each of the four cases in turn."


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, timeout_s=10) as pool:
        yield pool


def naive(gold: str, response: str) -> bool:
    """The protocol, written out: what the pool must agree with."""
    prediction = parse(response, extraction_config=(ExprExtractionConfig(), LatexExtractionConfig()))
    return verify(parse("$" + gold + "$"), prediction)


def _rows(cort_data, task: str) -> list[dict]:
    return [json.loads(line) for line in (cort_data / f"test_{task}.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# The benchmark golds against themselves

# Golds with their $...$ delimiters taken out, as a model writes them inside \boxed{}. The one that
# then fails is a data fact: OlympiadBench id 1970 (row 76) carries a sentence's final period after
# its closing "$". Inside the box, "(-\infty, 0) \cup\{1\}." does not parse, and math-verify falls
# back to a lower-priority match (0).
MODEL_STYLE_EXCEPTIONS = {("olympiad_bench", 76): "$(-\\infty, 0) \\cup\\{1\\}$."}


def test_every_gold_answer_grades_correct_against_itself(grader, cort_data):
    cases = []
    for task in TASKS:
        for row, data in enumerate(_rows(cort_data, task)):
            gold = data["gt_answer"]
            bare = re.sub(r"(?<!\\)\$", "", gold)  # keep escaped dollars (\$18.90 is money)
            cases.append(
                (task, row, "verbatim", gold, f"Let me think.\n... so the answer is \\boxed{{{gold}}}.")
            )
            cases.append(
                (task, row, "model", gold, f"Let me think.\n... so the answer is \\boxed{{{bare}}}.")
            )
    assert len(cases) == 2 * (30 + 30 + 40 + 500 + 675)
    grades = grader.grade_many((gold, response) for *_, gold, response in cases)
    assert all(g.grading_error is None and g.extracted is not None for g in grades)
    failed = {
        (task, row, style): gold for (task, row, style, gold, _), g in zip(cases, grades) if not g.correct
    }
    assert {key[:2]: gold for key, gold in failed.items() if key[2] == "verbatim"} == {}
    assert {key[:2]: gold for key, gold in failed.items() if key[2] == "model"} == MODEL_STYLE_EXCEPTIONS


# (gold, response, correct, extracted)
VARIANTS = [
    # AIME24 golds are zero-padded, AMC23 golds are float strings
    ("025", "... so the answer is \\boxed{25}.", True, "25"),
    ("025", "The answer is 25.", True, "25"),
    ("25", "\\boxed{025}", True, "025"),
    ("27.0", "\\boxed{27}", True, "27"),
    ("27.0", "\\boxed{27.0}", True, "27.0"),
    ("27.0", "\\boxed{27.5}", False, "27.5"),
    # fractions, decimals, \dfrac
    ("\\frac{1}{2}", "\\boxed{0.5}", True, "\\frac{1}{2}"),
    ("0.75", "\\boxed{\\frac{3}{4}}", True, "\\frac{3}{4}"),
    ("\\frac{1}{3}", "\\boxed{0.333333}", True, "0.333333"),
    ("\\frac{1}{3}", "\\boxed{0.3333}", False, "0.3333"),  # math-verify rounds floats to 6 places
    ("\\frac{14}{3}", "\\boxed{\\dfrac{14}{3}}", True, "\\frac{14}{3}"),
    ("\\dfrac{14}{3}", "\\boxed{\\frac{14}{3}}", True, "\\frac{14}{3}"),
    ("\\frac{14}{3}", "\\boxed{14/3}", True, "\\frac{14}{3}"),
    ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}", True, "\\sqrt{12}"),
    ("\\frac{\\pi}{3}", "\\boxed{\\pi/3}", True, "\\pi/3"),
    ("90^\\circ", "\\boxed{90}", True, "90"),
    ("x^2+2x+1", "\\boxed{(x+1)^2}", True, "(x+1)^2"),
    ("3", "\\boxed{x=3}", True, "x=3"),
    ("\\text{(C)}", "\\boxed{C}", True, "C"),
    # intervals
    (
        "(-\\infty, 0) \\cup (1, \\infty)",
        "\\boxed{(-\\infty,0)\\cup(1,\\infty)}",
        True,
        "(-\\infty,0)\\cup(1,\\infty)",
    ),
    ("[2, 5)", "\\boxed{[2,5)}", True, "[2,5)"),
    ("[2, 5)", "\\boxed{(2,5)}", False, "(2,5)"),
    ("[2,5)", "\\boxed{[2,5]}", False, "[2,5]"),
    # OlympiadBench multi-answer rows: order does not matter, all of them are needed
    ("$69$,$84$", "\\boxed{69, 84}", True, "69, 84"),
    ("$69$,$84$", "\\boxed{84, 69}", True, "84, 69"),
    ("$69$,$84$", "\\boxed{69}", False, "69"),
    ("$(1,1), (3,2)$", "\\boxed{(3,2),(1,1)}", True, "(3,2),(1,1)"),
    ("$(1,1), (3,2)$", "\\boxed{(1,1)}", False, "(1,1)"),
    ("1,3,5", "\\boxed{1, 3, 5, 7}", False, "1, 3, 5, 7"),
    # units: fine inside \text{}, not as bare letters or %; OlympiadBench's tolerances are not applied
    ("45", "\\boxed{45 \\text{ minutes}}", True, "45"),
    ("$\\frac{600}{7}$", "\\boxed{\\frac{600}{7} \\text{ km/h}}", True, "\\frac{600}{7}"),
    ("$\\frac{600}{7}$", "\\boxed{\\frac{600}{7} km/h}", False, "\\frac{600}{7} km/h"),
    ("4.2", "\\boxed{4.2\\%}", False, "4.2\\%"),  # id 2592: unit %, tolerance 0.1
    ("4.2", "\\boxed{4.25}", False, "4.25"),
    # id 2349's malformed gold `$221,$8$` (meant 221/8) reads as the set {221, 8}
    ("$221,$8$", "\\boxed{\\frac{221}{8}}", False, "\\frac{221}{8}"),
    ("$221,$8$", "\\boxed{221, 8}", True, "221, 8"),
    # wrong answers, where the answer is, no answer
    ("204", "\\boxed{205}", False, "205"),
    ("10", "The answer is $10$.", True, "10"),
    ("10", "```python\nprint(10)\n```\n```output\n10\n```\nSo the answer is \\boxed{10}.", True, "10"),
    ("10", "\\boxed{10}\n\nLet me double-check with code: x = 12", True, "10"),
    ("7", f"We first guessed \\boxed{{3}}.\n\n{FAR}\n\nSo the answer is \\boxed{{7}}.", True, "7"),
    ("7", f"\\boxed{{7}}.\n\n{FAR}\n\nActually the answer is \\boxed{{3}}.", False, "3"),
    # boxes close together with a separator are one multi-answer (math-verify's rule), not "the last"
    ("7", "first \\boxed{3}, then corrected: \\boxed{7}", False, "3,7"),
    ("7", "I don't know.", False, None),
    ("7", "", False, None),
]


@pytest.mark.parametrize("gold, response, correct, extracted", VARIANTS)
def test_answer_variants_in_process(gold, response, correct, extracted):
    assert grade(gold, response) == Grade(correct, extracted, None)
    assert naive(gold, response) is correct


def test_the_pool_agrees_with_the_naive_loop_and_keeps_order(grader):
    pairs = [(gold, response) for gold, response, *_ in VARIANTS]
    pairs = pairs + pairs[::-1] + pairs[:5]  # duplicates are graded once and returned for each pair
    grades = grader.grade_many(pairs)
    assert [g.correct for g in grades] == [naive(gold, response) for gold, response in pairs]
    assert grades == [grade(gold, response) for gold, response in pairs]
    assert asyncio.run(grader.grade_many_async(pairs)) == grades
    assert grader.grade_many([]) == []


def test_a_gold_that_does_not_parse_is_flagged():
    assert grade("", "\\boxed{1}") == Grade(False, "1", "the gold answer does not parse")


def test_the_verdict_cache_key_sees_what_verify_sees():
    # equal pickles, but math-verify reads latex2sympy's unsorted arguments: (1,2,3) is not (3,2,1)
    gold = parse("$(1, 2, 3)$")
    ordered, reversed_ = [FiniteSet(1, 2, 3)], [FiniteSet(3, 2, 1)]
    assert pickle.dumps(ordered) == pickle.dumps(reversed_)
    assert (verify(gold, ordered), verify(gold, reversed_)) == (True, False)
    assert _fingerprint(ordered) != _fingerprint(reversed_)


# ---------------------------------------------------------------------------------------------
# Timeouts, hangs, dead workers


def test_in_process_timeout():
    started = time.monotonic()
    result = grade(*SLOW, timeout_s=0.5)
    assert time.monotonic() - started < 2
    assert result == Grade(False, "10^{10^{8}}", "timeout after 0.5 s")


def test_a_slow_sample_times_out_and_the_rest_still_grade():
    pool = Grader(workers=1, timeout_s=1)
    with pool:
        grades = pool.grade_many([("1", "\\boxed{1}"), SLOW, ("2", "\\boxed{2}"), ("3", "\\boxed{4}")])
    assert grades == [
        Grade(True, "1"),
        Grade(False, "10^{10^{8}}", "timeout after 1 s"),
        Grade(True, "2"),
        Grade(False, "4"),
    ]


def _signal_worker_while_busy(signum: int) -> tuple[list[Grade], list[int], list[int]]:
    """Send `signum` to the only worker while it grinds on SLOW (sorted first: gold "0")."""
    pairs = [("0", SLOW[1])] + [(str(n), f"so \\boxed{{{n}}}") for n in range(1, 8)]
    with Grader(workers=1, timeout_s=3, grace_s=0.5) as pool:
        pool.grade_many([("1", "\\boxed{1}")])  # the worker is up
        before = pool.worker_pids
        threading.Timer(0.5, os.kill, (before[0], signum)).start()
        grades = pool.grade_many(pairs)
        return grades, before, pool.worker_pids


def test_a_hung_worker_is_killed_and_replaced():
    # a stopped process answers nothing, like a hang in C code that no signal interrupts
    started = time.monotonic()
    grades, before, after = _signal_worker_while_busy(signal.SIGSTOP)
    assert grades[0] == Grade(False, None, "timeout: worker unresponsive after 3.5 s, killed")
    assert grades[1:] == [Grade(True, str(n)) for n in range(1, 8)]
    assert before != after
    assert time.monotonic() - started < 20  # SLOW alone would run for minutes


def test_a_dead_worker_is_replaced():
    grades, before, after = _signal_worker_while_busy(signal.SIGKILL)
    assert grades[0] == Grade(False, None, "worker died (SIGKILL)")
    assert grades[1:] == [Grade(True, str(n)) for n in range(1, 8)]
    assert before != after


def test_a_worker_that_died_while_idle_costs_no_sample():
    with Grader(workers=1, timeout_s=5) as pool:
        pool.grade("1", "\\boxed{1}")
        os.kill(pool.worker_pids[0], signal.SIGKILL)
        time.sleep(0.2)
        assert pool.grade_many([("2", "\\boxed{2}"), ("3", "\\boxed{3}")]) == [
            Grade(True, "2"),
            Grade(True, "3"),
        ]


def test_workers_that_cannot_start_are_one_clear_error(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(GradingError, match="a grading worker failed to start: exit code 1"):
        with Grader(workers=1) as pool:
            pool.grade("1", "\\boxed{1}")


# ---------------------------------------------------------------------------------------------
# cortbench grade


def _cortbench(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "grade", "--workers", "1", *args],
                          input=stdin, capture_output=True, text=True, timeout=120)  # fmt: skip


LINES = [
    {"id": "aime24-0", "gold": "025", "response": "... so the answer is \\boxed{25}.", "k": 0},
    {"id": "amc23-1", "gold": "27.0", "response": "\\boxed{28}", "correct": "stale"},
    {"id": "x", "gold": "7", "response": "no idea"},
]


def test_cli_grades_a_file_and_keeps_fields_and_order(tmp_path):
    source = tmp_path / "answers.jsonl"
    slow = {"id": "slow", "gold": SLOW[0], "response": SLOW[1]}
    source.write_text("\n".join(json.dumps(line) for line in [*LINES, slow]) + "\n\n")
    done = _cortbench(str(source), "--timeout", "1")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["aime24-0", "amc23-1", "x", "slow"]
    assert rows[0] == {**LINES[0], "correct": True, "extracted": "25", "grading_error": None}
    assert rows[1] == {**LINES[1], "correct": False, "extracted": "28", "grading_error": None}
    assert rows[2] == {**LINES[2], "correct": False, "extracted": None, "grading_error": None}
    assert rows[3] == {
        **slow,
        "correct": False,
        "extracted": "10^{10^{8}}",
        "grading_error": "timeout after 1 s",
    }
    assert "4 answers: 1 correct, 1 grading errors" in done.stderr


def test_cli_reads_stdin_and_writes_a_file(tmp_path):
    out = tmp_path / "graded.jsonl"
    done = _cortbench("-", "-o", str(out), stdin="\n".join(json.dumps(line) for line in LINES))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert [json.loads(line)["correct"] for line in out.read_text().splitlines()] == [True, False, False]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "stdin, line 2: not JSON"),
        ('{"gold": "1"}', "stdin, line 2: each line needs 'gold' and 'response'"),
    ],
)
def test_cli_bad_line_is_one_clear_error(tmp_path, bad, message):
    out = tmp_path / "graded.jsonl"
    done = _cortbench("-o", str(out), stdin=json.dumps(LINES[0]) + "\n" + bad + "\n")
    assert done.returncode != 0
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half-written output
