"""Why a code cell was run: Calculation or Verification, and what kind of code it is.

The CoRT paper labels each executed cell with an LLM judge (docs/purpose.md):
- Calculation: the cell computes a result that was NOT explicitly present in the reasoning up to it.
- Verification: the cell checks a result or property that the reasoning had already reached.
and with one or more of 25 functionality categories. This module is the fast, deterministic and
explainable counterpart: weighted rules over evidence anyone can read back from the record, each
label carrying the evidence that decided it. `judge.py` runs the LLM judge, with this as fallback.

Evidence for Verification: a value the cell prints (normalised: 1/2, 0.5, \\frac{1}{2}, 1{,}024,
sqrt(3)/2) or an expression it computes already stands in the reasoning before the cell; asserts,
printed comparisons and boolean outputs; "verify", "double-check", "make sure" just before the
cell. Evidence for Calculation: the printed values are new; "compute", "solve", "let me find" just
before the cell. A cell that reruns a failed cell (the same code or an edit of it) has the purpose
of the cell it retries. Cells are the executed ones (`record.tool_calls`), in order; `cell_index` is the
position in that list, so other per-cell tables join on (task, problem_id, sample_idx, cell_index).
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property, lru_cache
from typing import Any, Literal, NamedTuple, TypeGuard

from ..harness.fences import _BLOCK  # the protocol's own block pattern: one definition of a block
from ..harness.records import TrajectoryRecord

Purpose = Literal["calculation", "verification"]
PURPOSES: tuple[Purpose, ...] = ("calculation", "verification")

# The paper's 25 functionality categories, verbatim (docs/purpose.md).
CATEGORIES: tuple[str, ...] = (
    "Solving Equations and Systems of Equations",
    "Symbolic Mathematics and Manipulation",
    "Numerical Approximation Methods",
    "Data Visualization and Plotting",
    "Pattern Recognition and Analysis",
    "Optimization and Solution Searching",
    "Property Verification and Theorem Checking",
    "Modular Arithmetic and Number Theory Operations",
    "Prime Number Testing and Factorization",
    "Geometric and Computational Geometry Calculations",
    "Probability, Statistics, and Simulations",
    "Linear Algebra: Matrix and Vector Operations",
    "Data Generation and Simulation",
    "Combinatorial Enumeration and Game Theory",
    "Graph Theory Algorithms",
    "Dynamic Programming and Recurrence Relations",
    "FFT and Signal Processing",
    "Boolean Algebra and Logic Operations",
    "Big Integer and Arbitrary-Precision Arithmetic",
    "Symbolic Integration, Differentiation, and Proof Verification",
    "Linear Programming and Optimization Techniques",
    "Algorithm Optimization and Numerical Stability",
    "Automated Theorem Proving and Symbolic Logic",
    "Data Structures Implementation and Management",
    "Fractal and Recursive Pattern Generation",
)

HEURISTIC = "heuristic"
VOCAB_WINDOW = 250  # characters of reasoning right before a cell searched for its announced intent
THRESHOLD = 1.0  # score at or above which a cell is Verification


@dataclass(frozen=True)
class CellPurpose:
    """The label of one executed cell. `method`: "heuristic", "judge" or "judge_failed" (the judge
    gave no usable verdict, so this is the heuristic's label)."""

    cell_index: int
    purpose: Purpose
    categories: tuple[str, ...]
    evidence: str  # what decided the label, readable on its own
    method: str


@dataclass(frozen=True)
class Cell:
    """An executed cell located in the generation: `start` is its "```python" fence, `code_end`
    the end of the code block, `end` the end of its output block (character offsets)."""

    index: int
    code: str
    output: str
    failed: bool
    start: int
    code_end: int
    end: int


def executed_cells(record: TrajectoryRecord) -> list[Cell]:
    """The executed cells: each python block directly followed by an output block, paired in order
    with `record.tool_calls` (code and output are taken from there; a record read without them,
    another tool's transcript, has them read back from its text by `TrajectoryRecord.from_dict`)."""
    blocks = list(_BLOCK.finditer(record.generation))
    pairs = [
        (a, b)
        for a, b in zip(blocks, blocks[1:])
        if a.group(1) == "python"
        and b.group(1) == "output"
        and not record.generation[a.end() : b.start()].strip()
    ]
    calls = record.tool_calls
    cells = []
    for i, ((code_m, out_m), call) in enumerate(zip(pairs, calls)):
        failed = not call.ok
        cells.append(Cell(i, call.code, call.output, failed, code_m.start(), code_m.end(), out_m.end()))
    return cells


def prose_mask(record: TrajectoryRecord) -> str:
    """The generation with code blocks, output blocks and inserted hints blanked out (newlines kept),
    so offsets into it are offsets into `record.generation` and only model-written prose is left."""
    text = record.generation
    spans = [(m.start(), m.end()) for m in _BLOCK.finditer(text)]
    spans += [(h.offset, h.offset + len(h.text)) for h in record.hints]
    pieces, pos = [], 0
    for a, b in _union(spans, len(text)):
        pieces += [text[pos:a], _blank(text[a:b])]
        pos = b
    pieces.append(text[pos:])
    return "".join(pieces)


def _union(spans: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Spans clipped to [0, length) and merged where they overlap or touch, in order (a hint may sit
    inside a block), so that each character is blanked once."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((max(a, 0), min(b, length)) for a, b in spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _blank(text: str) -> str:
    """Every character but newlines as a space (a whole stretch at once, not character by character)."""
    return "\n".join(" " * len(line) for line in text.split("\n"))


# --- numbers: find them in prose (LaTeX) and in interpreter output (Python reprs) -------------------

Number = int | Fraction | float

# What `\s` matches in a str pattern: the characters for which str.isspace() holds (a test checks it).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# Each pattern opens with a lookahead for the characters a match must start with: it matches exactly
# what the pattern without it matches, but lets the scan skip the other positions (the lookbehinds
# and optional groups that follow were tried at every character of 20 KB texts).
_NUMBER = re.compile(
    r"(?=[-\u2212\d])(?<![\w.^_])(?<!\^\{)(?<!_\{)(?P<neg>[-\u2212](?=\d))?"
    r"(?P<int>\d{1,3}(?:(?:,|\{,\}|\\,)\d{3})+(?![\d])|\d+)(?:\.(?P<dec>\d+))?(?:[eE](?P<exp>[-+]?\d+))?"
    r"(?P<pct>\s?\\?%)?"
)
_FRAC = re.compile(r"(?=[-\\])(?P<neg>-\s*)?\\[dt]?frac\s*\{\s*(?P<a>\d+)\s*\}\s*\{\s*(?P<b>\d+)\s*\}")
_SLASH = re.compile(r"(?=[-\d])(?<![\w.^_/])(?P<a>-?\d+)\s*/\s*(?P<b>\d+)(?![\d.])")
_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_MATH_SPLIT = re.compile(
    r"=|\\approx|\u2248|\\equiv|\u2261|\\leq?|\\geq?|<|>|\\quad|\\qquad|,|;|\\text\{[^}]*\}|\\pmod\s*\{?[^}]*\}?"
    r"|\\bmod|\\to|\\implies|\\Rightarrow|\\iff|\\ne"
)
_CLAIM = re.compile(
    r"(=|\u2248|\u2261|\\approx|\\equiv|\\boxed|:|\b(is|are|was|equals?|gives?|get|got|be|becomes?|to|yields?|"
    r"answer))[\s$({\[\\(]*$"
)


_CLAIM_FILL = _WHITESPACE + "$({[\\"  # what `_CLAIM` allows between a claim and the number
_CLAIM_LONGEST = len("\\approx")  # the longest claim word or sign, with "becomes"


class Found(NamedTuple):
    """A number found in text: its value, where, how many decimals it was written with (0 for
    exact forms), and whether it stands as a claimed result ("= 216", "is 216", "\\boxed{216}").
    A NamedTuple: texts hold hundreds of numbers, and a frozen dataclass was a tenth of the time."""

    value: Number
    pos: int
    decimals: int
    claim: bool


def _claimed(text: str, pos: int) -> bool:
    """Whether a claim word or sign (`_CLAIM`) ends the 24 characters before `pos`, past spaces, $ and
    opening brackets. None of the words and signs ends in one of those, so a match ends where they
    begin, and the search starts only as far before that as the longest word is long (the same
    answer as searching the whole window, which every number of a text paid for)."""
    window = text[max(0, pos - 24) : pos]
    return bool(_CLAIM.search(window, max(0, len(window.rstrip(_CLAIM_FILL)) - _CLAIM_LONGEST)))


@lru_cache(maxsize=512)  # the purpose and behaviour passes read the same texts
def find_numbers(text: str) -> tuple[Found, ...]:
    """Every number in prose or output: integers (1,024 / 1{,}024), decimals, percentages, a/b,
    \\frac{a}{b}, and values of closed LaTeX expressions (\\frac{25\\sqrt{3}}{4}, e - 2)."""
    found: list[Found] = []
    for m in _NUMBER.finditer(text):
        neg, whole, dec, exp, pct = m.group("neg", "int", "dec", "exp", "pct")
        digits = whole if whole.isdigit() else "".join(filter(str.isdigit, whole))
        try:
            value: Number = int(digits)
            if dec is not None or exp is not None:
                value = float(f"{digits}.{dec or 0}e{exp or 0}")
        except (ValueError, OverflowError):
            continue
        if neg:
            value = -value
        start = m.start()
        decimals = len(dec) if dec and exp is None else 0
        found.append(Found(value, start, decimals, _claimed(text, start)))
        if pct:
            found.append(Found(Fraction(value) / 100 if not isinstance(value, float) else value / 100,
                               start, decimals + 2 if decimals else 0, False))  # fmt: skip
    for pattern, literal in ((_FRAC, "frac"), (_SLASH, "/")):
        if literal not in text:  # each match holds it: a text without it needs no scan
            continue
        for m in pattern.finditer(text):
            if int(m["b"]) != 0:
                value = Fraction(int(m["a"]), int(m["b"]))
                found.append(
                    Found(
                        -value if m.groupdict().get("neg") else value, m.start(), 0, _claimed(text, m.start())
                    )
                )
    for m in _MATH.finditer(text):
        body = next(g for g in m.groups() if g is not None)
        offset = m.start() + m.group(0).index(body)
        for piece in _split_keep_pos(body, _MATH_SPLIT):
            if not _closed_form(piece[1]):
                continue
            pos = offset + piece[0]
            if not _claimed(text, pos):  # "2^{100} has 31 digits" names a quantity, it states no value
                continue
            values = evaluate(latex_to_python(piece[1]) or "")
            if values and len(values) == 1:
                found.append(Found(values[0], pos, 0, True))
    return tuple(sorted(found, key=lambda f: f.pos))


_WRITTEN_OUT = re.compile(r"\\(frac|sqrt|pi)|\be\b")
_TO_WORK_OUT = re.compile(r"\^|\\cdot|\\times|\\binom|\*|!|\(")
_TERM = re.compile(r"(?<=[\w})\s])\s*[-+]")


def _closed_form(tex: str) -> bool:
    """A value written out (\\frac{25\\sqrt{3}}{4}, e - 2), not an expression still to be worked out
    (2^{100}, 6(1 - (5/6)^6), \\frac{48 \\cdot 47}{6}): only the former is explicitly in the reasoning."""
    if not _WRITTEN_OUT.search(tex) or _TO_WORK_OUT.search(tex):
        return False
    return len(_TERM.findall(tex.strip())) <= 1


def _split_keep_pos(text: str, sep: re.Pattern[str]) -> Iterable[tuple[int, str]]:
    pos = 0
    for m in sep.finditer(text):
        yield pos, text[pos : m.start()]
        pos = m.end()
    yield pos, text[pos:]


def latex_to_python(tex: str) -> str | None:
    """A LaTeX arithmetic expression as Python source (None when it uses other commands)."""
    s = re.sub(r"\\(left|right|displaystyle)|\\[,;:! ]|\$", "", tex.strip())
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    for _ in range(8):  # innermost first: \frac{A}{B} -> ((A)/(B)), \sqrt[n]{A}, \sqrt{A}
        new = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"((\1)/(\2))", s)
        new = re.sub(r"\\sqrt\s*\[([^\[\]{}]*)\]\s*\{([^{}]*)\}", r"((\2)**(1/(\1)))", new)
        new = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"sqrt(\1)", new)
        new = re.sub(r"(?<![a-zA-Z}\]])\{([^{}]*)\}", r"(\1)", new)  # x^{2}, not \frac's own groups
        if new == s:
            break
        s = new
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\pi", "pi").replace("^", "**")
    s = s.replace("\u2212", "-").replace("\u00b7", "*")
    if "\\" in s or "{" in s:
        return None
    s = re.sub(r"(?<=[\d)])\s*(?=[a-zA-Z(])", "*", s)  # implicit products: 2sqrt(3), 2pi, (a)(b)
    return s


# sqrt (None) is exact on perfect squares: _scalar
_FUNCS: dict[str, Callable[[Any], Number] | None] = {  # (Any: abs is generic)
    "sqrt": None,
    "exp": math.exp,
    "log": math.log,
    "ln": math.log,
    "Abs": abs,
    "abs": abs,
}
_CONSTS = {"pi": math.pi, "e": math.e, "E": math.e}


def evaluate(source: str) -> list[Number] | None:
    """The numbers a Python-syntax expression stands for: one for arithmetic (exact where possible),
    several for tuples, lists, sets, dicts and unknown calls (`Point2D(2, 1)`); None if it is not
    purely numeric. Only literal arithmetic is evaluated, with a size guard, never `eval`."""
    if not source or len(source) > 400:
        return None
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    try:
        return _values(tree.body)
    except (ArithmeticError, ValueError, TypeError, RecursionError, _NotNumeric):
        return None


class _NotNumeric(Exception):
    pass


def _values(node: ast.AST) -> list[Number]:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [v for e in node.elts for v in _values(e)]
    if isinstance(node, ast.Dict):
        return [v for e in (*node.keys, *node.values) if e is not None for v in _values(e)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in _FUNCS:
        return [v for e in node.args for v in _values(e)]  # Point2D(2, 1), Rational(1, 2) ...
    return [_scalar(node)]


def _is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float literal (not a bool, a complex or a string)."""
    return type(value) in (int, float)


def _scalar(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant) and _is_number(node.value):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _scalar(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and len(node.args) == 1
    ):
        v = _scalar(node.args[0])
        function = _FUNCS[node.func.id]
        if function is None:  # sqrt
            if not isinstance(v, float) and v >= 0:
                r = Fraction(math.isqrt(v.numerator), math.isqrt(v.denominator))
                if r * r == v:
                    return _simplest(r)
            return math.sqrt(v)
        return function(v)
    if isinstance(node, ast.BinOp):
        a, b = _scalar(node.left), _scalar(node.right)
        if isinstance(node.op, ast.Add):
            return _simplest(a + b)
        if isinstance(node.op, ast.Sub):
            return _simplest(a - b)
        if isinstance(node.op, ast.Mult):
            return _simplest(a * b)
        if isinstance(node.op, ast.Div):
            exact = not isinstance(a, float) and not isinstance(b, float)
            return _simplest(Fraction(a) / Fraction(b) if exact else a / b)
        if isinstance(node.op, ast.Pow):
            if abs(float(b)) > 4096 or (
                abs(float(a)) > 1 and abs(float(b)) * math.log10(abs(float(a))) > 400
            ):
                raise _NotNumeric
            if isinstance(b, int) or (isinstance(b, Fraction) and b.denominator == 1):
                return _simplest(Fraction(a) ** int(b) if not isinstance(a, float) else a ** int(b))
            return float(a) ** float(b)
    raise _NotNumeric


def _simplest(v: Number) -> Number:
    if isinstance(v, Fraction) and v.denominator == 1:
        return int(v)
    if isinstance(v, complex):
        raise _NotNumeric
    return v


def weight(v: Number) -> float:
    """How telling it is that this value appears in the reasoning: 0 for small integers (they are
    everywhere), 0.6 for two-digit integers and simple fractions, 1 for the rest."""
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return 0.0
        if v.is_integer():
            v = int(v)
        else:
            digits = len(re.sub(r"\D", "", f"{abs(v):.12g}").strip("0"))
            return 1.0 if digits >= 3 else 0.6
    if isinstance(v, Fraction):
        return 0.6 if abs(v.numerator) <= 4 and v.denominator <= 4 else 1.0
    return 0.0 if abs(v) <= 10 else 0.6 if abs(v) < 100 else 1.0


def same(out: Number, text: Number, text_decimals: int = 0) -> bool:
    """Whether a value printed by code and one written in prose are the same number: exactly for
    exact values, to 1e-6 relative otherwise, and to the prose's rounding when it wrote >= 2 decimals."""
    if not isinstance(out, float) and not isinstance(text, float):
        return out == text
    try:
        fo, ft = float(out), float(text)
    except OverflowError:
        return False
    if math.isclose(fo, ft, rel_tol=1e-6, abs_tol=1e-12):
        return True
    return text_decimals >= 2 and abs(fo - ft) <= 0.5 * 10**-text_decimals * (1 + 1e-9)


# `same` holds only within 1e-6 relative or, for prose written with >= 2 decimals, within 0.005:
# a float further than this from a value is never `same` as it.
_NEAR_REL, _NEAR_ABS = 1e-5, 0.01
_EXACT_TYPES = (int, Fraction)


def _finite_float(v: Number) -> float | None:
    """float(v) when it is finite (as `same` would compare it), else None."""
    try:
        x = float(v)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


class NumberIndex:
    """The numbers of one text (`find_numbers`, in order of position), indexed so that "where does this
    value last stand in [start, end)?" compares it with the few numbers that can be `same` as it, not
    with all of them: reasoning holds hundreds of numbers and each cell asks about a dozen values
    (`same` ran over a million times on a 10,000-trajectory run).

    The candidates for a value are the numbers exactly equal to it (a dict) and the floats near it
    (bisection in the sorted floats, within a margin wider than `same`'s tolerances); numbers of other
    types (a complex power) and non-finite floats are always compared. Every other number fails `same`
    anyway, so the answers are those of comparing with every number."""

    def __init__(self, numbers: Sequence[Found]) -> None:
        self.numbers = tuple(numbers)
        self.positions = [f.pos for f in self.numbers]
        self._exact: dict[Number, list[int]] = defaultdict(list)  # int or Fraction -> indices
        self._always: list[int] = []  # compared with every value
        self._floats: list[int] = []  # finite floats
        for i, f in enumerate(self.numbers):
            if type(f.value) in _EXACT_TYPES:
                self._exact[f.value].append(i)
            elif isinstance(f.value, float) and _finite_float(f.value) is not None:
                self._floats.append(i)
            else:
                self._always.append(i)

    @cached_property
    def _near_for_exact(self) -> tuple[list[float], list[int]]:
        """Finite floats, sorted: an int or Fraction is compared with these by closeness."""
        return self._by_float(self._floats)

    @cached_property
    def _near_for_float(self) -> tuple[list[float], list[int]]:
        """Every number with a finite float, sorted: a float is compared with all of them by closeness."""
        exact = [i for indices in self._exact.values() for i in indices]
        return self._by_float(exact + self._floats)

    def _by_float(self, indices: Iterable[int]) -> tuple[list[float], list[int]]:
        """The finite floats of these numbers, sorted, with their indices."""
        pairs = sorted((x, i) for i in indices if (x := _finite_float(self.numbers[i].value)) is not None)
        return [x for x, _ in pairs], [i for _, i in pairs]

    def between(self, start: int, end: int) -> tuple[Found, ...]:
        """The numbers at positions start <= pos < end, in order."""
        return self.numbers[bisect_left(self.positions, start) : bisect_left(self.positions, end)]

    def latest(self, value: Number, start: int, end: int,
               accept: Callable[[Found], bool] | None = None) -> Found | None:  # fmt: skip
        """The last number at start <= pos < end that is `same` as `value` (with its own decimals)
        and that `accept` takes."""
        first, stop = bisect_left(self.positions, start), bisect_left(self.positions, end)
        for i in reversed(self._candidates(value, first, stop)):
            f = self.numbers[i]
            if (accept is None or accept(f)) and same(value, f.value, f.decimals):
                return f
        return None

    def _candidates(self, value: Number, first: int, stop: int) -> list[int] | range:
        """Indices in [first, stop), ascending, of the numbers that can be `same` as `value`."""
        exact = type(value) in _EXACT_TYPES
        x = _finite_float(value) if exact or isinstance(value, float) else None
        if not exact and x is None:  # inf, nan, or another type: compare with all, as `same` would
            return range(first, stop)
        found = [*self._exact.get(value, ()), *self._always] if exact else list(self._always)
        if x is not None:  # by closeness: a float with every finite number, an exact value with floats
            keys, at = self._near_for_exact if exact else self._near_for_float
            margin = _NEAR_ABS + _NEAR_REL * abs(x)
            found += at[bisect_left(keys, x - margin) : bisect_right(keys, x + margin)]
        return sorted(i for i in set(found) if first <= i < stop)


# --- interpreter output -------------------------------------------------------------------------------

_OPS = "+-*/^%"


@dataclass(frozen=True)
class OutputValues:
    values: tuple[Number, ...]  # in order of appearance
    key: Number | None  # the result the cell most likely exists for: the weightiest of its last line
    booleans: bool  # prints True/False
    expressions: tuple[str, ...]  # symbolic pieces (x**4 + 4), normalised


def output_values(output: str) -> OutputValues:
    values: list[Number] = []
    expressions: list[str] = []
    key: Number | None = None
    booleans = False
    for line in output.splitlines()[-60:]:
        line = line[:1000]
        line_values: list[Number] = []
        for piece in _pieces(line):
            if piece in ("True", "False"):
                booleans = True
                continue
            if _UNEVALUATED.match(piece):  # Sum(1/k**2, (k, 1, n)): its 1 is a limit, not a result
                continue
            got = evaluate(piece)
            if got is None:
                got = [f.value for f in find_numbers(piece)]
                norm = normalise_expression(piece)
                if len(norm) >= 5 and re.search(r"[a-zA-Z]", norm) and re.search(r"[-+^/]", norm):
                    expressions.append(norm)
            line_values += got
        if line_values:
            best = max(weight(v) for v in line_values)
            key = next(v for v in reversed(line_values) if weight(v) == best)
        values += line_values
    return OutputValues(tuple(values), key, booleans, tuple(expressions))


# What sympy prints for what it could not (or was not asked to) evaluate.
_UNEVALUATED = re.compile(r"(Sum|Product|Integral|Limit|Derivative)\(")


def _pieces(line: str) -> list[str]:
    """Split a printed line at top-level separators: whitespace not next to an operator, ',', ':'
    and '=' (print(a, b) and "x = 5" print several things on one line)."""
    pieces, depth, current = [], 0, ""
    s = line.strip()
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if depth == 0 and (ch in ",:=" or ch.isspace()):
            before = s[:i].rstrip()[-1:]
            after = s[i + 1 :].lstrip()[:1]
            if ch.isspace() and (before in _OPS or after in _OPS or not before or not after):
                current += ch
                continue
            pieces.append(current.strip())
            current = ""
            continue
        current += ch
    pieces.append(current.strip())
    return [p for p in pieces if p]


def normalise_expression(text: str) -> str:
    """An expression reduced for substring comparison between Python and LaTeX spellings:
    x**2 - 2*x + 2 and x^{2} - 2x + 2 both become x^2-2x+2."""
    return _drop_markup(text).replace("\\times", "")


def _drop_markup(text: str) -> str:
    """normalise_expression but for removing "\\times": the part that can be done piece by piece.

    It drops the commands \\left, \\right, \\displaystyle, \\cdot, \\, \\; \\! and then every
    whitespace character, $, {, } and *. That is what one `re.sub` of
    `\\\\(left|right|displaystyle|cdot|,|;|!)|[\\s${}*]` does (a command holds none of those
    characters and starts with a backslash, which is kept, so the two steps cannot interact), but deleting characters with `str.translate` is
    ten times faster than a regex match per character on whole reasoning texts."""
    return _COMMANDS.sub("", text.replace("**", "^")).translate(_DROPPED)


_COMMANDS = re.compile(r"\\(left|right|displaystyle|cdot|,|;|!)")
_DROPPED = str.maketrans("", "", _WHITESPACE + "${}*")


# --- one record, read once for both heuristics --------------------------------------------------------


class RecordView:
    """What the purpose and behaviour heuristics read from one record, worked out once for both
    (`heuristics.label_record` passes one view to each): the executed cells, the prose
    (`prose_mask`), its numbers (a `NumberIndex`), each cell's output values, and the normalised
    prose before each cell. All but the cells are computed on first use: a record without executed
    cells needs none of them."""

    def __init__(self, record: TrajectoryRecord) -> None:
        self.record = record
        self.cells = executed_cells(record)
        self._outputs: dict[int, OutputValues] = {}
        self._normalised: list[str] | None = None

    @cached_property
    def prose(self) -> str:
        return prose_mask(self.record)

    @cached_property
    def numbers(self) -> NumberIndex:
        return NumberIndex(find_numbers(self.prose))

    def output(self, cell: Cell) -> OutputValues:
        """`output_values(cell.output)`, read once per cell (both heuristics and the categories ask)."""
        if cell.index not in self._outputs:
            self._outputs[cell.index] = output_values(cell.output)
        return self._outputs[cell.index]

    def normalised_before(self, cell: Cell) -> str:
        """`normalise_expression(prose[: cell.start])`, without normalising the whole prefix again for
        every cell (that was quadratic, and a tenth of the labelling time). The prose is normalised
        once in pieces cut at each cell's start and the pieces before a cell are joined. This gives
        the same text: each cut is at a blanked fence, a space, and the rules drop or rewrite tokens
        that hold no space, so none spans a cut; "\\times" is removed after joining, as before."""
        if self._normalised is None:
            cuts = [c.start for c in self.cells]
            if any(self.prose[k : k + 1] != " " for k in cuts):  # not a blanked fence: never, but be exact
                return normalise_expression(self.prose[: cell.start])
            bounds = [0, *cuts]
            self._normalised = [_drop_markup(self.prose[a:b]) for a, b in zip(bounds, bounds[1:])]
        return "".join(self._normalised[: cell.index + 1]).replace("\\times", "")


# --- code facts ---------------------------------------------------------------------------------------


@dataclass
class CodeFacts:
    """What the code does, read from its syntax tree (or from its text when it does not parse)."""

    names: set[str]  # every identifier and attribute name used
    assigned: set[str]  # names the code binds itself (a variable called `dist` is not math.dist)
    calls: set[str]  # called names, last part (solve, isprime, append, ...)
    imports: set[str]  # imported modules, top level (sympy, itertools, ...)
    ops: set[str]  # binary/unary operator class names (Mod, BitAnd, Pow, ...)
    literals: list[Number]
    expressions: list[str]  # normalised call arguments and assigned expressions
    asserts: int = 0
    printed_checks: int = 0  # comparisons / all() / any() printed or branched on outside loops
    loops: int = 0
    for_statements: int = 0
    print_in_loop: bool = False
    filtered: bool = False  # comprehension or loop with an `if` filter
    collects: bool = False  # a list or set comprehension with a filter: candidates collected
    recursion: bool = False
    recurrence: bool = False
    classes: bool = False
    while_loop: bool = False  # a while loop whose condition calls something: run until found
    breaks: bool = False
    big_pow: bool = False  # ** with an exponent >= 64 and no modulus
    pow_mod: bool = False


def code_facts(code: str) -> CodeFacts:
    """Facts from the syntax tree; from the text when the code does not parse (a cell that failed
    with a SyntaxError still says what it meant to do)."""
    try:
        return _tree_facts(code, ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        words = set(re.findall(r"[A-Za-z_]\w*", code))
        calls = set(re.findall(r"([A-Za-z_]\w*)\s*\(", code))
        imports = set(re.findall(r"(?:from|import)\s+([A-Za-z_]\w*)", code))
        facts = CodeFacts(words, set(), calls, imports, set(), [], [])
        facts.asserts = len(re.findall(r"^\s*assert\b", code, re.MULTILINE))
        facts.printed_checks = len(re.findall(r"print\(.*(==|!=|\ball\(|\bany\().*\)", code))
        facts.loops = len(re.findall(r"^\s*(for|while)\b", code, re.MULTILINE))
        return facts


# Node classes the facts tell apart (as tuples: `isinstance` with `A | B` built on every call is slow).
_OPERATIONS = (ast.BinOp, ast.UnaryOp, ast.AugAssign)
_ITERATIONS = (ast.For, ast.While, ast.comprehension)
_COLLECTIONS = (ast.ListComp, ast.SetComp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_EXITS = (ast.Break, ast.Return)
_LOOP_STATEMENTS = (ast.For, ast.While)
_LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_SCOPES = (*_LOOPS, *_FUNCTIONS, ast.Call)  # the nodes `_below` places their children under
_MARKER_FIELDS = frozenset({"ctx", "op", "ops"})  # fields holding only operators and load/store markers


def _tree_facts(code: str, tree: ast.AST) -> CodeFacts:
    """The facts, from one walk over the tree: each node comes with where it sits (`_Where`), so what
    depends on enclosing loops, functions and prints is read off the node itself, without walking
    the subtrees of loops, functions and prints again (that was most of the time on long cells)."""
    facts = CodeFacts(set(), set(), set(), set(), set(), [], [])
    functions: dict[str, ast.AST] = {}  # name -> its last definition, as the tree is walked
    self_calls: list[ast.AST] = []  # function definitions that call their own name inside
    for node, where in _walk(tree):
        if isinstance(node, ast.Name):
            facts.names.add(node.id)
            if isinstance(node.ctx, ast.Store):
                facts.assigned.add(node.id)
        elif isinstance(node, ast.Attribute):
            facts.names.add(node.attr)
        elif isinstance(node, ast.Import):
            facts.imports |= {a.name.split(".")[0] for a in node.names}
            facts.names |= {a.name.split(".")[-1] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            facts.imports.add(node.module.split(".")[0])
            facts.names |= {a.name for a in node.names}
        elif isinstance(node, _OPERATIONS):
            facts.ops.add(type(node.op).__name__)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
                exp = node.right
                if isinstance(exp, ast.Constant) and isinstance(exp.value, int) and exp.value >= 64:
                    facts.big_pow = True
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            facts.calls.add(name)
            if name == "pow" and len(node.args) == 3:
                facts.pow_mod = True
            for arg in node.args:
                facts.expressions.append(_expression(code, arg))
            facts.print_in_loop |= where.loop_body and name == "print"
            facts.recurrence |= where.loop and _extends_itself(node)
            facts.printed_checks += not where.in_loops and name in ("all", "any")
            self_calls += [fn for fn in where.functions if fn.name == name]  # type: ignore[attr-defined]
        elif isinstance(node, ast.Assign):
            facts.expressions.append(_expression(code, node.value))
            facts.recurrence |= where.loop and _extends_itself(node)
        elif isinstance(node, ast.Constant) and _is_number(node.value):
            facts.literals.append(node.value)
        elif isinstance(node, ast.Assert):
            facts.asserts += 1
        elif isinstance(node, _ITERATIONS):
            facts.loops += 1
            facts.for_statements += isinstance(node, ast.For)
            facts.while_loop |= isinstance(node, ast.While) and any(
                isinstance(n, ast.Call) for n in ast.walk(node.test)
            )
            if isinstance(node, ast.comprehension) and node.ifs:
                facts.filtered = True
        elif isinstance(node, _COLLECTIONS) and any(g.ifs for g in node.generators):
            facts.collects = True
        elif isinstance(node, ast.ClassDef):
            facts.classes = True
        elif isinstance(node, _FUNCTIONS):
            functions[node.name] = node
        elif isinstance(node, ast.If):
            facts.filtered |= where.loop_body
            facts.printed_checks += (
                not where.in_loops and isinstance(node.test, ast.Compare) and bool(node.orelse)
            )
        elif isinstance(node, _EXITS):
            facts.breaks |= where.loop_body
        elif isinstance(node, ast.Compare) and not where.in_loops:
            facts.printed_checks += where.printed
    facts.recursion = any(functions[fn.name] is fn for fn in self_calls)  # type: ignore[attr-defined]
    facts.expressions = [e for e in facts.expressions if e]
    return facts


class _Where(NamedTuple):
    """Where a node sits in a cell, as far as the code facts care; a node's subtree inherits it."""

    loop: bool = False  # inside a for or while statement (any part of it): a recurrence counts there
    loop_body: bool = False  # inside the body of a for or while statement: a print, if or break there
    in_loops: bool = False  # inside a loop or comprehension: a comparison there is a search, not a check
    printed: int = 0  # print calls, outside loops, among whose arguments it stands
    functions: tuple[ast.AST, ...] = ()  # the function definitions it is in


def _walk(tree: ast.AST) -> Iterable[tuple[ast.AST, _Where]]:
    """Every node with where it sits, in `ast.walk`'s order (breadth first: the order of a cell's
    literals and expressions decides which one its evidence names). Operators and load/store
    markers are left out: no fact comes from them."""
    queue = deque([(tree, _Where())])
    while queue:
        node, where = queue.popleft()
        scope = isinstance(node, _SCOPES)  # its children may sit elsewhere than itself
        for field in node._fields:
            if field in _MARKER_FIELDS:
                continue
            value = getattr(node, field, None)
            if isinstance(value, ast.AST):
                value = (value,)
            elif not isinstance(value, list) or not value:
                continue
            inner = _below(node, field, where) if scope else where
            queue.extend((child, inner) for child in value if isinstance(child, ast.AST))
        yield node, where


def _below(node: ast.AST, field: str, where: _Where) -> _Where:
    """Where the nodes under `node.<field>` sit."""
    if isinstance(node, _LOOP_STATEMENTS):
        return where._replace(loop=True, loop_body=where.loop_body or field == "body", in_loops=True)
    if isinstance(node, _LOOPS):
        return where._replace(in_loops=True)
    if isinstance(node, _FUNCTIONS):
        return where._replace(functions=(*where.functions, node))
    if field == "args" and not where.in_loops and isinstance(node, ast.Call) and _call_name(node) == "print":
        return where._replace(printed=where.printed + 1)
    return where


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


@lru_cache(maxsize=8)
def _lines(code: str) -> tuple[str, ...]:
    return tuple(code.splitlines(keepends=True))


def _source_segment(code: str, node: ast.AST) -> str:
    """`ast.get_source_segment` without re-splitting the whole cell for every node (it did, and that
    was most of the classifier's time on long cells)."""
    end_line, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
    if end_line is None or end_col is None:
        return ""
    lines, first, last = _lines(code), node.lineno - 1, end_line - 1  # type: ignore[attr-defined]
    if last >= len(lines):
        return ""
    if first == last:
        return lines[first].encode()[node.col_offset : end_col].decode(errors="replace")  # type: ignore[attr-defined]
    head = lines[first].encode()[node.col_offset :].decode(errors="replace")  # type: ignore[attr-defined]
    return "".join([head, *lines[first + 1 : last], lines[last].encode()[:end_col].decode(errors="replace")])


def _expression(code: str, node: ast.AST) -> str:
    segment = _source_segment(code, node)
    norm = normalise_expression(segment)
    ok = len(norm) >= 6 and re.search(r"[a-zA-Z]", norm) and re.search(r"[-+^/]", norm)
    return norm if ok else ""


def _extends_itself(node: ast.AST) -> bool:
    """An assignment or call (inside a loop) that builds a sequence from its own earlier terms:
    a[n] = f(a[n-1], ...), a, b = b, a + b, or a.append(f(a[-1], a[-2]))."""

    def reads(node: ast.AST, name: str) -> bool:
        return any(isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == name
                   for n in ast.walk(node))  # fmt: skip

    if isinstance(node, ast.Assign):
        for t in node.targets:
            if (
                isinstance(t, ast.Subscript)
                and isinstance(t.value, ast.Name)
                and reads(node.value, t.value.id)
            ):
                return True
            if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):  # a, b = b, a + b
                bound = {e.id for e in t.elts if isinstance(e, ast.Name)}
                mixed = [v for v in node.value.elts if isinstance(v, ast.BinOp)]
                if any({x.id for x in ast.walk(v) if isinstance(x, ast.Name)} & bound for v in mixed):
                    return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
            and isinstance(node.func.value, ast.Name) and any(reads(a, node.func.value.id) for a in node.args))  # fmt: skip


# --- functionality categories -------------------------------------------------------------------------

# fmt: off
_SYMPY_MANIP = frozenset("""simplify expand factor together apart collect cancel trigsimp nsimplify sympify Poly subs
    interpolate coeff coeff_monomial radsimp powsimp expand_trig logcombine factor_list rewrite as_numer_denom
    Rational""".split())
# (category, calls or names that trigger it, imported modules that trigger it)
_RULES: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = tuple(
    (category, frozenset(calls.split()), frozenset(modules.split())) for category, calls, modules in (
        ("Solving Equations and Systems of Equations",
         "bisect brentq diophantine fsolve linsolve newton nonlinsolve nroots nsolve real_roots "
         "root_scalar roots solve solve_linear solve_poly_system solveset",
         ""),
        ("Numerical Approximation Methods",
         "bisect brentq evalf findroot fsolve minimize_scalar N newton nquad nsolve nsum odeint "
         "quad root_scalar simpson solve_ivp trapezoid trapz",
         ""),
        ("Data Visualization and Plotting",
         "hist imshow plot savefig scatter subplots",
         "matplotlib plotly seaborn"),
        ("Modular Arithmetic and Number Theory Operations",
         "crt discrete_log divisor_count divisor_sigma divisors divmod egcd gcd gcdex igcd ilcm "
         "is_quad_residue jacobi_symbol lcm legendre_symbol Mod mod_inverse multiplicity n_order "
         "primitive_root reduced_totient sqrt_mod totient",
         ""),
        ("Prime Number Testing and Factorization",
         "factorint factorrat is_prime isprime nextprime prevprime prime primefactors "
         "primepi primerange primorial randprime sieve",
         ""),
        ("Geometric and Computational Geometry Calculations",
         "angle area atan2 Circle circumcenter circumradius ConvexHull degrees dist distance "
         "Ellipse hypot incenter inradius Line perimeter Point Point2D Point3D Polygon radians "
         "Ray Segment shoelace Triangle",
         "shapely"),
        ("Probability, Statistics, and Simulations",
         "binom Binomial Coin density Die E expectation mean median Normal P poisson pstdev std "
         "stdev var variance",
         "random statistics stats"),
        ("Linear Algebra: Matrix and Vector Operations",
         "cross det dot eig eigenvals eigenvects eigvals eye inv inverse linalg matmul Matrix "
         "matrix_power nullspace rank rref solve_linear_system transpose",
         ""),
        ("Combinatorial Enumeration and Game Theory",
         "bell binomial catalan comb combinations combinations_with_replacement derangements "
         "factorial grundy mex multinomial nCr npartitions partitions perm permutations product "
         "stirling subfactorial",
         ""),
        ("Graph Theory Algorithms",
         "add_edge adj adjacency bfs dfs DiGraph dijkstra edges graph Graph neighbors popleft "
         "shortest_path visited",
         "networkx"),
        ("Dynamic Programming and Recurrence Relations",
         "cache dp lru_cache memo memoize recurrence rsolve",
         ""),
        ("FFT and Signal Processing",
         "convolve fft fftfreq ifft irfft rfft signal",
         ""),
        ("Boolean Algebra and Logic Operations",
         "And bin bit_count bit_length Equivalent Implies Not Or simplify_logic to_cnf to_dnf "
         "truth_table Xor",
         ""),
        ("Big Integer and Arbitrary-Precision Arithmetic",
         "Decimal dps getcontext mp mpf prec",
         "decimal gmpy2 mpmath"),
        ("Symbolic Integration, Differentiation, and Proof Verification",
         "Derivative diff dsolve fourier_series idiff Integral integrate limit Limit "
         "series Sum summation",
         ""),
        ("Linear Programming and Optimization Techniques",
         "linprog LpProblem LpVariable milp minimize Problem Variable",
         "cvxpy pulp"),
        ("Algorithm Optimization and Numerical Stability",
         "allclose expm1 fsum isclose log1p logsumexp longdouble",
         ""),
        ("Automated Theorem Proving and Symbolic Logic",
         "Bool Exists ForAll Int prove Real satisfiable Solver",
         "z3"),
        ("Data Structures Implementation and Management",
         "bisect_left bisect_right Counter defaultdict deque heappop heappush heapq OrderedDict "
         "SortedList",
         "collections heapq sortedcontainers"),
    )
)
# fmt: on
_TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "Geometric and Computational Geometry Calculations",
        re.compile(
            r"\b(triangle|circle|polygon|area|perimeter|radius|angle|coordinates?|hexagon|"
            r"rectangle|sphere|cone|cylinder|volume|inradius|circumradius|tangent line|plane|distance|vectors?)\b",
            re.I,
        ),
    ),
    (
        "Probability, Statistics, and Simulations",
        re.compile(r"\b(probabilit\w*|expected (value|number)|random(ly)?|dice|die|coin|variance)\b", re.I),
    ),
    (
        "Modular Arithmetic and Number Theory Operations",
        re.compile(r"\b(remainder|modulo|mod|divisible|divisors?|congruen\w*|gcd|lcm)\b|\\pmod|\\bmod", re.I),
    ),
    ("Prime Number Testing and Factorization", re.compile(r"\bprimes?\b|\bfactori[sz]", re.I)),
    ("Pattern Recognition and Analysis", re.compile(r"\b(pattern|first few terms|spot|differences)\b", re.I)),
    ("Graph Theory Algorithms", re.compile(r"\b(graph|adjacency)\b", re.I)),
    (
        "Combinatorial Enumeration and Game Theory",
        re.compile(
            r"\b(how many ways|number of ways|arrangements?|permutations?|derangements?|tilings?)\b", re.I
        ),
    ),
)


def categories_of(code: str, output: str, context: str = "", *, verification: bool = False,
                  facts: CodeFacts | None = None,
                  values: OutputValues | None = None) -> tuple[tuple[str, ...], list[str]]:  # fmt: skip
    """The functionality categories of a cell, with what triggered each (rules over the code's
    calls, imports and shape; the reasoning around it only where the code alone cannot tell, such as
    plain arithmetic on a triangle's sides). `facts` and `values` (`output_values(output)`) are the
    cell's when already known."""
    f = facts or code_facts(code)
    read = values or output_values(output)
    used = f.calls | (f.names - f.assigned)
    hits: dict[str, str] = {}

    def hit(category: str, why: str) -> None:
        hits.setdefault(category, why)

    sympy = "sympy" in f.imports or bool(used & {"symbols", "Symbol", "sympify"})
    for category, triggers, modules in _RULES:
        names = used | f.names if category.startswith("Dynamic") else used  # a table called dp is telling
        matched = sorted(names & triggers) or sorted(f.imports & modules)
        if category == "Combinatorial Enumeration and Game Theory" and matched == ["product"]:
            matched = matched if "itertools" in f.imports or "product" in f.names else []
        if (
            category == "Probability, Statistics, and Simulations"
            and matched
            and set(matched) <= {"E", "P", "N"}
        ):
            matched = []
        if matched:
            hit(category, matched[0])
    if sympy and used & _SYMPY_MANIP or (sympy and "sqrt" in used and not f.loops):
        hit("Symbolic Mathematics and Manipulation", sorted(used & (_SYMPY_MANIP | {"sqrt"}))[0])
    if "Mod" in f.ops or f.pow_mod:
        hit("Modular Arithmetic and Number Theory Operations", "pow(a, b, m)" if f.pow_mod else "%")
    if f.ops & {"BitAnd", "BitOr", "BitXor", "LShift", "RShift", "Invert"}:
        hit("Boolean Algebra and Logic Operations", "bitwise operators")
    if f.asserts or f.printed_checks:
        hit("Property Verification and Theorem Checking", "assert" if f.asserts else "printed check")
    if f.recursion:
        fractal = re.search(r"fractal|sierpinski|koch|cantor|self-similar", code + context, re.I)
        hit("Fractal and Recursive Pattern Generation" if fractal else "Dynamic Programming and Recurrence Relations",
            "recursive function")  # fmt: skip
    if f.recurrence:
        hit("Dynamic Programming and Recurrence Relations", "recurrence over earlier terms")
    if f.print_in_loop and not f.filtered:
        hit("Pattern Recognition and Analysis", "prints terms in a loop")
    counting = (
        f.filtered
        and "random" not in f.imports
        and ("sum" in f.calls or bool(re.search(r"\b\w+\s*\+=\s*1\b", code)))
    )
    if counting:
        hit("Combinatorial Enumeration and Game Theory", "counting by enumeration")
    first = "next" in f.calls and f.filtered  # next(n for n in ... if ...)
    if (
        first
        or f.loops
        and "random" not in f.imports
        and ({"max", "min"} & f.calls or f.breaks or f.while_loop)
    ):
        hit("Optimization and Solution Searching", "search loop")
    elif f.filtered and not counting and (f.for_statements >= 2 or f.collects):
        hit("Optimization and Solution Searching", "filtered enumeration")
    if "random" in f.imports and f.loops:
        hit("Data Generation and Simulation", "random trials")
    if f.classes:
        hit("Data Structures Implementation and Management", "class")
    if f.big_pow or re.search(r"\b\d{20,}\b", output):
        hit("Big Integer and Arbitrary-Precision Arithmetic", "integers beyond 64 bits")
    if verification and read.booleans:
        hit("Property Verification and Theorem Checking", "boolean result")
    for category, pattern in _TEXT_RULES:
        if hits and category not in _CONTEXT_CATEGORIES:
            continue  # only a context category can still be added: no need to search
        m = pattern.search(context)
        if m:
            hit(category, f"reasoning: {m.group(0)!r}")
    if not hits and verification:
        hit("Property Verification and Theorem Checking", "a check with no other functionality")
    if not hits:
        floats = any(isinstance(v, float) and not v.is_integer() for v in read.values)
        hit("Numerical Approximation Methods" if floats else "Big Integer and Arbitrary-Precision Arithmetic",
            "plain arithmetic")  # fmt: skip
    ordered = tuple(c for c in CATEGORIES if c in hits)
    return ordered, [f"{hits[c]}->{c.split(' ')[0]}" for c in ordered]


# Domains the code alone rarely shows (plain arithmetic on a triangle's sides): these are taken from
# the problem and the reasoning before the cell even when the code triggered other categories.
_CONTEXT_CATEGORIES = frozenset({"Geometric and Computational Geometry Calculations",
                                 "Probability, Statistics, and Simulations", "Graph Theory Algorithms"})  # fmt: skip


# --- purpose ------------------------------------------------------------------------------------------

_STRONG_VERIFY = re.compile(
    r"\b(verif(y|ying|ied|ication)|double[- ]?check(ing)?|confirm(s|ing|ed|ation)?|make sure|sanity[- ]check|"
    r"cross[- ]check|validat(e|ing)|ensure|to be (safe|sure)|is (this|that|it) (correct|right)|re-?check)\b",
    re.I,
)
_ENUM_CHECK = re.compile(
    r"\b(check|test|try)(ing)? (all|each|every|for (all|each|every)|which|the (remaining|possible|other)|"
    r"possible|numbers|values|cases|candidates|small)\b",
    re.I,
)
_WEAK_CHECK = re.compile(r"\b(check(ing)?|test(ing)?|plug(ging)? (in|it|them|back))\b", re.I)
_CALC = re.compile(
    r"\b(comput(e|ing)|calculat(e|ing)|evaluat(e|ing)|find|solv(e|ing)|determin(e|ing)|enumerat(e|ing)|"
    r"count(ing)?|simulat(e|ing)|brute[- ]?forc(e|ing)|search(ing)?|iterat(e|ing)|tedious|factor(ing)?|"
    r"expand(ing)?|list (all|the)|let me (code|program|write)|get (the|a|an)|fit|look at)\b",
    re.I,
)
_CONCLUSION = re.compile(
    r"\b(so|thus|therefore|hence|which gives|we get|giving|answer)\b[^\n]{0,120}?(=|\bis\b|\bequals\b|\bbe\b)"
    r"\s*[$\\(]*\s*-?\d",
    re.I,
)


@dataclass
class _Evidence:
    items: list[tuple[float, str]]

    def add(self, w: float, text: str) -> None:
        self.items.append((w, text))

    @property
    def score(self) -> float:
        return sum(w for w, _ in self.items)


def classify_cells(record: TrajectoryRecord, view: RecordView | None = None) -> list[CellPurpose]:
    """One label per executed cell, in order; deterministic, no model involved. `view`: the record's
    `RecordView` when the behaviour heuristic reads it too."""
    view = view or RecordView(record)
    cells = view.cells
    if not cells:
        return []
    prose = view.prose
    problem_values = [f.value for f in find_numbers(record.prompt)]
    problem_norm = normalise_expression(record.prompt)
    outputs = [view.output(c) if not c.failed else OutputValues((), None, False, ()) for c in cells]
    labels: list[CellPurpose] = []
    roots: list[int] = []  # the first cell of each cell's retry chain: itself when it retries none
    previous_facts: CodeFacts | None = None
    for cell in cells:
        previous_end = cells[cell.index - 1].end if cell.index else 0
        facts = code_facts(cell.code)
        how = _retry(cells[cell.index - 1], previous_facts, cell, facts) if previous_facts else None
        purpose: Purpose
        evidence: _Evidence | None = None
        why = ""
        if how is not None:  # a retry: the purpose of the cell it retries
            root = roots[-1]
            purpose, why = _inherited(
                cell, facts, how, root, labels[root].purpose, view, outputs, previous_end
            )
        else:
            root = cell.index
            evidence = _evidence(cell, facts, view, problem_values, problem_norm, outputs, previous_end)
            purpose = "verification" if evidence.score >= THRESHOLD else "calculation"
        context = record.prompt[-1500:] + "\n" + prose[previous_end : cell.start][-600:]
        categories, triggers = categories_of(
            cell.code, cell.output, context, verification=purpose == "verification", facts=facts,
            values=view.output(cell),
        )  # fmt: skip
        explained = (
            _explain(purpose, evidence, triggers) if evidence else f"{why}; categories: {', '.join(triggers)}"
        )
        labels.append(CellPurpose(cell.index, purpose, categories, explained, HEURISTIC))
        roots.append(root)
        previous_facts = facts
    return labels


def label_cells(record: TrajectoryRecord, view: RecordView | None = None) -> list[dict]:
    """The heuristic's labels as columns for `analyze_run(cell_labelers=[label_cells])`: one dict per
    executed cell with `cell_index`, `purpose`, `purpose_categories`, `purpose_evidence`, `purpose_method`."""
    return [_columns(p, "purpose") for p in classify_cells(record, view)]


def purpose_rows(
    records: Sequence[TrajectoryRecord],
    labels: Sequence[Sequence[CellPurpose]] | None = None,
    prefix: str = "purpose",
) -> list[dict]:
    """Flat rows keyed (task, problem_id, sample_idx, cell_index), for labels computed in one batch
    (`PurposeJudge.classify_many`) and joined with `analyze.join_labels`; `prefix` names the columns
    (e.g. "judge_purpose" beside the heuristic's). `labels` default to the heuristic's."""
    labels = labels if labels is not None else [classify_cells(r) for r in records]
    if len(labels) != len(records):
        raise ValueError(f"{len(labels)} label lists for {len(records)} records")
    return [
        {"task": r.task, "problem_id": r.problem_id, "sample_idx": r.sample_idx, **_columns(p, prefix)}
        for r, cells in zip(records, labels)
        for p in cells
    ]


def _columns(label: CellPurpose, prefix: str) -> dict:
    return {
        "cell_index": label.cell_index,
        prefix: label.purpose,
        f"{prefix}_categories": list(label.categories),
        f"{prefix}_evidence": label.evidence,
        f"{prefix}_method": label.method,
    }


def _evidence(cell: Cell, facts: CodeFacts, view: RecordView, problem_values: Sequence[Number],
              problem_norm: str, outputs: Sequence[OutputValues], previous_end: int) -> _Evidence:  # fmt: skip
    ev = _Evidence([])
    prose, numbers = view.prose, view.numbers
    recent = prose[previous_end : cell.start]
    out = outputs[cell.index]

    # 1. Is what the cell prints already in the reasoning?
    echoed = {v for v in facts.literals if weight(v) > 0}
    significant = [
        v for v in dict.fromkeys(out.values) if weight(v) > 0 and not any(same(v, e) for e in echoed)
    ]
    matches = {v: _match(v, view, cell.start, previous_end) for v in significant}
    key = out.key if out.key is not None and weight(out.key) > 0 else None
    if key is None and out.key is not None:  # a small result counts when it is claimed just before
        hit = _match(out.key, view, cell.start, previous_end, start=previous_end, trivial=True, claims=True)
        if hit is not None:
            ev.add(2.0, f"output {_fmt(out.key)} stated just before ({_snippet(prose, hit.pos)})")
    elif key is not None and (found := matches.get(key)) is not None:
        ev.add(3.0, f"output {_fmt(key)} already in the reasoning ({_snippet(prose, found.pos)})")
    elif significant and sum(m is not None for m in matches.values()) * 2 >= len(significant):
        hit = next(m for m in matches.values() if m is not None)
        ev.add(2.0, f"most printed values already in the reasoning ({_snippet(prose, hit.pos)})")
    elif key is not None:
        earlier = [i for i in range(cell.index) if any(same(key, v) for v in outputs[i].values)]
        approx = _approximate(key, numbers.between(0, cell.start), prose) if isinstance(key, float) else None
        if earlier:
            ev.add(1.5, f"output {_fmt(key)} repeats the output of cell {earlier[-1]}")
        elif approx is not None:
            ev.add(
                1.5, f"output {_fmt(key)} approximates {_fmt(approx.value)} ({_snippet(prose, approx.pos)})"
            )
        elif significant and all(m is None for m in matches.values()):
            ev.add(-2.0, f"output {_fmt(key)} is new (not in the reasoning)")
        else:
            ev.add(-1.0, f"output {_fmt(key)} is new")
    if len(significant) < len(
        [v for v in out.values if weight(v) > 0 and not any(same(v, e) for e in echoed)]
    ):
        twins = [v for v in significant if sum(same(v, w) for w in out.values) >= 2]
        if twins:
            ev.add(1.5, f"prints {_fmt(twins[0])} twice (two ways compared)")
    prior_norm = view.normalised_before(cell)
    for expr in out.expressions:
        if expr in prior_norm and expr not in problem_norm:
            ev.add(2.5, f"printed expression {expr} already in the reasoning")
            break

    # 2. Does the code have the shape of a check?
    if facts.asserts:
        ev.add(2.0, "assert")
    elif facts.printed_checks or out.booleans:
        ev.add(1.5, "prints a comparison" if facts.printed_checks else "prints a boolean")
    for expr in facts.expressions:
        if expr in prior_norm and expr not in problem_norm:
            ev.add(1.0, f"code uses {expr} from the reasoning")
            break
    claimed = [v for v in facts.literals if weight(v) > 0 and not any(same(v, p) for p in problem_values)]
    for v in claimed:
        hit = _match(v, view, cell.start, previous_end, claims=True)
        if hit is not None:
            ev.add(0.5, f"code plugs in {_fmt(v)} from the reasoning")
            break

    # 3. What did the reasoning announce right before the cell?
    window = recent.rstrip()[-VOCAB_WINDOW:]
    strong = list(_STRONG_VERIFY.finditer(window))
    enum = list(_ENUM_CHECK.finditer(window))
    weak = [
        m for m in _WEAK_CHECK.finditer(window) if not any(e.start() <= m.start() < e.end() for e in enum)
    ]
    calc = list(_CALC.finditer(window))
    if strong:
        ev.add(1.5, f"{strong[-1].group(0)!r} before the cell")
        if _CONCLUSION.search(recent):
            ev.add(0.5, "a result was concluded before")
    elif weak:
        ev.add(0.5, f"{weak[-1].group(0)!r} before the cell")
    if enum:
        ev.add(-0.5, f"{enum[-1].group(0)!r} (a search) before the cell")
    if calc and not strong:
        ev.add(-1.0, f"{calc[-1].group(0)!r} before the cell")
    return ev


RETRY_SIMILARITY = 0.6  # difflib ratio of two cells' code at or above which the second reruns the first
_WORD = re.compile(r"\w+")
# Calls that say nothing about what a cell computes: two cells sharing only these are not one computation.
_PLUMBING = frozenset(
    """print range len int str float list set dict tuple sum round abs min max sorted enumerate
    zip map filter append format join isinstance""".split()
)


def _retry(previous: Cell, previous_facts: CodeFacts, cell: Cell, facts: CodeFacts) -> str | None:
    """How `cell` reruns `previous` (`same code`, `code 87% similar`, `same imports and calls`) when
    `previous` failed and `cell` is the same code or an edit of it; None otherwise. A model that
    fixes and reruns a failing cell still wants what it wanted from it, whatever its words around
    the rerun say ("let me check the code again"). Only a cell after a failure is compared, and
    difflib's cheap upper bounds go before its ratio."""
    if not previous.failed:
        return None
    if previous.code.split() == cell.code.split():
        return "same code"
    # Word by word (names, numbers, the words of strings): a sixth as many items as characters, for a
    # ratio that is quadratic at worst. A fix of brackets alone reads as 100% similar.
    words = _WORD.findall(previous.code), _WORD.findall(cell.code)
    matcher = difflib.SequenceMatcher(None, *words, autojunk=False)
    if matcher.real_quick_ratio() >= RETRY_SIMILARITY and matcher.quick_ratio() >= RETRY_SIMILARITY:
        ratio = matcher.ratio()
        if ratio >= RETRY_SIMILARITY:
            return f"code {ratio:.0%} similar"
    calls = facts.calls - _PLUMBING
    if calls and calls == previous_facts.calls - _PLUMBING and facts.imports == previous_facts.imports:
        return "same imports and calls"
    return None


def _inherited(cell: Cell, facts: CodeFacts, how: str, root: int, root_purpose: Purpose, view: RecordView,
               outputs: Sequence[OutputValues], previous_end: int) -> tuple[Purpose, str]:  # fmt: skip
    """A retry's purpose and evidence: those of the first cell of its retry chain (`root`), but for a
    retry that runs and prints a key result the reasoning worked out after the failure: the model
    reached it meanwhile, so the rerun checks it."""
    previous = cell.index - 1
    why = f"retry of failed cell {root} ({how})" if root == previous else (
        f"retry of cell {root} via failed cell {previous} ({how})")  # fmt: skip
    key = outputs[cell.index].key
    if root_purpose == "calculation" and key is not None and not any(same(key, v) for v in facts.literals):
        hit = _match(key, view, cell.start, previous_end, start=previous_end, trivial=True,
                     claims=weight(key) == 0)  # fmt: skip
        if hit is not None:
            return "verification", (
                f"output {_fmt(key)} worked out since the failure ({_snippet(view.prose, hit.pos)}); {why}"
            )
    return root_purpose, f"{why}: {root_purpose} like cell {root}"


def _match(value: Number, view: RecordView, end: int, recent_start: int, *, start: int = 0,
           trivial: bool = False, claims: bool = False) -> Found | None:  # fmt: skip
    """The latest place in the reasoning between `start` and `end` (the cell) where `value` stands
    as a result (two-digit values and simple fractions only as claims or in the text right before
    the cell; only claims with `claims`; never inside a subscript or superscript group, where
    numbers are limits and indices)."""
    w = weight(value)

    def telling(f: Found) -> bool:
        return (f.claim or not claims) and (w >= 1 or trivial or f.claim or f.pos >= recent_start)

    while (found := view.numbers.latest(value, start, end, telling)) is not None:
        if not _in_script(view.prose, found.pos):  # asked of the few matches only: cheap
            return found
        end = found.pos
    return None


def _in_script(text: str, pos: int) -> bool:
    """Whether `pos` stands in a LaTeX subscript or superscript group: the 1 of \\sum_{k=1}^{n} or
    of x_{n+1}, the 0 of \\lim_{x \\to 0}. Numbers there are limits and indices, not results. It walks
    back over the braces that enclose `pos`, at most 100 characters and never past a $ or a line."""
    depth = 0
    for i in range(pos - 1, max(pos - 100, 0) - 1, -1):
        ch = text[i]
        if ch == "}":
            depth += 1
        elif ch == "{":
            if depth:
                depth -= 1
            elif i and text[i - 1] in "_^":
                return True
        elif ch in "$\n":
            return False
    return False


def _approximate(value: float, found: Sequence[Found], prose: str) -> Found | None:
    """A simulation or float evaluation landing within 1% of a value the reasoning stated (not a limit
    or an index)."""
    if weight(value) < 1:
        return None
    for f in reversed(found):
        if weight(f.value) > 0 and f.claim and -1e300 < f.value < 1e300:
            if abs(value - float(f.value)) <= 0.01 * abs(float(f.value)) and not _in_script(prose, f.pos):
                return f
    return None


def _fmt(v: Number) -> str:
    text = str(v) if not isinstance(v, float) else f"{v:.10g}"
    return text if len(text) <= 24 else text[:10] + "..." + text[-6:]


def _snippet(prose: str, pos: int) -> str:
    start = max(prose.rfind("\n", 0, pos) + 1, pos - 40)
    end = prose.find("\n", pos)
    end = min(end if end != -1 else len(prose), pos + 30)
    return repr(" ".join(prose[start:end].split()))


def _explain(purpose: Purpose, evidence: _Evidence, triggers: list[str]) -> str:
    items = sorted(evidence.items, key=lambda item: -abs(item[0]))
    side = [t for w, t in items if (w > 0) == (purpose == "verification")]
    other = [t for w, t in items if (w > 0) != (purpose == "verification")]
    if side:
        why = "; ".join(side[:3])
    elif other:  # only weak evidence of a check: say what it was
        why = f"too weak for a check: {'; '.join(other[:2])}"
    else:
        why = "no evidence either way (default)"
    return f"{why} [score {evidence.score:+.1f}]; categories: {', '.join(triggers)}"
