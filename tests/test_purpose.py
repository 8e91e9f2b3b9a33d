"""Cell purpose: the heuristic against the hand-labelled cells, and the LLM judge's plumbing (parsing,
cache, failures), including against a real OpenAI-compatible server (llama.cpp + SmolLM2) on loopback."""

import asyncio
import json
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from conftest import llama_cpp_server, smollm2_path

from cortbench.analyzers.code import cells_of
from cortbench.analyzers.judge import (
    JUDGE,
    JUDGE_FAILED,
    JUDGE_INSTRUCTIONS,
    PurposeJudge,
    agreement,
    parse_verdict,
)
from cortbench.analyzers.purpose import (
    _WHITESPACE,
    CATEGORIES,
    CellPurpose,
    Found,
    NumberIndex,
    RecordView,
    classify_cells,
    code_facts,
    executed_cells,
    find_numbers,
    latex_to_python,
    normalise_expression,
    output_values,
    prose_mask,
    purpose_rows,
    same,
)
from cortbench.harness.backends import BackendError, get_backend
from cortbench.harness.records import InsertedHint, ToolCall, TrajectoryRecord
from cortbench.harness.rollout import Completion
from cortbench.harness.text_calls import tool_calls_from_text

LABELS = Path(__file__).parent / "data" / "purpose_labels.jsonl"
ROWS = [json.loads(line) for line in LABELS.read_text().splitlines()]
ORIGINAL = [r for r in ROWS if "source" not in r]  # the first 108 rows, as the figures of docs/purpose.md
ISSUE_13 = [r for r in ROWS if r.get("source") == "issue-13"]  # retry chains and stray numbers


def record_of(row: dict) -> TrajectoryRecord:
    """The labelled cell as the last executed cell of a record (earlier cells stay in its context)."""
    gen = row["context"] + f"```python\n{row['code']}\n```\n```output\n{row['output']}\n```\n"
    calls = [ToolCall(c.code, c.output, "ok" if c.ok else "error", 0.0) for c in tool_calls_from_text(gen)]
    return TrajectoryRecord("labels", row["id"], 0, row["problem"], gen, "stop", tool_calls=calls)


def predicted(rows):
    return [classify_cells(record_of(r))[-1] for r in rows]


# --- the heuristic against the labelled set ---------------------------------------------------------------


def test_labelled_set_is_varied_and_well_formed():
    assert len(ROWS) >= 80
    assert len({r["id"] for r in ROWS}) == len(ROWS)
    labels = [r["label"] for r in ROWS]
    assert 0.35 < labels.count("verification") / len(labels) < 0.65
    assert {r["domain"] for r in ROWS} >= {
        "algebra",
        "number theory",
        "geometry",
        "combinatorics",
        "probability",
    }
    for r in ROWS:
        assert r["split"] in ("dev", "heldout") and r["reason"] and set(r["categories"]) <= set(CATEGORIES)
    assert len(ORIGINAL) == 108 and len(ISSUE_13) == len(ROWS) - 108 == 32


def test_heuristic_agrees_with_the_labels():
    """Measured (docs/purpose.md): 102/108 = 0.944, kappa 0.888; dev 61/64, held-out 41/44 = 0.932."""
    gold = [r["label"] for r in ORIGINAL]
    labels = predicted(ORIGINAL)
    overall = agreement(gold, [p.purpose for p in labels])
    assert overall.n == 108 and overall.accuracy >= 0.94 and overall.kappa >= 0.88, overall
    held = [i for i, r in enumerate(ORIGINAL) if r["split"] == "heldout"]
    heldout = agreement([gold[i] for i in held], [labels[i].purpose for i in held])
    assert heldout.n == 44 and heldout.accuracy >= 0.93, heldout
    assert all(p.method == "heuristic" and p.evidence for p in labels)


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_heuristic_agrees_on_retries_and_stray_numbers(split):
    """Issue 13, item 15 (docs/purpose.md): 6/22 dev and 7/10 held-out before the retry rule and the
    stricter number matches, 22/22 and 10/10 after (kappa 1.0)."""
    rows = [r for r in ISSUE_13 if r["split"] == split]
    result = agreement([r["label"] for r in rows], [p.purpose for p in predicted(rows)])
    assert (
        result.n == {"dev": 22, "heldout": 10}[split] and result.accuracy >= 0.9 and result.kappa >= 0.75
    ), result


def test_heuristic_categories_against_the_labels():
    """Measured: micro precision 0.88, recall 0.91 (held-out was seen while fixing category rules)."""
    hits = predicted_total = gold_total = overlap = 0
    for row, label in zip(ORIGINAL, predicted(ORIGINAL)):
        gold, pred = set(row["categories"]), set(label.categories)
        assert pred and pred <= set(CATEGORIES)
        hits += len(gold & pred)
        predicted_total += len(pred)
        gold_total += len(gold)
        overlap += bool(gold & pred)
    assert hits / predicted_total >= 0.87 and hits / gold_total >= 0.90 and overlap / len(ORIGINAL) >= 0.95


def test_heuristic_is_deterministic_and_fast():
    start = time.perf_counter()
    first = predicted(ROWS)
    assert time.perf_counter() - start < 10  # ~1 s here; two shared cores
    assert predicted(ROWS) == first


def test_evidence_says_what_decided():
    by_id = {r["id"]: r for r in ROWS}
    (label,) = classify_cells(record_of(by_id["nt-crt-v"]))
    assert label.purpose == "verification" and "216" in label.evidence and "double-check" in label.evidence
    (label,) = classify_cells(record_of(by_id["nt-pow-c"]))
    assert label.purpose == "calculation" and "new" in label.evidence


def _cells_record(prompt: str, *steps: tuple[str, str, str, str]) -> TrajectoryRecord:
    """A record of (prose before the cell, code, output, status) steps."""
    gen = "".join(f"{prose}```python\n{code}\n```\n```output\n{out}\n```\n" for prose, code, out, _ in steps)
    calls = [ToolCall(code, out, status, 0.0) for _, code, out, status in steps]
    return TrajectoryRecord("t", "p", 0, prompt, gen, "stop", tool_calls=calls)


_SUM = "from sympy import *\nn = symbols('n')\nprint(summation(1/(k*(k+1)), (k, 1, n)))"
_NAME_ERROR = "Traceback (most recent call last):\nNameError: name 'k' is not defined"


def test_a_retry_of_a_failed_cell_keeps_its_purpose():
    """Issue 13: reruns of a failing calculation were Verification because of the words around them."""
    rec = _cells_record(
        "Find a closed form of the sum of 1/(k(k+1)) for k from 1 to n.",
        ("Let me compute the sum with sympy.\n", _SUM, _NAME_ERROR, "error"),
        ("Hmm, an error. Let me verify the code and make sure it runs.\n", _SUM, _NAME_ERROR, "error"),
        ("Let me double-check by running it again.\n", _SUM.replace("n = symbols('n')", "k, n = symbols('k n')"),
         _NAME_ERROR, "error"),
        ("Now the fourth power of 17, to confirm a bound.\n", "print(17**4)", "83521", "ok"),
    )  # fmt: skip
    labels = classify_cells(rec)
    assert [p.purpose for p in labels[:3]] == ["calculation"] * 3
    assert labels[1].evidence.startswith("retry of failed cell 0 (same code): calculation")
    assert labels[2].evidence.startswith("retry of cell 0 via failed cell 1 (code ")
    assert "retry" not in labels[3].evidence  # different code after a failure: judged on its own


def test_a_retry_of_a_failed_check_stays_a_check():
    rec = _cells_record(
        "Find the remainder when 3^100 is divided by 7.",
        ("So $3^{100} \\equiv 4 \\pmod 7$ and the remainder is 4. Let me double-check.\n", "print(pow(3, 100, 7)",
         "File \"<cell-1>\", line 1\nSyntaxError: '(' was never closed", "error"),
        ("Oops. Fixed:\n", "print(pow(3, 100, 7))", "4", "ok"),
    )  # fmt: skip
    assert [p.purpose for p in classify_cells(rec)] == ["verification", "verification"]


def test_a_retry_after_the_text_worked_out_its_result_is_a_check():
    rec = _cells_record(
        "Compute C(12, 5).",
        ("Let me compute it.\n", "from math import comb\nprint(comb(12 5))",
         "File \"<cell-1>\", line 2\nSyntaxError: invalid syntax. Perhaps you forgot a comma?", "error"),
        ("By hand meanwhile: $\\frac{95040}{120} = 792$. Rerunning the fixed cell.\n",
         "from math import comb\nprint(comb(12, 5))", "792", "ok"),
    )  # fmt: skip
    first, second = classify_cells(rec)
    assert first.purpose == "calculation" and second.purpose == "verification"
    assert (
        "792 worked out since the failure" in second.evidence and "retry of failed cell 0" in second.evidence
    )


@pytest.mark.parametrize(
    ("prose", "output"),
    [
        (
            "Let me get sympy to find the partial sum of $\\sum_{k=1}^{n} \\frac{1}{k(k+1)}$.\n",
            "1 - 1/(n + 1)",
        ),
        (
            "Let me find the partial sum of $\\sum_{k=1}^{n} \\frac{1}{k(k+1)}$.\n",
            "Sum(1/(k*(k + 1)), (k, 1, n))",
        ),
        ("Let me compute $\\lim_{x \\to 0} \\frac{1 - \\cos x}{x}$.\n", "0"),
        ("Let me compute $\\prod_{j=2}^{n} (1 - 1/j^2)$ with sympy.\n", "(n + 1)/(2*n)"),
    ],
)
def test_limits_and_indices_are_not_results(prose, output):
    """Issue 13: the 1 of \\sum_{k=1}^{n} was taken for a stated result that the cell's 1 repeated."""
    (label,) = classify_cells(_cells_record("Evaluate it.", (prose, "print(f())", output, "ok")))
    assert label.purpose == "calculation" and "stated just before" not in label.evidence, label.evidence


def test_an_unevaluated_sympy_object_prints_no_values():
    assert output_values("Sum(1/(k*(k + 1)), (k, 1, n))").values == ()
    assert output_values("Integral(x**2, (x, 0, 1)) 7").values == (7,)


def test_categories_follow_the_code():
    def cats(code, output="1"):
        rec = TrajectoryRecord("t", "p", 0, "", f"```python\n{code}\n```\n```output\n{output}\n```\n", "stop",
                               tool_calls=[ToolCall(code, output, "ok", 0.0)])  # fmt: skip
        return classify_cells(rec)[0].categories

    assert "Solving Equations and Systems of Equations" in cats(
        "from sympy import *\nx = symbols('x')\nprint(solve(x**2 - 4, x))"
    )
    assert "Prime Number Testing and Factorization" in cats(
        "import sympy\nprint(sympy.factorint(360), sympy.isprime(97))"
    )
    assert "Modular Arithmetic and Number Theory Operations" in cats("print(pow(3, 100, 7))")
    assert "Linear Algebra: Matrix and Vector Operations" in cats(
        "import numpy as np\nprint(np.linalg.det(np.eye(3)))"
    )
    assert "Symbolic Integration, Differentiation, and Proof Verification" in cats(
        "from sympy import *\nx = symbols('x')\nprint(integrate(sin(x), (x, 0, pi)))"
    )
    assert "Data Visualization and Plotting" in cats("import matplotlib.pyplot as plt\nplt.plot([1, 2])", "")
    assert "Property Verification and Theorem Checking" in cats("assert 2 + 2 == 4\nprint('ok')", "ok")
    assert "Dynamic Programming and Recurrence Relations" in cats(
        "f = [1, 1]\nfor i in range(20):\n    f.append(f[-1] + f[-2])\nprint(f[-1])"
    )
    assert "Boolean Algebra and Logic Operations" in cats(
        "print(sum(1 for n in range(64) if n & (n - 1) == 0))"
    )


def test_rows_join_on_the_cell_key():
    recs = [record_of(r) for r in ROWS[:5]]
    rows = purpose_rows(recs)
    assert len(rows) == sum(len(r.tool_calls) for r in recs)
    assert set(rows[0]) == {"task", "problem_id", "sample_idx", "cell_index", "purpose", "purpose_categories",
                            "purpose_evidence", "purpose_method"}  # fmt: skip
    assert set(purpose_rows(recs[:1], prefix="judge")[0]) >= {"judge", "judge_categories", "judge_method"}
    assert [(r["problem_id"], r["cell_index"]) for r in rows][:2] == [(ROWS[0]["id"], 0), (ROWS[1]["id"], 0)]
    with pytest.raises(ValueError):
        purpose_rows(recs, labels=[[]])


# --- numbers, outputs and cells ----------------------------------------------------------------------------


def test_numbers_are_normalised_across_spellings():
    values = [
        f.value for f in find_numbers(r"so $x = \frac{1}{2}$, i.e. 0.5, and $N = 1{,}048{,}576$ or 1,048,576")
    ]
    assert Fraction(1, 2) in values and 0.5 in values and values.count(1048576) == 2
    assert same(0.5, Fraction(1, 2)) and same(Fraction(-1, 6), -1 / 6) and same(84.0, 84)
    assert same(0.33333333, 0.33, text_decimals=2) and not same(0.34, 0.33, text_decimals=2)
    assert same(2**100, 1267650600228229401496703205376) and not same(2**100, 2**100 + 1)
    closed = [f.value for f in find_numbers(r"the area is $\frac{25\sqrt{3}}{4}$ and $2^{10}$ has 4 digits")]
    assert any(isinstance(v, float) and abs(v - 10.8253175) < 1e-6 for v in closed)
    assert 1024 not in closed  # 2^{10} names a quantity; it does not state a value
    assert latex_to_python(r"\dfrac{\sqrt{3}}{2}") == "((sqrt(3))/(2))"


def test_output_values_read_python_reprs():
    out = output_values("Point2D(2, 1)\n{641: 1, 6700417: 1}\n25*sqrt(3)/4 True")
    assert out.booleans and abs(out.key - 10.8253175) < 1e-6
    assert {2, 1, 641, 6700417} <= set(out.values)
    assert output_values("x**4 + 4").expressions == ("x^4+4",)
    assert output_values("[2, 7, 43, 280, 1831, 11977]").key == 11977


def test_number_index_finds_what_comparing_every_number_finds():
    """The index only skips numbers that cannot be `same` as the value: exact twins, floats within the
    tolerances (and a prose rounding), huge integers, inf, nan and other types all answer as a scan."""
    values = [3, 7, Fraction(1, 2), 0.5, 0.49999995, 0.5004, 1.41, 1.4142136, 2**80, 10**400,
              Fraction(10**400, 3), float("inf"), float("nan"), -3, 3.0000001, 1e300, 1e-13, 0.0]  # fmt: skip
    numbers = [
        Found(v, i * 5, d, i % 3 == 0) for i, (v, d) in enumerate((v, d) for v in values for d in (0, 2, 3))
    ]
    index = NumberIndex(numbers)
    for value in [*values, 1.414, 1.4149, 0.4996, 2.0**80, 3.0, Fraction(6, 2), -3.0000004]:
        for start, end, accept in ((0, 10**9, None), (40, 200, lambda f: f.claim), (7, 8, None)):
            scan = next((f for f in reversed(numbers) if start <= f.pos < end and (accept is None or accept(f))
                         and same(value, f.value, f.decimals)), None)  # fmt: skip
            assert index.latest(value, start, end, accept) == scan, (value, start, end)
    assert index.between(10, 21) == tuple(numbers[2:5])


def test_whitespace_is_what_a_regex_space_matches():
    space = re.compile(r"\s")
    assert [c for c in map(chr, range(sys.maxunicode + 1)) if space.match(c)] == list(_WHITESPACE)


def test_prose_before_each_cell_is_normalised_as_a_whole():
    parts = ["Let $f(x) = x^{2} \\cdot 3 + 2x$ and \\left( a ** 2 \\right) \\ti\n",
             ("print(x**2*3 + 2*x)", "3*x**2 + 2*x"), "mes so $3x^2+2x$ \\times 2 \\\n",
             ("print(1)", "1"), ",\\quad done $\\displaystyle \\frac{1}{2}$"]  # fmt: skip
    gen, calls = "", []
    for part in parts:
        if isinstance(part, str):
            gen += part
        else:
            calls.append(ToolCall(part[0], part[1], "ok", 0.0))
            gen += f"```python\n{part[0]}\n```\n```output\n{part[1]}\n```\n"
    hint = InsertedHint("before_code", gen.index("```python") - 3, "Let me check.")  # runs into a block
    view = RecordView(TrajectoryRecord("t", "p", 0, "", gen, "stop", tool_calls=calls, hints=[hint]))
    assert len(view.cells) == 2
    for cell in view.cells:
        assert view.normalised_before(cell) == normalise_expression(view.prose[: cell.start])


def test_prose_mask_blanks_blocks_and_hints_once_even_when_they_overlap():
    gen = "A 1.\n```python\nprint(2)\n```\n```output\n2\n```\nB 3.\n"
    hints = [
        InsertedHint("before_code", 2, "1.\n```py"),
        InsertedHint("x", -5, "ab"),
        InsertedHint("x", 40, "z" * 99),
    ]
    rec = TrajectoryRecord(
        "t", "p", 0, "", gen, "stop", tool_calls=[ToolCall("print(2)", "2", "ok", 0.0)], hints=hints
    )
    chars = list(gen)
    for a, b in [
        (m.start(), m.end()) for m in re.finditer(r"```python.*?```\n```output.*?```\n", gen, re.S)
    ] + [(2, 2 + 9), (0, 0), (40, len(gen))]:
        chars[a:b] = [c if c == "\n" else " " for c in chars[a:b]]
    assert prose_mask(rec) == "".join(chars) and len(prose_mask(rec)) == len(gen)


def test_code_facts_from_one_walk():
    """Facts that depend on where a node sits: in a loop's body or elsewhere in it, under a
    comprehension, in a print's arguments, in the last definition of a recursive function."""
    f = code_facts(
        "def f(n):\n    return f(n - 1) if n else 1\n"
        "def g(n):\n    return g(n - 1)\n"
        "def g(n):\n    return n\n"
        "for i in range(3):\n    if i:\n        print(i)\n        break\nelse:\n    print(i == 2)\n"
        "a = [0, 1]\nwhile len(a) < 9:\n    a.append(a[-1] + a[-2])\n"
        "print(a[0] == 0, print(a[1] == 1))\nprint([x == 1 for x in a])\nprint(all(x >= 0 for x in a))\n"
        "if a[0] == 0:\n    pass\nelse:\n    pass\n"
    )
    assert f.recursion  # f calls itself; the first g does too, but the second g is the one that counts
    assert f.print_in_loop and f.filtered and f.breaks and f.recurrence and f.while_loop
    assert f.loops == 4 and f.for_statements == 1  # for, while and two comprehensions
    # print(i == 2) in a loop's else: no; a[0] == 0 twice (two prints), a[1] == 1 once, all(), the if/else
    assert f.printed_checks == 5
    g = code_facts(
        "def g(n):\n    return g(n - 1)\ndef g(n):\n    return n\nfor x in range(3):\n    pass\nprint(x)"
    )
    assert not g.recursion and not g.print_in_loop and not g.filtered and not g.breaks


def test_cells_pair_with_tool_calls_and_skip_unexecuted_blocks():
    gen = (
        "Let me compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\n"
        "So 42. It looks tedious, and we can use python code to simplify the reasoning.\n"
        "```python\nprint(1 / 0)\n```\n```output\nTraceback (most recent call last):\nZeroDivisionError: division by zero\n```\n"
        "Then the final block never ran:\n```python\nprint(1)\n```\n"
    )
    hint = "It looks tedious, and we can use python code to simplify the reasoning.\n"
    rec = TrajectoryRecord(
        "t", "p", 0, "", gen, "tool_limit",
        tool_calls=[ToolCall("print(6 * 7)", "42", "ok", 0.0), ToolCall("print(1 / 0)", "ZeroDivisionError", "error", 0.0)],
        hints=[InsertedHint("before_code", gen.index(hint), hint)],
    )  # fmt: skip
    cells = executed_cells(rec)
    assert [c.index for c in cells] == [0, 1] and [c.failed for c in cells] == [False, True]
    assert gen[cells[0].start :].startswith("```python\nprint(6 * 7)") and gen[: cells[1].end].endswith(
        "```\n"
    )
    labels = classify_cells(rec)
    assert [p.cell_index for p in labels] == [0, 1]
    assert "tedious" not in labels[1].evidence  # inserted hints are not the model's words
    # a record without tool_calls (another tool's): read back from the text when it is read, so
    # that the purpose and code tables see the same cells
    transcript = TrajectoryRecord.from_dict({"task": "t", "problem_id": "p", "sample_idx": 0, "prompt": "",
                                             "generation": gen, "finish_reason": "stop"})  # fmt: skip
    assert [c.output for c in executed_cells(transcript)][0] == "42"
    assert [c.call.output for c in cells_of(transcript) if c.call][0] == "42"
    assert executed_cells(TrajectoryRecord("t", "p", 0, "", gen, "stop", tool_calls=[])) == []


# --- agreement ----------------------------------------------------------------------------------------------


def test_agreement_accuracy_kappa_confusion():
    perfect = agreement(["calculation", "verification"], ["calculation", "verification"])
    assert perfect.accuracy == 1 and perfect.kappa == 1
    a = agreement(["calculation"] * 6 + ["verification"] * 4, ["calculation"] * 5 + ["verification"] * 5)
    assert a.accuracy == 0.9 and a.confusion["calculation"]["verification"] == 1
    assert a.kappa == pytest.approx((0.9 - 0.5) / 0.5)  # p_e = 0.6 * 0.5 + 0.4 * 0.5
    chance = agreement(["calculation", "verification"] * 5, ["calculation"] * 10)
    assert chance.kappa == 0 and chance.accuracy == 0.5
    with pytest.raises(ValueError):
        agreement(["calculation"], [])


# --- the judge's answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "purpose", "categories"),
    [
        ('{"purpose": "verification", "categories": ["Prime Number Testing and Factorization"], "reason": "x"}',
         "verification", ("Prime Number Testing and Factorization",)),
        ("<think>It could be verification... {\"purpose\": \"verification\"}</think>\n"
         '```json\n{"purpose": "Calculation", "categories": [9, "modular arithmetic and number theory operations"]}\n```',
         "calculation", ("Modular Arithmetic and Number Theory Operations", "Prime Number Testing and Factorization")),
        ("{'purpose': 'verification', 'categories': ['Symbolic Integration',],}", "verification",
         ("Symbolic Integration, Differentiation, and Proof Verification",)),
        ("Purpose: calculation\nCategories: none", "calculation", ()),
        ("Verification.", "verification", ()),
        ('{"purpose": "verification", "categories": ["Made Up Category"]}', "verification", ()),
    ],
)  # fmt: skip
def test_verdicts_parse_robustly(answer, purpose, categories):
    verdict = parse_verdict(answer)
    assert verdict is not None and verdict.purpose == purpose and verdict.categories == categories


@pytest.mark.parametrize("answer", ["", "I think it computes something.", '{"purpose": "both"}',
                                    "calculation or verification?"])  # fmt: skip
def test_unusable_answers_are_none(answer):
    assert parse_verdict(answer) is None


class FakeJudge:
    """A Generator whose answers are scripted; counts calls and the most requests in flight."""

    def __init__(self, answer="", *, delay=0.0, error=None):
        self.answer, self.delay, self.error = answer, delay, error
        self.calls = self.inflight = self.peak = 0

    def render_chat(self, messages):
        return "<user>" + messages[0]["content"] + "<assistant>"

    async def complete(self, prompt, *, max_tokens, stop):
        self.calls += 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await asyncio.sleep(self.delay)
            if self.error is not None:
                raise self.error
            answer = self.answer(prompt) if callable(self.answer) else self.answer
            return Completion(answer, "stop", 5)
        finally:
            self.inflight -= 1

    def count_tokens(self, text):
        return len(text) // 4


def records(n=4):
    return [record_of(r) for r in ROWS[:n]]


async def test_judge_labels_caches_and_bounds_concurrency(tmp_path):
    def answer(prompt):
        purpose = "verification" if "verify" in prompt.split("### Code cell")[0][-400:] else "calculation"
        return f'{{"purpose": "{purpose}", "categories": ["Modular Arithmetic and Number Theory Operations"], "reason": "r"}}'

    gen = FakeJudge(answer, delay=0.02)
    cache = tmp_path / "verdicts.jsonl"
    judge = PurposeJudge(gen, cache, "fake-judge", concurrency=2)
    first = await judge.classify_many(records(6) * 2)  # each record twice: identical prompts, one request
    assert gen.calls == 6 and gen.peak <= 2 and judge.stats.judged == 12 and judge.stats.failures == 0
    assert all(p.method == JUDGE for labels in first for p in labels)
    assert len(cache.read_text().splitlines()) == 6

    again = PurposeJudge(gen, cache, "fake-judge")
    assert await again.classify_many(records(6)) == first[:6]
    assert gen.calls == 6 and again.stats.cached == 6 and again.stats.requests == 0

    other = PurposeJudge(gen, cache, "another-judge")  # the model name is part of the key
    await other.classify(records(1)[0])
    assert gen.calls == 7


@pytest.mark.parametrize(
    ("generator", "kind"),
    [
        (FakeJudge(error=BackendError("http://x/v1/completions answered HTTP 500")), "http"),
        (FakeJudge(error=httpx.ReadError("boom")), "http"),
        (FakeJudge("sure", delay=5), "timeout"),
        (FakeJudge("I am not sure what you mean."), "unparseable"),
        (FakeJudge(error=KeyError("choices")), "error"),
    ],
)
async def test_judge_failures_fall_back_to_the_heuristic(tmp_path, generator, kind):
    judge = PurposeJudge(generator, tmp_path / "c.jsonl", "fake", timeout_s=0.2)
    recs = records(3)
    labels = [p for r in recs for p in await judge.classify(r)]
    heuristic = [p for r in recs for p in classify_cells(r)]
    assert all(p.method == JUDGE_FAILED and kind in p.evidence for p in labels)
    assert [(p.purpose, p.categories) for p in labels] == [(h.purpose, h.categories) for h in heuristic]
    assert judge.stats.failed == {kind: 3} and "fell back" in judge.stats.summary()


def test_judge_that_cannot_render_is_refused_up_front(tmp_path):
    gen = get_backend("openai", base_url="http://127.0.0.1:9/v1", model="m")  # no tokenizer: cannot render
    with pytest.raises(BackendError, match="cannot render"):
        PurposeJudge(gen, tmp_path / "c.jsonl", "m")


# --- the judge against a real OpenAI-compatible server ------------------------------------------------------


class ChatTemplateTokenizer:
    """The GGUF's own chat template behind the two methods the openai backend uses."""

    def __init__(self, template, **special):
        self.template, self.special = template, special

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        from cortbench.harness.chat import render_chat_template

        return render_chat_template(self.template, messages, **self.special)

    def __call__(self, text, add_special_tokens=False):
        return type("Encoding", (), {"input_ids": [0] * ((len(text) + 3) // 4)})()


@pytest.fixture(scope="module")
def smollm2_server():
    model = smollm2_path()
    import llama_cpp

    vocab = llama_cpp.Llama(model, vocab_only=True, verbose=False)
    tokenizer = ChatTemplateTokenizer(vocab.metadata["tokenizer.chat_template"], eos_token="<|im_end|>")
    with llama_cpp_server(model) as url:
        yield url, tokenizer


def test_judge_prompt_holds_the_definitions_the_categories_and_the_cell(tmp_path):
    judge = PurposeJudge(FakeJudge(), tmp_path / "c.jsonl", "fake", context_chars=300)
    rec = record_of(next(r for r in ROWS if r["id"] == "seq-closed-v"))
    cell = executed_cells(rec)[-1]
    (message,) = judge.messages(rec, cell)
    text = message["content"]
    assert text.startswith(JUDGE_INSTRUCTIONS) and all(c in JUDGE_INSTRUCTIONS for c in CATEGORIES)
    assert "NOT explicitly present" in text and "ALREADY reached" in text and '"purpose"' in text
    assert rec.prompt in text and cell.code in text and cell.output in text
    assert "(earlier part omitted)" in text and rec.generation[cell.start - 300 : cell.start].strip() in text
    assert rec.generation[: cell.start - 300].strip()[:200] not in text


# The full prompt is ~1,000 tokens: on two shared cores SmolLM2 needs ~20 s to read it. The plumbing
# under test (HTTP, parsing, fallbacks, cache) is the same with the definitions and the format alone.
SHORT_INSTRUCTIONS = JUDGE_INSTRUCTIONS.split("\n\nAlso name")[0] + (
    '\n\nAnswer with one line of JSON: {"purpose": "calculation" or "verification", "categories": [], "reason": "..."}'
)


async def test_judge_through_a_real_server_then_from_the_cache(smollm2_server, tmp_path):
    url, tokenizer = smollm2_server
    cache = tmp_path / "judge-cache.jsonl"
    recs = [record_of(r) for r in ROWS if r["id"] in ("nt-pow-c", "nt-crt-v", "comb-paths-v")]
    heuristic = [classify_cells(r) for r in recs]

    def judge_at(base_url):
        gen = get_backend("openai", base_url=base_url, model="smollm2", tokenizer=tokenizer, temperature=0.0,
                          retries=1, backoff_s=0.01)  # fmt: skip
        return PurposeJudge(gen, cache, "SmolLM2-135M-Instruct", concurrency=2, max_tokens=40, context_chars=600,
                            prefill=True, timeout_s=120, instructions=SHORT_INSTRUCTIONS)  # fmt: skip

    judge = judge_at(url)
    first = await judge.classify_many(recs)
    # SmolLM2 answers poorly: each cell is either a parsed verdict or a fallback, never an exception.
    for labels, fallback in zip(first, heuristic):
        assert [p.cell_index for p in labels] == [p.cell_index for p in fallback]
        for p, h in zip(labels, fallback):
            assert isinstance(p, CellPurpose) and p.method in (JUDGE, JUDGE_FAILED)
            assert p.purpose in ("calculation", "verification") and set(p.categories) <= set(CATEGORIES)
            if p.method == JUDGE_FAILED:
                assert (p.purpose, p.categories) == (h.purpose, h.categories)
    stats = judge.stats
    assert stats.cells == 3 and stats.requests == 3 and stats.judged + stats.failures == 3
    assert set(stats.failed) <= {"unparseable"}  # the server answered every request
    assert len(cache.read_text().splitlines()) == 3

    second = judge_at(url)
    assert await second.classify_many(recs) == first
    assert second.stats.requests == 0 and second.stats.cached == 3 and second.stats.failed == stats.failed

    from conftest import free_port

    offline = judge_at(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens: any request would fail
    assert await offline.classify_many(recs) == first and offline.stats.failed == stats.failed


async def test_unreachable_judge_falls_back_for_every_cell(tmp_path):
    from conftest import free_port

    tokenizer = ChatTemplateTokenizer("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    gen = get_backend("openai", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", tokenizer=tokenizer,
                      retries=2, backoff_s=0.01)  # fmt: skip
    judge = PurposeJudge(gen, tmp_path / "c.jsonl", "m")
    recs = records(5)
    labels = await judge.classify_many(recs)
    assert [[(p.purpose, p.method) for p in ls] for ls in labels] == [
        [(p.purpose, JUDGE_FAILED) for p in classify_cells(r)] for r in recs
    ]
    assert judge.stats.failed == {"http": 5} and judge.stats.judged == 0
    assert not (tmp_path / "c.jsonl").exists()  # failures are not cached: a rerun asks again
