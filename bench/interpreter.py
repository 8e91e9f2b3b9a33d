"""Interpreter benchmark: cortbench's stateful sandbox against the CoRT executor, side by side.

    python bench/interpreter.py            # full run, with the long tail (about 5 minutes on 2 cores)
    python bench/interpreter.py --light    # the same without the heavier cells (about 2 minutes)
    python bench/interpreter.py --quick    # smoke run (under a minute); combines with --light

Needs pebble, which CoRT's executor uses: pip install -e '.[bench]' (or pip install pebble).

Both approaches run the same scripted workload: trajectories of typical sympy / numpy / stdlib math
cells, where later cells use the variables, imports and functions of earlier ones. Most cells take
a few ms; by default the topics also have heavier steps (TAIL: brute-force searches over 10^5 to
10^6 candidates, heavier sympy, seeded numpy and random simulations), so that in the mix about 70%
of cells take under 10 ms of CPU, about 25% take 20-200 ms and about 5% take 0.3-2 s. `--light`
leaves them out and reproduces the earlier workload cell for cell. The per-cell CPU time of the
reference run (below) is reported as a distribution, so the workload can be judged.

* CoRT baseline, reimplemented here from the protocol (ChengpengLi1003/CoRT @ 41634e6,
  `infer/parser.py` and `python_executor.py`; nothing is imported from CoRT): trajectories advance
  in synchronous rounds; every round builds each active trajectory's program with
  `extract_jupyter_like_program` from the text so far (earlier cells whose output mentions
  error/exception/traceback are dropped, lines starting with print/pprint are removed, an earlier
  cell still containing "print" is dropped, the current cell is appended unchanged), and runs the
  batch on a fresh `pebble.ProcessPool(max_workers=min(n, cpu_count))` with `exec` under
  `redirect_stdout`, a 30 s `pool.map` timeout, stdout or `traceback.format_exc()`, stripped and
  truncated to 400 + "..." + 400. Every earlier cell it keeps is re-run on every later call.
* cortbench: one `LocalSandbox` with its default settings (zygote warm-up included), started inside
  the timed region; every trajectory is an asyncio task that runs its cells one after another in its
  own stateful session; all concurrently.

Correctness ("state errors"): every cell's output is compared with a reference from a real stateful
session (cortbench's kernels, two trajectories at a time, untimed; each cell's CPU time is the record's
`cpu_s`), which is itself checked against a plain
in-process `exec` of the trajectory's cells in one dict (one forked child per trajectory).
Tracebacks are compared by their last line (the exception), since the two executors format frames
differently. Unseeded Monte Carlo cells cannot be compared to a reference value; they only have to
agree with it on success/failure, and each later cell that re-prints a Monte Carlo estimate must
print the same number the Monte Carlo cell printed in the same run (what the model saw). The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import multiprocessing
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import TimeoutError as FuturesTimeoutError
from contextlib import redirect_stdout
from dataclasses import dataclass, replace
from functools import partial

# The CoRT inference process imports sympy (math_verify, latex2sympy) and numpy (vllm) before it
# forks its executor pools, so the workers inherit them; give the baseline the same advantage.
import numpy  # noqa: F401
import sympy  # noqa: F401
from _machine import cpu_model  # bench/_machine.py (the script's own folder is on sys.path)

from cortbench.harness.sandbox import LocalSandbox, SandboxConfig

try:
    from pebble import ProcessPool
except ImportError:  # reported in main(): the CoRT baseline cannot run without it
    ProcessPool = None

CELL_TIMEOUT_S = 30  # CoRT's evaluation timeout (func_call_timeout), and cortbench's default

# --------------------------------------------------------------------------------------------
# The CoRT executor and program builder, reimplemented faithfully (CoRT @ 41634e6).
# --------------------------------------------------------------------------------------------


class CortRuntime:
    """CoRT's GenericRuntime: a fresh globals dict (pickled into every task, so no state)."""

    def __init__(self) -> None:
        self._global_vars: dict = {}

    def exec_code(self, code_piece: str) -> None:
        if re.search(r"(\s|^)?input\(", code_piece) or re.search(r"(\s|^)?os.system\(", code_piece):
            raise RuntimeError()
        exec(code_piece, self._global_vars)


def cort_execute(code, get_answer_from_stdout=None, runtime=None, timeout_length=10):
    """PythonExecutor.execute with get_answer_from_stdout=True (the only mode CoRT uses).

    CoRT also wraps exec_code in timeout_decorator's SIGALRM timeout (commented "this timeout not
    work"); the effective limit is pool.map's timeout, as here.
    """
    try:
        program_io = io.StringIO()
        with redirect_stdout(program_io):
            runtime.exec_code("\n".join(code))
        program_io.seek(0)
        result = program_io.read()
        report = ""
        str(result)
    except:  # noqa: E722 - CoRT catches everything, SystemExit included
        result = ""
        report = traceback.format_exc()
    return result, report


def cort_truncate(s: str, max_length: int = 800) -> str:
    half = max_length // 2
    if len(s) > max_length:
        s = s[:half] + "..." + s[-half:]
    return s


def cort_batch_apply(batch_code: list[str], timeout_length: float = CELL_TIMEOUT_S) -> list[tuple[str, str]]:
    """PythonExecutor.batch_apply: a new pebble pool per batch, pool.map with a timeout."""
    all_code_snippets = [g.split("\n") for g in batch_code]
    all_exec_results = []
    with ProcessPool(max_workers=min(len(all_code_snippets), os.cpu_count())) as pool:
        executor = partial(
            cort_execute, get_answer_from_stdout=True, runtime=CortRuntime(), timeout_length=timeout_length
        )
        future = pool.map(executor, all_code_snippets, timeout=timeout_length)
        iterator = future.result()
        while True:
            try:
                all_exec_results.append(next(iterator))
            except StopIteration:
                break
            except FuturesTimeoutError:
                all_exec_results.append(("", "Timeout Error"))
            except Exception as error:  # noqa: BLE001
                all_exec_results.append(("", f"Execution Error: {str(error)}"))
    batch_results = []
    for code, (res, report) in zip(all_code_snippets, all_exec_results):
        if code == []:
            res, report = "empty code", "empty code"
        else:
            res, report = str(res).strip(), str(report).strip()
            res, report = cort_truncate(res), cort_truncate(report)
        batch_results.append((res, report))
    return batch_results


def _dedent_code(code: str) -> str:
    if not code:
        return code
    lines = code.splitlines()
    min_indent = float("inf")
    for line in lines:
        stripped = line.lstrip()
        if stripped:
            min_indent = min(min_indent, len(line) - len(stripped))
    if min_indent == float("inf"):
        return code
    return "\n".join(line[min_indent:] if line.strip() else line for line in lines)


def extract_programs_and_outputs(text: str) -> list[tuple[str, str]]:
    """CoRT's parser: each ```python block and the ```output block that follows it."""
    results = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        while i < len(lines) and not lines[i].strip() == "```python":
            i += 1
        if i >= len(lines):
            break
        i += 1
        code_block = ""
        code_complete = False
        while i < len(lines):
            if lines[i].strip() == "```":
                code_complete = True
                i += 1
                break
            code_block += lines[i] + "\n"
            i += 1
        if not code_complete or not code_block.strip():
            continue
        code_block = _dedent_code(code_block)
        j = i
        output_block = ""
        while j < len(lines):
            if lines[j].strip() == "```output":
                j += 1
                output_tmp = ""
                output_complete = False
                while j < len(lines):
                    if lines[j].strip() == "```":
                        output_complete = True
                        j += 1
                        break
                    output_tmp += lines[j] + "\n"
                    j += 1
                if output_complete:
                    output_block = output_tmp
                    i = j
                    break
            elif lines[j].strip() == "```python":
                break
            j += 1
        results.append((code_block, output_block))
    return results


def _remove_prints(program: str) -> str:
    cleaned_lines = []
    for line in program.split("\n"):
        if not line.strip():
            continue
        if line.startswith(("print", "sp.pprint", "sympy.pprint", "pprint", "rprint")):
            continue
        cleaned_lines.append(line)
    return "\n".join(cleaned_lines) + "\n" if cleaned_lines else ""


def _is_error_output(output: str | None) -> bool:
    if output is None:
        return False
    output = output.lower()
    return any(keyword in output for keyword in ("error", "exception", "traceback"))


def extract_jupyter_like_program(result: str) -> str:
    """CoRT's emulation of a Jupyter session: replay earlier error-free cells without prints."""
    final_program = ""
    programs_and_outputs = extract_programs_and_outputs(result)
    if len(programs_and_outputs) == 0:
        return final_program
    for program, output in programs_and_outputs[:-1]:
        if "```python" in program:
            continue
        if (program.strip() != "") and (not _is_error_output(output)):
            removed_print_program = _remove_prints(program)
            if "print" not in removed_print_program:
                final_program += removed_print_program
    last_program, _ = programs_and_outputs[-1]
    if "```python" in last_program:
        last_program = last_program[last_program.rfind("```python") + len("```python") :]
    final_program += last_program
    return final_program


# --------------------------------------------------------------------------------------------
# The workload: scripted trajectories of model-like math cells.
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    code: str
    kind: str = "plain"  # plain | error (raises on purpose) | mc (unseeded Monte Carlo) | mc_recall
    step: str = ""
    mc_src: int | None = None  # for mc_recall: index of the Monte Carlo cell whose estimate it re-prints


@dataclass
class Trajectory:
    tid: int
    topic: str
    cells: list[Cell]


@dataclass(frozen=True)
class Step:
    name: str
    code: str  # template; <<key>> is filled from the topic's parameters and the step's own
    needs: frozenset = frozenset()
    defines: frozenset = frozenset()
    repeat: bool = False  # may be used again (with fresh parameters)
    weight: float = 1.0
    typo: str | None = None  # a defined name in the last (print) line: the cell can get a typo there
    kind: str = "plain"
    local: Callable[[random.Random], dict] | None = None  # per-use parameters
    tier: str = "light"  # light | medium (20-200 ms) | heavy (0.3-2 s): expected CPU time, see TAIL


def S(name, code, needs="", defines="", **kw) -> Step:
    return Step(name, code, frozenset(needs.split()), frozenset(defines.split()), **kw)


@dataclass
class Topic:
    name: str
    params: Callable[[random.Random], dict]
    setup: Step
    steps: list[Step]


def fill(template: str, values: dict) -> str:
    out = template
    for key, value in values.items():
        out = out.replace(f"<<{key}>>", str(value))
    if "<<" in out:
        raise ValueError(f"unfilled template: {out}")
    return out.strip("\n")


def _lin(r: int, var: str = "x") -> str:
    return f"{var} - {r}" if r > 0 else (f"{var} + {-r}" if r < 0 else var)


def _poly_params(rng):
    r1, r2 = rng.sample(range(-5, 6), 2)
    b = rng.randint(-3, 3)
    c = b * b // 4 + rng.randint(1, 6)
    quad = f"x**2 {'+' if b >= 0 else '-'} {abs(b)}*x + {c}" if b else f"x**2 + {c}"
    return {"poly": f"({_lin(r1)})*({_lin(r2)})*({quad})"}


def _sym_matrix(rng):
    a = [[0] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            a[i][j] = a[j][i] = rng.randint(-3, 3)
        a[i][i] = rng.randint(7, 12)
    return a


def _triangle(rng):
    while True:
        p = [(rng.randint(-8, 8), rng.randint(-8, 8)) for _ in range(3)]
        (ax, ay), (bx, by), (cx, cy) = p
        if (bx - ax) * (cy - ay) - (cx - ax) * (by - ay) != 0:
            return {"A": p[0], "B": p[1], "C": p[2]}


TOPICS: list[Topic] = [
    Topic(
        "polynomial",
        _poly_params,
        S(
            "setup",
            """
import sympy as sp
x = sp.symbols('x')
p = sp.expand(<<poly>>)
print(p)
print(sp.factor(p))
""",
            defines="sp x p",
        ),
        [
            S("roots", "roots = sp.solve(p, x)\nprint(roots)", "sp x p", "roots", typo="roots"),
            S(
                "real",
                "real = sorted(r for r in roots if r.is_real)\nprint(real)",
                "roots",
                "real",
                typo="real",
            ),
            S("sumsq", "s2 = sp.simplify(sum(r**2 for r in roots))\nprint(s2)", "sp roots", "s2", typo="s2"),
            S(
                "vieta",
                """
coeffs = sp.Poly(p, x).all_coeffs()
print(coeffs)
print(-coeffs[1] / coeffs[0], sp.simplify(sum(roots)))
""",
                "sp x p roots",
                "coeffs",
            ),
            S(
                "table",
                """
vals = {}
for k in range(-3, 4):
    vals[k] = p.subs(x, k)
    print(k, vals[k])
""",
                "x p",
                "vals",
            ),
            S("best", "best = min(vals, key=vals.get)\nprint(best, vals[best])", "vals", "best", typo="best"),
            S(
                "deriv",
                """
dp = sp.diff(p, x)
crit = sp.nroots(dp, n=8)
print(dp)
print(crit)
""",
                "sp x p",
                "dp crit",
            ),
            S("crit_vals", "print([sp.N(p.subs(x, c), 8) for c in crit if c.is_real])", "x p crit sp"),
            S("disc", "print(sp.discriminant(p, x))", "sp x p"),
            S(
                "rational",
                "val = p.subs(x, sp.Rational(<<a>>, <<b>>))\nprint(val)",
                "sp x p",
                "val",
                repeat=True,
                local=lambda r: {"a": r.randint(-7, 7), "b": r.randint(2, 5)},
                typo="val",
            ),
            S(
                "div",
                "q, rem = sp.div(p, x**2 + <<c>>, x)\nprint(q)\nprint(rem)",
                "sp x p",
                "q rem",
                repeat=True,
                local=lambda r: {"c": r.randint(1, 9)},
            ),
        ],
    ),
    Topic(
        "number_theory",
        lambda r: {
            "N": r.choice([2, 3, 4, 6, 8, 12])
            * r.choice([5, 7, 9, 11, 25, 49])
            * r.choice([13, 17, 19, 23, 29, 31])
        },
        S(
            "setup",
            """
from sympy import factorint, divisors, isprime, totient
N = <<N>>
f = factorint(N)
print(f)
""",
            defines="factorint divisors isprime totient N f",
        ),
        [
            S("divs", "divs = divisors(N)\nprint(len(divs), sum(divs))", "divisors N", "divs", typo="divs"),
            S(
                "coprime",
                """
from math import gcd
coprime = [k for k in range(1, N + 1) if gcd(k, N) == 1]
print(len(coprime), totient(N))
""",
                "N totient",
                "gcd coprime",
                typo="coprime",
            ),
            S(
                "pairs",
                """
pairs = []
for d in divs:
    if d * d <= N:
        pairs.append((d, N // d))
for a, b in pairs[:6]:
    print(a, b)
""",
                "divs N",
                "pairs",
            ),
            S("closest", "print(len(pairs), min(pairs, key=lambda t: t[1] - t[0]))", "pairs"),
            S(
                "modpow",
                "print(pow(<<b>>, N, <<m>>))",
                "N",
                repeat=True,
                local=lambda r: {"b": r.randint(2, 13), "m": r.choice([7, 100, 1000, 997])},
            ),
            S(
                "sigma",
                """
def sigma_k(n, k):
    return sum(d**k for d in divisors(n))
print(sigma_k(N, 2))
""",
                "divisors N",
                "sigma_k",
            ),
            S(
                "sigma_use",
                "print([sigma_k(n, 1) for n in range(<<a>>, <<a>> + 8)])",
                "sigma_k",
                repeat=True,
                local=lambda r: {"a": r.randint(2, 90)},
            ),
            S(
                "primes",
                "primes = [q for q in range(2, <<L>>) if isprime(q)]\nprint(len(primes), primes[-3:])",
                "isprime",
                "primes",
                local=lambda r: {"L": r.choice([200, 500, 1000])},
                typo="primes",
            ),
            S(
                "twins",
                "twins = [(a, b) for a, b in zip(primes, primes[1:]) if b - a == 2]\nprint(len(twins), twins[-2:])",
                "primes",
                "twins",
                typo="twins",
            ),
        ],
    ),
    Topic(
        "combinatorics",
        lambda r: {"n": r.randint(8, 14), "k": r.randint(2, 5), "m": r.randint(3, 7)},
        S(
            "setup",
            """
from math import comb, factorial
from itertools import combinations, permutations
n, k = <<n>>, <<k>>
print(comb(n, k))
""",
            defines="comb factorial combinations permutations n k",
        ),
        [
            S(
                "good",
                "good = [c for c in combinations(range(1, n + 1), k) if sum(c) % <<m>> == 0]\nprint(len(good))",
                "combinations n k",
                "good",
                typo="good",
            ),
            S("good_frac", "print(len(good), comb(n, k), len(good) / comb(n, k))", "good comb n k"),
            S(
                "derange",
                """
def derangements(r):
    return sum(1 for p in permutations(range(r)) if all(p[i] != i for i in range(r)))
print([derangements(r) for r in range(1, 7)])
""",
                "permutations",
                "derangements",
            ),
            S(
                "derange_check",
                """
import math
for r in range(1, 7):
    print(r, derangements(r), round(factorial(r) / math.e))
""",
                "derangements factorial",
                "math",
            ),
            S(
                "ways",
                """
ways = [1, 1]
for i in range(2, n + 1):
    ways.append(ways[-1] + ways[-2])
print(ways[n])
""",
                "n",
                "ways",
                typo="ways",
            ),
            S("ways_use", "print(sum(ways), ways[-1] % <<m>>)", "ways"),
            S(
                "stars",
                "print(comb(<<t>> + <<p>> - 1, <<p>> - 1))",
                "comb",
                repeat=True,
                local=lambda r: {"t": r.randint(5, 20), "p": r.randint(2, 6)},
            ),
            S(
                "paths",
                """
from functools import lru_cache

@lru_cache(maxsize=None)
def paths(a, b):
    if a == 0 or b == 0:
        return 1
    return paths(a - 1, b) + paths(a, b - 1)

print(paths(n, k), comb(n + k, k))
""",
                "n k comb",
                "paths lru_cache",
            ),
            S(
                "paths_use",
                "print([paths(i, i) for i in range(1, <<u>>)])",
                "paths",
                repeat=True,
                local=lambda r: {"u": r.randint(4, 12)},
            ),
            # A print call formatted over two lines, as black would write it.
            S(
                "even_subsets",
                """
total = sum(comb(n, j) for j in range(0, n + 1, 2))
print("even-size subsets:", total,
      "check:", 2 ** (n - 1))
""",
                "comb n",
                "total",
                weight=0.5,
            ),
        ],
    ),
    Topic(
        "linear_algebra",
        lambda r: {"A": _sym_matrix(r), "b": [r.randint(-9, 9) for _ in range(3)]},
        S(
            "setup",
            """
import numpy as np
A = np.array(<<A>>)
b = np.array(<<b>>)
print(A)
""",
            defines="np A b",
        ),
        [
            S("det", "d = np.linalg.det(A)\nprint(round(d, 6))", "np A", "d", typo="d"),
            S("solve", "xs = np.linalg.solve(A, b)\nprint(np.round(xs, 6))", "np A b", "xs", typo="xs"),
            S(
                "residual",
                "print(np.allclose(A @ xs, b), float(np.max(np.abs(A @ xs - b))) < 1e-9)",
                "np A b xs",
            ),
            S("eig", "w, V = np.linalg.eigh(A)\nprint(np.round(w, 6))", "np A", "w V", typo="w"),
            S(
                "orth",
                "print(np.allclose(V.T @ V, np.eye(3)), round(float(np.sum(w)), 6), int(np.trace(A)))",
                "np V w A",
            ),
            S(
                "printopts",
                """
np.set_printoptions(precision=4, suppress=True)
B = A @ A.T - <<c>> * np.eye(3)
print(B)
""",
                "np A",
                "B",
                local=lambda r: {"c": r.randint(1, 5)},
                weight=0.5,
            ),
            S("B_use", "print(np.trace(B), round(np.linalg.det(B), 4))", "np B"),
            S(
                "power",
                "M = np.linalg.matrix_power(A, <<e>>)\nprint(M[0])",
                "np A",
                "M",
                repeat=True,
                local=lambda r: {"e": r.randint(2, 5)},
            ),
            S(
                "exact",
                "import sympy as sp\nAs = sp.Matrix(A.tolist())\nprint(As.det(), As.inv()[0, 0])",
                "A",
                "sp As",
            ),
            S(
                "charpoly",
                "lam = sp.symbols('lam')\nprint(sp.factor(As.charpoly(lam).as_expr()))",
                "sp As",
                "lam",
            ),
        ],
    ),
    Topic(
        "calculus",
        lambda r: {
            "f": r.choice(
                [
                    "sin(x)*exp(x)",
                    "log(1 + x)/(1 - x)",
                    "cos(x)**2",
                    "exp(x**2)",
                    "x/(1 - x - x**2)",
                    "sqrt(1 + x)",
                    "atan(x)",
                    "exp(x)/(1 + x)",
                ]
            )
        },
        S(
            "setup",
            """
from sympy import symbols, sin, cos, exp, log, sqrt, atan, series, limit, integrate, diff, simplify, Rational, lambdify
x = symbols('x')
f = <<f>>
print(series(f, x, 0, 6))
""",
            defines="symbols series limit integrate diff simplify Rational lambdify x f",
        ),
        [
            S(
                "coeff",
                "c = series(f, x, 0, <<j>> + 2).removeO().coeff(x, <<j>>)\nprint(c)",
                "series x f",
                "c",
                repeat=True,
                local=lambda r: {"j": r.randint(2, 7)},
                typo="c",
            ),
            S("deriv", "df = diff(f, x)\nprint(simplify(df))", "diff simplify x f", "df", typo="df"),
            S("deriv0", "print(df.subs(x, 0), diff(f, x, 2).subs(x, 0))", "df diff x f"),
            S(
                "trapezoid",
                """
fn = lambdify(x, f, "math")
h = 0.5 / 1000
approx = h * (fn(0) / 2 + sum(fn(i * h) for i in range(1, 1000)) + fn(0.5) / 2)
print(round(approx, 8))
""",
                "lambdify x f",
                "fn h approx",
                typo="approx",
            ),
            S(
                "series_int",
                """
poly = series(f, x, 0, 8).removeO()
exact_poly = integrate(poly, (x, 0, Rational(1, 2)))
print(exact_poly, float(exact_poly))
print("abs error:", abs(float(exact_poly) - approx))
""",
                "series integrate Rational x f approx",
                "poly exact_poly",
            ),
            S("poly_use", "print(poly.coeff(x, 3), exact_poly * 2**8)", "poly exact_poly x"),
            S("limit", "print(limit((f - f.subs(x, 0)) / x, x, 0))", "limit x f"),
            S(
                "fn_use",
                "print([round(fn(t / 10), 6) for t in range(<<a>>, <<a>> + 4)])",
                "fn",
                repeat=True,
                local=lambda r: {"a": r.randint(0, 4)},
            ),
        ],
    ),
    Topic(
        "geometry",
        _triangle,
        S(
            "setup",
            """
from fractions import Fraction
import math
A, B, C = <<A>>, <<B>>, <<C>>

def area(P, Q, R):
    return Fraction(abs((Q[0] - P[0]) * (R[1] - P[1]) - (R[0] - P[0]) * (Q[1] - P[1])), 2)

print(area(A, B, C))
""",
            defines="Fraction math A B C area",
        ),
        [
            S(
                "sides",
                "sides = [math.dist(A, B), math.dist(B, C), math.dist(C, A)]\nprint([round(s, 6) for s in sides])",
                "math A B C",
                "sides",
                typo="sides",
            ),
            S(
                "circum",
                "R = sides[0] * sides[1] * sides[2] / (4 * float(area(A, B, C)))\nprint(round(R, 6))",
                "sides area A B C",
                "R",
                typo="R",
            ),
            S(
                "inradius",
                "s = sum(sides) / 2\nr = float(area(A, B, C)) / s\nprint(round(r, 6), round(R / r, 6))",
                "sides area A B C R",
                "s r",
            ),
            S(
                "centroid",
                "G = (Fraction(A[0] + B[0] + C[0], 3), Fraction(A[1] + B[1] + C[1], 3))\nprint(G)",
                "Fraction A B C",
                "G",
                typo="G",
            ),
            S(
                "pick",
                """
from math import gcd
bnd = sum(gcd(abs(P[0] - Q[0]), abs(P[1] - Q[1])) for P, Q in [(A, B), (B, C), (C, A)])
interior = area(A, B, C) - Fraction(bnd, 2) + 1
print(bnd, interior)
""",
                "area Fraction A B C",
                "gcd bnd interior",
                typo="interior",
            ),
            S(
                "brute",
                """
def inside(P):
    return area(A, B, P) + area(B, C, P) + area(C, A, P) == area(A, B, C)

pts = [(i, j) for i in range(-10, 11) for j in range(-10, 11) if inside((i, j))]
print(len(pts))
""",
                "area A B C",
                "inside pts",
                typo="pts",
            ),
            S("pick_check", "print(len(pts) == bnd + interior, len(pts))", "pts bnd interior"),
            S(
                "angles",
                """
angles = {}
for name, (P, Q, T) in {"A": (A, B, C), "B": (B, C, A), "C": (C, A, B)}.items():
    v1 = (Q[0] - P[0], Q[1] - P[1])
    v2 = (T[0] - P[0], T[1] - P[1])
    cosv = (v1[0] * v2[0] + v1[1] * v2[1]) / (math.hypot(*v1) * math.hypot(*v2))
    angles[name] = math.degrees(math.acos(cosv))
    print(name, round(angles[name], 4))
""",
                "math A B C",
                "angles",
            ),
            S("angles_use", "print(round(sum(angles.values()), 6), max(angles, key=angles.get))", "angles"),
            S(
                "decimal",
                "from decimal import Decimal\nprint(Decimal(area(A, B, C).numerator) / Decimal(<<q>>))",
                "area A B C",
                "Decimal",
                local=lambda r: {"q": r.choice([7, 13, 17, 19])},
                weight=0.5,
            ),
        ],
    ),
    Topic(
        "recurrence",
        lambda r: {
            "a0": r.randint(1, 3),
            "a1": r.randint(1, 4),
            "p": r.randint(1, 3),
            "q": r.randint(1, 3),
            "m": r.choice([5, 7, 11, 13]),
        },
        S(
            "setup",
            """
a = [<<a0>>, <<a1>>]
for n in range(2, 40):
    a.append(<<p>> * a[-1] + <<q>> * a[-2])
print(a[:10])
""",
            defines="a",
        ),
        [
            S("mod", "print(a[<<i>>] % 1000)", "a", repeat=True, local=lambda r: {"i": r.randint(10, 39)}),
            S(
                "ratios",
                "ratios = [a[i + 1] / a[i] for i in range(30, 38)]\nprint([round(t, 10) for t in ratios])",
                "a",
                "ratios",
                typo="ratios",
            ),
            S(
                "root",
                "import math\nroot = (<<p>> + math.sqrt(<<p>>**2 + 4 * <<q>>)) / 2\nprint(root, abs(ratios[-1] - root) < 1e-9)",
                "ratios",
                "math root",
                typo="root",
            ),
            S(
                "rsolve",
                """
from sympy import Function, rsolve, symbols
n = symbols('n', integer=True)
g = Function('g')
closed = rsolve(g(n) - <<p>> * g(n - 1) - <<q>> * g(n - 2), g(n), {g(0): <<a0>>, g(1): <<a1>>})
print(closed)
""",
                "",
                "Function rsolve symbols n g closed",
                typo="closed",
                weight=0.7,
            ),
            S(
                "closed_check",
                "print([int(round(float(closed.subs(n, i).evalf()))) for i in range(8)] == a[:8])",
                "closed n a",
            ),
            S(
                "memo",
                """
from functools import lru_cache

@lru_cache(None)
def T(m):
    if m < 2:
        return a[m]
    return <<p>> * T(m - 1) + <<q>> * T(m - 2)

print(T(39) == a[39], T(25))
""",
                "a",
                "lru_cache T",
            ),
            S(
                "T_use",
                "print(T(<<u>>) % <<m>>)",
                "T",
                repeat=True,
                local=lambda r: {"u": r.randint(40, 120)},
            ),
            S(
                "period",
                """
seq = [<<a0>> % <<m>>, <<a1>> % <<m>>]
for i in range(500):
    seq.append((<<p>> * seq[-1] + <<q>> * seq[-2]) % <<m>>)
for i in range(1, 300):
    if seq[i:i + 50] == seq[:50]:
        period = i
        print("period", period)
        break
""",
                "",
                "seq period",
            ),
            S("period_use", "print(seq[period + 7] == seq[7], period % 4)", "seq period"),
        ],
    ),
    Topic(
        "probability",
        lambda r: {"d": r.randint(2, 4), "s": None},
        S(
            "setup",
            """
from fractions import Fraction
from itertools import product
d, target = <<d>>, <<s>>
outcomes = list(product(range(1, 7), repeat=d))
P = Fraction(sum(1 for o in outcomes if sum(o) == target), len(outcomes))
print(P, float(P))
""",
            defines="Fraction product d target outcomes P",
        ),
        [
            S(
                "mc",
                """
import numpy as np
rolls = np.random.randint(1, 7, size=(200000, d))
est = float(np.mean(rolls.sum(axis=1) == target))
print(f"estimate: {est:.6f}")
""",
                "d target",
                "np rolls est",
                kind="mc",
                weight=1.5,
            ),
            S(
                "mc_recall",
                """
print(f"estimate again: {est:.6f}")
print(f"exact: {float(P):.6f}")
""",
                "est P",
                kind="mc_recall",
            ),
            S(
                "cond",
                "PA = Fraction(sum(1 for o in outcomes if o[0] == 6 and sum(o) >= target), len(outcomes))\nprint(PA)",
                "Fraction outcomes target",
                "PA",
                typo="PA",
            ),
            S(
                "expect",
                "E = Fraction(sum(sum(o) for o in outcomes), len(outcomes))\nprint(E)",
                "Fraction outcomes",
                "E",
                typo="E",
            ),
            S(
                "dist",
                """
from collections import Counter
dist = Counter(sum(o) for o in outcomes)
for total in sorted(dist)[:5]:
    print(total, Fraction(dist[total], len(outcomes)))
""",
                "Fraction outcomes",
                "Counter dist",
            ),
            S(
                "mode",
                "mode = max(dist, key=dist.get)\nprint(mode, dist[mode], Fraction(dist[mode], len(outcomes)))",
                "dist Fraction outcomes",
                "mode",
            ),
            S(
                "variance",
                "import statistics\nsums = [sum(o) for o in outcomes]\nprint(statistics.mean(sums), statistics.pvariance(sums))",
                "outcomes",
                "statistics sums",
            ),
            S(
                "other_target",
                "print(Fraction(sum(1 for o in outcomes if sum(o) == <<t>>), len(outcomes)))",
                "Fraction outcomes",
                repeat=True,
                local=lambda r: {"t": r.randint(3, 14)},
            ),
        ],
    ),
    Topic(
        "search",
        lambda r: {
            "c2": r.choice([25, 65, 85, 125, 145, 169, 185, 221, 325, 425, 625, 1105]),
            "u": r.randint(-2, 2),
            "v": r.randint(1, 3),
            "w": r.randint(1, 4),
        },
        S(
            "setup",
            """
L = 60
sols = [(a, b) for a in range(1, L) for b in range(a, L) if a * a + b * b == <<c2>>]
print(sols)
""",
            defines="L sols",
        ),
        [
            S("sols_use", "print(len(sols), [a + b for a, b in sols])", "sols"),
            S(
                "grid",
                """
import numpy as np

def g(t):
    return (t - <<u>>) ** 2 * (t + <<v>>) + <<w>> * np.sin(t)

ts = np.linspace(-3, 3, 60001)
vals = g(ts)
i = int(np.argmin(vals))
print(round(float(ts[i]), 4), round(float(vals[i]), 6))
""",
                "",
                "np g ts vals i",
            ),
            S(
                "golden",
                """
lo, hi = float(ts[max(i - 10, 0)]), float(ts[min(i + 10, len(ts) - 1)])
for _ in range(100):
    m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
    if g(m1) < g(m2):
        hi = m2
    else:
        lo = m1
tmin = (lo + hi) / 2
print(round(tmin, 8), round(float(g(tmin)), 8))
""",
                "g ts i",
                "lo hi tmin",
                typo="tmin",
            ),
            S(
                "best",
                """
best = None
for a in range(1, 60):
    for b in range(1, 60):
        if (a * b) % <<m>> == <<r>> and (best is None or a + b < sum(best)):
            best = (a, b)
            print("new best", best)
""",
                "",
                "best",
                local=lambda r: {"m": r.choice([7, 11, 13]), "r": r.randint(1, 6)},
            ),
            S("best_use", "print(best, best[0] * best[1])", "best"),
            S(
                "knapsack",
                """
weights = <<W>>
values = <<V>>
cap = <<cap>>
dp = [0] * (cap + 1)
for wt, val in zip(weights, values):
    for c in range(cap, wt - 1, -1):
        dp[c] = max(dp[c], dp[c - wt] + val)
print(dp[cap])
""",
                "",
                "weights values cap dp",
                local=lambda r: {
                    "W": [r.randint(2, 9) for _ in range(6)],
                    "V": [r.randint(3, 20) for _ in range(6)],
                    "cap": r.randint(15, 30),
                },
                typo="dp",
            ),
            S("dp_use", "print(dp.index(max(dp)), dp[:10])", "dp"),
            S(
                "mpmath",
                "import mpmath\nprint(mpmath.sqrt(<<n>>), mpmath.log(<<n>>))",
                "",
                "mpmath",
                local=lambda r: {"n": r.choice([2, 3, 5, 7, 10])},
                weight=0.5,
            ),
            S(
                "sols_check",
                "print(all(a * a + b * b == <<c2>> for a, b in sols), sols[-1] if sols else None)",
                "sols",
                repeat=True,
            ),
        ],
    ),
    Topic(
        "algebra",
        lambda r: {"s": r.randint(3, 12), "p": r.randint(1, 20)},
        S(
            "setup",
            """
from sympy import symbols, Eq, solve, simplify, expand, factor, Rational, sqrt
a, b = symbols('a b')
eqs = [Eq(a + b, <<s>>), Eq(a * b, <<p>>)]
sols = solve(eqs, [a, b], dict=True)
print(sols)
""",
            defines="symbols Eq solve simplify expand factor Rational sqrt a b eqs sols",
        ),
        [
            S(
                "powsum",
                "e = simplify((a**<<k>> + b**<<k>>).subs(sols[0]))\nprint(e)",
                "simplify a b sols",
                "e",
                repeat=True,
                local=lambda r: {"k": r.randint(2, 6)},
                typo="e",
            ),
            S(
                "newton",
                "p2 = <<s>>**2 - 2 * <<p>>\nprint(p2, simplify((a**2 + b**2).subs(sols[0])))",
                "simplify a b sols",
                "p2",
                typo="p2",
            ),
            S(
                "expand",
                "print(expand((a + b)**<<k>>))",
                "expand a b",
                repeat=True,
                local=lambda r: {"k": r.randint(3, 7)},
            ),
            S(
                "factor",
                "print(factor(a**4 - <<c>> * b**4))",
                "factor a b",
                local=lambda r: {"c": r.choice([1, 16, 81])},
            ),
            S(
                "rational",
                "r = Rational(<<n1>>, <<d1>>) + Rational(<<n2>>, <<d2>>)\nprint(r, r.p, r.q)",
                "Rational",
                "r",
                local=lambda r: {
                    "n1": r.randint(1, 9),
                    "d1": r.randint(2, 12),
                    "n2": r.randint(1, 9),
                    "d2": r.randint(2, 12),
                },
                typo="r",
            ),
            S("rational_use", "print(r ** 2, float(r))", "r"),
            S(
                "checks",
                """
checks = [simplify((a**3 + b**3).subs(sol)) for sol in sols]
for c in checks:
    print(c)
""",
                "simplify a b sols",
                "checks",
            ),
            S("checks_use", "print(len(set(checks)), checks[0] == <<s>>**3 - 3 * <<p>> * <<s>>)", "checks"),
        ],
    ),
    Topic(
        "digits",
        lambda r: {
            "e": r.randint(50, 500),
            "M": r.choice([5000, 10000, 20000]),
            "m": r.randint(3, 13),
            "v": r.randint(100, 5000),
        },
        S(
            "setup",
            """
def digit_sum(n):
    return sum(int(ch) for ch in str(n))

print(digit_sum(2 ** <<e>>))
""",
            defines="digit_sum",
        ),
        [
            S(
                "count",
                "count = sum(1 for n in range(1, <<M>>) if digit_sum(n) == <<t>>)\nprint(count)",
                "digit_sum",
                "count",
                local=lambda r: {"t": r.randint(5, 20)},
                typo="count",
            ),
            S(
                "pal",
                "pal = [n for n in range(10, <<M>>) if str(n) == str(n)[::-1] and n % <<m>> == 0]\nprint(len(pal), pal[:5])",
                "",
                "pal",
                typo="pal",
            ),
            S("pal_use", "print(sum(pal) % 1000, max(pal))", "pal"),
            S(
                "bases",
                """
def to_base(n, b):
    digits = []
    while n:
        digits.append(n % b)
        n //= b
    return digits[::-1] or [0]

for b in range(2, 7):
    print(b, to_base(<<v>>, b))
""",
                "",
                "to_base",
            ),
            S(
                "bases_use",
                "print([sum(to_base(n, <<b>>)) for n in range(<<v>>, <<v>> + 6)])",
                "to_base",
                repeat=True,
                local=lambda r: {"b": r.randint(2, 9)},
            ),
            S(
                "fact",
                "from math import factorial\nF = factorial(<<f>>)\nprint(len(str(F)), digit_sum(F))",
                "digit_sum",
                "factorial F",
                local=lambda r: {"f": r.randint(50, 300)},
                typo="F",
            ),
            S("zeros", "z = len(str(F)) - len(str(F).rstrip('0'))\nprint(z)", "F", "z"),
            S(
                "decimal",
                "from decimal import Decimal\nprint(Decimal(<<a>>) / Decimal(<<q>>))",
                "",
                "Decimal",
                local=lambda r: {"a": r.randint(1, 99), "q": r.choice([7, 13, 17, 19, 23])},
                weight=0.5,
            ),
        ],
    ),
    Topic(
        "precision",
        lambda r: {
            "prec": r.choice([30, 40, 50, 60]),
            "n": r.choice([2, 3, 5, 7, 10]),
            "dps": r.choice([25, 40, 50]),
            "p": r.randint(100, 999),
            "q": r.randint(101, 499),
        },
        S(
            "setup",
            """
from decimal import Decimal, getcontext
getcontext().prec = <<prec>>
root = Decimal(<<n>>).sqrt()
print(root)
""",
            defines="Decimal getcontext root",
        ),
        [
            S("root_use", "print(str(root)[:25], root * root)", "root"),
            S(
                "recip",
                "print(Decimal(1) / Decimal(<<q>>))",
                "Decimal",
                repeat=True,
                local=lambda r: {"q": r.choice([7, 13, 17, 19, 23, 29, 97])},
            ),
            S("mpmath", "from mpmath import mp\nmp.dps = <<dps>>\nprint(mp.pi)", "", "mp"),
            S("mp_use", "print(mp.sqrt(<<n>>) * mp.e)", "mp"),
            S(
                "cf",
                """
from fractions import Fraction
cf = []
v = Fraction(<<p>>, <<q>>)
while True:
    a0 = v.numerator // v.denominator
    cf.append(a0)
    if v == a0:
        break
    v = 1 / (v - a0)
print(cf)
""",
                "",
                "Fraction cf v a0",
                typo="cf",
            ),
            S(
                "convergents",
                """
h, k = [0, 1], [1, 0]
for t in cf:
    h.append(t * h[-1] + h[-2])
    k.append(t * k[-1] + k[-2])
    print(Fraction(h[-1], k[-1]))
""",
                "cf Fraction",
                "h k",
            ),
            S(
                "conv_use",
                "print(h[-1], k[-1], Fraction(h[-1], k[-1]) == Fraction(<<p>>, <<q>>))",
                "h k Fraction",
            ),
        ],
    ),
]

# Heavier cells: the long tail of compute in real model code (brute-force searches over 10^5 to
# 10^6 candidates, heavier sympy, seeded numpy and random simulations). Each step notes the kernel
# CPU time its cells took in reference runs on the 2-core AMD EPYC machine: "M" 20-200 ms (medium),
# "H" 0.3-2 s (heavy). Everything is seeded. They are added to their topic's steps unless --light.
# Steps with a print inside a loop are never replayed by CoRT (the replay drops any cell still
# containing "print"), so the cells that use their results fail there; the others are re-run on
# every later call of the trajectory, which is what makes CoRT's cost quadratic.
W_MEDIUM, W_HEAVY = 3.0, 0.8  # step weights: the mix gets about 19% medium and 5% heavy cells
TAIL: dict[str, list[Step]] = {
    "polynomial": [
        S(
            "int_square",  # M 15-100 ms
            """
import math
f = sp.lambdify(x, p)
squares = [k for k in range(-<<K>>, <<K>> + 1) if f(k) >= 0 and math.isqrt(f(k)) ** 2 == f(k)]
print(len(squares), squares[:10])
""",
            "sp x p",
            "math f squares",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"K": r.choice([10000, 20000, 30000])},
            typo="squares",
            repeat=True,
        ),
        S("squares_use", "print(sum(squares), [p.subs(x, k) for k in squares[:3]])", "squares p x"),
        S(
            "antideriv",  # M 65-100 ms
            "F = sp.integrate(1 / p, x)\nprint(F)",
            "sp x p",
            "F",
            tier="medium",
            weight=W_MEDIUM,
        ),
        S(
            "antideriv_check",  # M 80-100 ms
            "print(sp.simplify(sp.diff(F, x) - 1 / p))",
            "sp x p F",
            tier="medium",
            weight=W_MEDIUM,
        ),
        S(
            "divisible",  # H 0.33-0.55 s
            """
f = sp.lambdify(x, p)
div_hits = [k for k in range(-<<K>>, <<K>> + 1) if f(k) % <<q>> == 0]
print(len(div_hits), div_hits[:5])
""",
            "sp x p",
            "f div_hits",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"K": r.choice([700000, 1000000]), "q": r.choice([1001, 391, 667])},
        ),
        S("hits_use", "print(len(div_hits), min(div_hits, key=abs) if div_hits else None)", "div_hits"),
    ],
    "number_theory": [
        S(
            "sieve",  # M 35-105 ms
            """
LIM = <<lim>>
is_p = [True] * (LIM + 1)
is_p[0] = is_p[1] = False
for i in range(2, int(LIM ** 0.5) + 1):
    if is_p[i]:
        for j in range(i * i, LIM + 1, i):
            is_p[j] = False
print(sum(is_p))
""",
            "",
            "LIM is_p",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"lim": r.choice([500000, 1000000])},
        ),
        S(
            "goldbach",
            "reps = [(q, 2 * N - q) for q in range(2, N + 1) if is_p[q] and is_p[2 * N - q]]\nprint(len(reps), reps[:3])",
            "is_p N",
            "reps",
            typo="reps",
        ),
        S(
            "abundant",  # M 30-60 ms
            "abundant = [m for m in range(1, <<A>>) if sigma_k(m, 1) > 2 * m]\nprint(len(abundant), abundant[:8])",
            "sigma_k",
            "abundant",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"A": r.choice([5000, 8000])},
            typo="abundant",
        ),
        S(
            "collatz",  # H 0.4-0.7 s
            """
cache = {1: 1}

def clen(n):
    path = []
    while n not in cache:
        path.append(n)
        n = n // 2 if n % 2 == 0 else 3 * n + 1
    c = cache[n]
    for m in reversed(path):
        c += 1
        cache[m] = c
    return c

best_n, best_len = 1, 1
for n in range(1, <<C>>):
    length = clen(n)
    if length > best_len:
        best_n, best_len = n, length
print(best_n, best_len)
""",
            "",
            "cache clen best_n best_len",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"C": r.choice([400000, 600000])},
        ),
        S("collatz_use", "print(best_n, best_len, clen(N))", "clen best_n best_len N"),
    ],
    "combinatorics": [
        S(
            "perm_bad",  # M 30-50 ms
            """
bad = 0
for q in permutations(range(8)):
    if any(q[i] == i for i in range(8)) or any(q[i + 1] == q[i] + 1 for i in range(7)):
        bad += 1
print(factorial(8) - bad, bad)
""",
            "permutations factorial",
            "bad",
            tier="medium",
            weight=W_MEDIUM,
        ),
        S(
            "subsets6",  # M 15-50 ms
            """
cnt_sub = 0
for c in combinations(range(1, <<u>>), 6):
    if sum(c) % <<m>> == 0:
        cnt_sub += 1
print(cnt_sub, comb(<<u>> - 1, 6))
""",
            "combinations comb",
            "cnt_sub",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"u": r.choice([25, 27, 29])},
            repeat=True,
        ),
        S(
            "words",  # H 0.6-0.8 s
            """
from itertools import product
count_words = 0
for w in product(<<alphabet>>, repeat=<<L>>):
    s = ''.join(w)
    if 'AA' not in s and 'BCB' not in s:
        count_words += 1
print(count_words)
""",
            "",
            "product count_words",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: dict(zip(("alphabet", "L"), r.choice([("'ABC'", 14), ("'ABCD'", 11)]))),
        ),
        S("words_use", "print(count_words, count_words % <<m>>)", "count_words"),
    ],
    "linear_algebra": [
        S(
            "det_count",  # M 65-70 ms
            """
from itertools import product
unimod = 0
for e in product([-1, 0, 1], repeat=9):
    if round(np.linalg.det(np.array(e).reshape(3, 3))) == <<t>>:
        unimod += 1
print(unimod)
""",
            "np",
            "product unimod",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"t": r.choice([1, 2, 4])},
            typo="unimod",
        ),
        S(
            "quadform",  # M 30-110 ms
            """
rng = np.random.default_rng(<<seed>>)
vs = rng.standard_normal((<<n>>, 3))
q = np.einsum('ij,jk,ik->i', vs, A, vs)
print(round(float(q.mean()), 4), round(float(np.mean(q > np.trace(A))), 4))
""",
            "np A",
            "rng vs q",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"seed": r.randint(0, 999), "n": r.choice([500000, 1000000])},
            repeat=True,
        ),
        S("q_use", "print(round(float(q.mean()) - float(np.trace(A)), 3), q.shape)", "np q A"),
        S(
            "power_iter",  # H 0.4-0.75 s
            """
v = np.ones(3)
hist = []
for t in range(<<T>>):
    v = A @ v
    v = v / np.linalg.norm(v)
    hist.append(float(v @ A @ v))
print(round(hist[-1], 9), len(hist))
""",
            "np A",
            "v hist",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"T": r.choice([100000, 150000])},
        ),
        S(
            "hist_use",
            "print(round(hist[-1], 6), round(float(np.max(np.linalg.eigvalsh(A))), 6))",
            "np hist A",
        ),
    ],
    "calculus": [
        S(
            "series_hi",  # M 15-150 ms
            "s_hi = series(f, x, 0, <<o>>)\nprint(s_hi)",
            "series x f",
            "s_hi",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"o": r.choice([12, 14, 16])},
        ),
        S(
            "quad30",  # M 15-90 ms
            "from sympy import Integral\nI30 = Integral(f, (x, 0, Rational(1, 2))).evalf(30)\nprint(I30)",
            "x f Rational",
            "Integral I30",
            tier="medium",
            weight=W_MEDIUM,
            typo="I30",
        ),
        S("quad_use", "print(abs(float(I30) - approx) < 1e-6, round(approx, 8))", "I30 approx"),
        S(
            "simpson",  # H 0.45-0.55 s
            """
N = <<N>>
h2 = 0.5 / N
S = fn(0) + fn(0.5) + sum((4 if i % 2 else 2) * fn(i * h2) for i in range(1, N))
simpson = S * h2 / 3
print(simpson)
""",
            "fn",
            "N h2 S simpson",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"N": r.choice([3000000, 4000000])},
        ),
        S("simpson_use", "print(round(simpson, 12), abs(simpson - approx) < 1e-6)", "simpson approx"),
    ],
    "geometry": [
        S(
            "lattice_big",  # M 25-60 ms
            """
pts_big = [(i, j) for i in range(-<<R>>, <<R>> + 1) for j in range(-<<R>>, <<R>> + 1) if inside((i, j))]
print(len(pts_big))
""",
            "inside",
            "pts_big",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"R": r.choice([40, 50, 60])},
        ),
        S(
            "fermat",  # M 35-40 ms
            """
fermat = None
for i in range(-160, 161):
    for j in range(-160, 161):
        P = (i / 20, j / 20)
        t = math.dist(P, A) + math.dist(P, B) + math.dist(P, C)
        if fermat is None or t < fermat[0]:
            fermat = (t, P)
print(fermat)
""",
            "math A B C",
            "fermat",
            tier="medium",
            weight=W_MEDIUM,
        ),
        S("fermat_use", "print(round(fermat[0], 6), fermat[1])", "fermat"),
        S(
            "lattice_count",  # H 0.35-0.65 s, prints inside its loop
            """
count_in = 0
for i in range(-<<R>>, <<R>> + 1):
    for j in range(-<<R>>, <<R>> + 1):
        if area(A, B, (i, j)) + area(B, C, (i, j)) + area(C, A, (i, j)) == area(A, B, C):
            count_in += 1
    if i % 50 == 0:
        print(i, count_in)
print("total", count_in)
""",
            "area A B C",
            "count_in",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"R": r.choice([150, 200])},
        ),
        S("count_in_use", "print(count_in, area(A, B, C))", "count_in area A B C"),
    ],
    "recurrence": [
        S(
            "big_term",  # M 20-105 ms
            """
big = a[:2]
for j in range(2, <<n>>):
    big.append(<<p>> * big[-1] + <<q>> * big[-2])
print(big[-1].bit_length(), big[-1] % 10**12)
""",
            "a",
            "big",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"n": r.choice([20000, 30000])},
        ),
        S(
            "big_use",
            "print(len(big), big[<<i>>] == a[<<i>>])",
            "big a",
            local=lambda r: {"i": r.randint(5, 39)},
        ),
        S(
            "recmod",  # H 0.35-0.6 s
            """
MOD = 10**9 + 7
u, v = <<a0>>, <<a1>>
for _ in range(<<T>>):
    u, v = v, (<<p>> * v + <<q>> * u) % MOD
print(u, v)
""",
            "",
            "MOD u v",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"T": r.choice([3000000, 5000000])},
        ),
        S("recmod_use", "print((u + v) % MOD, pow(<<p>>, 10, MOD))", "u v MOD"),
    ],
    "probability": [
        S(
            "dice_exact",  # M 20-145 ms
            """
cnt_big = sum(1 for o in product(range(1, 7), repeat=<<r>>) if sum(o) == <<t>>)
print(cnt_big, Fraction(cnt_big, 6 ** <<r>>))
""",
            "product Fraction",
            "cnt_big",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: (lambda k: {"r": k, "t": r.randint(3 * k, 4 * k)})(r.choice([7, 8])),
            typo="cnt_big",
            repeat=True,
        ),
        S(
            "np_dice",  # M 20-190 ms
            """
import numpy as np
rng_np = np.random.default_rng(<<seed>>)
sim_sums = rng_np.integers(1, 7, size=(<<n>>, d)).sum(axis=1)
est_seeded = float(np.mean(sim_sums == target))
print(est_seeded, float(P))
""",
            "d target P",
            "np rng_np sim_sums est_seeded",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"seed": r.randint(0, 999), "n": r.choice([1000000, 2000000])},
            repeat=True,
        ),
        S(
            "dice_sim",  # H 0.2-0.7 s (grows with the target)
            """
import random
rng = random.Random(<<seed>>)
trials = 400000
wins = 0
for _ in range(trials):
    total = 0
    rolls_needed = 0
    while total < target:
        total += rng.randint(1, 6)
        rolls_needed += 1
    wins += rolls_needed <= d
print(wins / trials)
""",
            "d target",
            "random rng trials wins",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"seed": r.randint(0, 999)},
        ),
        S("wins_use", "print(wins, round(wins / trials, 4))", "wins trials"),
    ],
    "search": [
        S(
            "pyth",  # H 0.45-0.75 s
            """
import math
trip = []
for a in range(1, <<L>>):
    for b in range(a, <<L>>):
        c2 = a * a + b * b
        c = math.isqrt(c2)
        if c * c == c2:
            trip.append((a, b, c))
print(len(trip), trip[-1])
""",
            "",
            "math trip",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"L": r.choice([2500, 3000])},
            typo="trip",
        ),
        S("trip_use", "print(sum(1 for t in trip if t[2] % 5 == 0), trip[:3])", "trip"),
        S(
            "pell",  # H 0.3-0.55 s, prints inside its loop
            """
record = None
for a in range(1, <<B>>):
    for b in range(1, <<B>>):
        val = abs(a * a - <<k>> * b * b - 1)
        if record is None or val < record[0]:
            record = (val, a, b)
            print("new best", record)
print(record)
""",
            "",
            "record",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"k": r.choice([2, 3, 5, 6, 7]), "B": r.choice([1500, 2000])},
        ),
        S("record_use", "print(record, record[1] + record[2])", "record"),
        S(
            "mesh",  # M 35-160 ms
            """
X, Y = np.meshgrid(np.linspace(-3, 3, <<G>>), np.linspace(-3, 3, <<G>>))
Z = g(X) * np.cos(Y) + Y ** 2
kk = np.unravel_index(np.argmin(Z), Z.shape)
print(round(float(X[kk]), 4), round(float(Y[kk]), 4), round(float(Z[kk]), 6))
""",
            "np g",
            "X Y Z kk",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"G": r.choice([1201, 1601])},
        ),
    ],
    "algebra": [
        S(
            "simplify_sum",  # M 80-125 ms
            """
from sympy import together
expr = sum((a + j * b) ** 2 / (a ** 2 - j ** 2 * b ** 2) for j in range(1, <<J>>))
print(simplify(together(expr)))
""",
            "simplify a b",
            "together expr",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"J": r.choice([5, 6])},
        ),
        S(
            "expand_big",  # M 25-80 ms
            "E = expand((a + b + 1) ** <<k>>)\nprint(len(E.args), E.coeff(a, 3).coeff(b, 2))",
            "expand a b",
            "E",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"k": r.choice([20, 25, 30])},
            repeat=True,
        ),
        S(
            "dioph",  # H 0.4-0.6 s
            """
sols_int = []
for u in range(-<<B>>, <<B>> + 1):
    for v in range(-<<B>>, <<B>> + 1):
        if u * u + u * v + v * v == <<t>>:
            sols_int.append((u, v))
print(len(sols_int), sols_int[:6])
""",
            "",
            "sols_int",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"B": r.choice([1000, 1200]), "t": r.choice([7, 13, 19, 21, 37, 49, 91, 133])},
        ),
        S("dioph_use", "print(len(sols_int), sorted({u * u + v * v for u, v in sols_int})[:4])", "sols_int"),
    ],
    "digits": [
        S(
            "count_big",  # H 0.4-0.7 s
            "count_big = sum(1 for n in range(1, <<B>>) if digit_sum(n) == <<t>>)\nprint(count_big)",
            "digit_sum",
            "count_big",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"B": r.choice([700000, 1000000]), "t": r.randint(10, 30)},
        ),
        S("count_big_use", "print(count_big, count_big % 1000)", "count_big"),
        S(
            "pal_sq",  # M 30-85 ms
            "pal_sq = [n for n in range(1, <<P>>) if str(n * n) == str(n * n)[::-1]]\nprint(len(pal_sq), pal_sq[-3:])",
            "",
            "pal_sq",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"P": r.choice([200000, 400000])},
            typo="pal_sq",
            repeat=True,
        ),
        S(
            "pow_digits",  # M 45-105 ms
            "ds = [digit_sum(2 ** e) for e in range(1, <<E>>)]\nprint(max(ds), ds.index(max(ds)) + 1)",
            "digit_sum",
            "ds",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"E": r.choice([2000, 3000])},
        ),
    ],
    "precision": [
        S(
            "pi_digits",  # M 50-130 ms
            """
from mpmath import mp
from collections import Counter
with mp.workdps(<<D>>):
    pi_digits = str(mp.pi)[2:]
print(Counter(pi_digits).most_common(3))
""",
            "",
            "Counter pi_digits",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"D": r.choice([30000, 50000])},
        ),
        S(
            "gauss",  # M 20-45 ms
            """
from mpmath import quad, inf
import mpmath
with mpmath.workdps(<<qd>>):
    gauss = quad(lambda t: mpmath.exp(-t ** 2) * mpmath.cos(<<c>> * t), [0, inf])
print(gauss)
""",
            "",
            "quad inf mpmath gauss",
            tier="medium",
            weight=W_MEDIUM,
            local=lambda r: {"qd": r.choice([30, 50]), "c": r.randint(1, 3)},
        ),
        S(
            "beatty",  # H 0.4-0.6 s
            """
r = Decimal(<<n>>).sqrt()
near = 0
for j in range(1, <<B>>):
    t = j * r
    if t - int(t) < Decimal('0.01'):
        near += 1
print(near)
""",
            "Decimal",
            "r near",
            tier="heavy",
            weight=W_HEAVY,
            local=lambda r: {"B": r.choice([800000, 1000000])},
        ),
        S("near_use", "print(near, root)", "near root"),
    ],
}

# Cross-cutting cells that may appear in any trajectory (names chosen not to collide with topics).
ZERODIV = [
    (
        S(
            "zerodiv_frac",
            """
from fractions import Fraction
terms = [Fraction(1, j - <<z>>) for j in range(<<m>>)]
print(sum(terms))
""",
            "",
            "Fraction terms",
            kind="error",
        ),
        S(
            "zerodiv_frac_fix",
            "terms = [Fraction(1, j - <<z>>) for j in range(<<m>>) if j != <<z>>]\nprint(sum(terms))",
            "Fraction",
            "terms",
        ),
    ),
    (
        S(
            "zerodiv_float",
            """
import math
harm = [1 / (j * j - <<z>> * <<z>>) for j in range(<<m>>)]
print(sum(harm))
""",
            "",
            "math",
            kind="error",
        ),
        S(
            "zerodiv_float_fix",
            "harm = [1 / (j * j - <<z>> * <<z>>) for j in range(<<m>>) if j != <<z>>]\nprint(round(sum(harm), 10), math.pi)",
            "math",
            "harm",
        ),
    ),
]
PI_MC = S(
    "pi_mc",
    """
import random
import math
n_pts = 20000
hits = sum(1 for _ in range(n_pts) if random.random() ** 2 + random.random() ** 2 < 1)
pi_est = 4 * hits / n_pts
print(f"estimate: {pi_est:.6f}")
print("abs error:", round(abs(pi_est - math.pi), 4))
""",
    "",
    "random math n_pts hits pi_est",
    kind="mc",
)
PI_RECALL = S(
    "pi_recall", 'print(f"estimate again: {pi_est:.6f}")\nprint(pi_est > 3)', "pi_est", kind="mc_recall"
)

P_MC, P_RECALL, P_ERROR = 0.025, 0.5, 0.08


def _typo(name: str, taken: set[str]) -> str:
    options = [name + name[-1], name[:-1] if len(name) > 2 else name + "s"]
    if len(name) >= 4:
        options.insert(0, name[0] + name[2:])  # a dropped letter: "divs" -> "dvs"
    for cand in options:
        if cand not in taken and cand.isidentifier():
            return cand
    return name + "_"


def _code_for(step: Step, topic_values: dict, rng: random.Random) -> str:
    values = dict(topic_values)
    if step.local:
        values.update(step.local(rng))
    return fill(step.code, values)


def topics_for(light: bool) -> list[Topic]:
    """The topics with their heavier steps (TAIL), or without them (--light: the earlier workload)."""
    if light:
        return TOPICS
    return [replace(t, steps=[*t.steps, *TAIL.get(t.name, [])]) for t in TOPICS]


def make_trajectory(tid: int, n_cells: int, rng: random.Random, topics: list[Topic] = TOPICS) -> Trajectory:
    topic = rng.choice(topics)
    values = topic.params(rng)
    if topic.name == "probability":
        values["s"] = rng.randint(values["d"] + 1, 6 * values["d"] - 1)
    all_names = set().union(*(s.defines for s in topic.steps), topic.setup.defines)
    cells: list[Cell] = [Cell(_code_for(topic.setup, values, rng), step="setup")]
    have = set(topic.setup.defines)
    used: Counter = Counter()
    mc_src: dict[str, int] = {}
    recalled: set[int] = set()
    pending: Cell | None = None
    while len(cells) < n_cells:
        if pending is not None:
            cells.append(pending)
            pending = None
            continue
        u = rng.random()
        if u < P_MC and used["pi_mc"] < 2:
            used["pi_mc"] += 1
            mc_src["pi_est"] = len(cells)
            cells.append(Cell(fill(PI_MC.code, {}), "mc", "pi_mc"))
            have |= PI_MC.defines
            continue
        recallable = [(n, i) for n, i in mc_src.items() if i not in recalled]
        if recallable and rng.random() < P_RECALL:
            name, src = recallable[0]
            recalled.add(src)
            step = PI_RECALL if name == "pi_est" else next(s for s in topic.steps if s.kind == "mc_recall")
            cells.append(Cell(fill(step.code, values), "mc_recall", step.name, mc_src=src))
            continue
        candidates = [
            s
            for s in topic.steps
            if s.needs <= have and (s.repeat or not used[s.name]) and s.kind != "mc_recall"
        ]
        if u < P_MC + P_ERROR:
            typo_steps = [s for s in candidates if s.typo]
            if typo_steps and rng.random() < 0.6:
                # The model computes something new, then misspells it in the final print; the next
                # cell prints it correctly. Stateful: the value exists. Replay: the cell is gone.
                step = rng.choice(typo_steps)
                used[step.name] += 1
                code = _code_for(step, values, rng)
                lines = code.split("\n")
                wrong = _typo(step.typo, all_names | have)
                lines[-1], count = re.subn(rf"\b{re.escape(step.typo)}\b", wrong, lines[-1], count=1)
                assert count == 1 and lines[-1].startswith("print("), (step.name, lines[-1])
                cells.append(Cell("\n".join(lines), "error", step.name + ":typo"))
                have |= step.defines
                pending = Cell(code.split("\n")[-1], "plain", step.name + ":fix")
            else:
                bad, fix = rng.choice(ZERODIV)
                m = rng.randint(4, 9)
                zv = {"z": rng.randint(1, m - 1), "m": m}
                cells.append(Cell(fill(bad.code, zv), "error", bad.name))
                have |= bad.defines
                pending = Cell(fill(fix.code, zv), "plain", fix.name)
            continue
        if not candidates:
            candidates = [s for s in topic.steps if s.repeat and s.needs <= have] or [topic.setup]
        weights = [s.weight * (0.3 if used[s.name] else 1.0) for s in candidates]
        step = rng.choices(candidates, weights)[0]
        used[step.name] += 1
        if step.kind == "mc":
            mc_src["est"] = len(cells)
        cells.append(Cell(_code_for(step, values, rng), step.kind, step.name))
        have |= step.defines
    return Trajectory(tid, topic.name, cells)


def cell_counts(rng: random.Random, n: int, p: float = 0.25, lo: int = 1, hi: int = 15) -> list[int]:
    """Long-tailed trajectory lengths: geometric (mean 1/p = 4), clipped to [lo, hi]."""
    out = []
    for _ in range(n):
        k = 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))
        out.append(max(lo, min(hi, k)))
    return out


def make_workload(n: int, seed: int, fixed_cells: int | None = None, light: bool = False) -> list[Trajectory]:
    rng = random.Random(seed)
    topics = topics_for(light)
    counts = [fixed_cells] * n if fixed_cells else cell_counts(rng, n)
    return [make_trajectory(i, c, rng, topics) for i, c in enumerate(counts)]


# --------------------------------------------------------------------------------------------
# Runners. Each returns per trajectory a list of (model-facing text, is_error).
# --------------------------------------------------------------------------------------------

Outputs = list[list[tuple[str, bool]]]

PROMPT = (
    "<|User|>Find the answer. Please integrate natural language reasoning with python programs to solve the "
    "problem above, and put your final answer within \\boxed{}.<|Assistant|><think>\nOkay, let's try to solve "
    "this problem step by step using multiple python code calls.\n\n"
)


def run_cort(trajs: list[Trajectory]) -> tuple[Outputs, float, int]:
    """CoRT's batch loop: synchronous rounds, a fresh pool per round. Returns outputs, seconds, rounds."""
    queries = [PROMPT] * len(trajs)
    outputs: Outputs = [[] for _ in trajs]
    rounds = max(len(t.cells) for t in trajs)
    start = time.perf_counter()
    for r in range(rounds):
        active = [i for i, t in enumerate(trajs) if len(t.cells) > r]
        for i in active:
            queries[i] += f"Let me compute this with code.\n\n```python\n{trajs[i].cells[r].code}\n```\n"
        programs = [extract_jupyter_like_program(queries[i]) for i in active]
        results = cort_batch_apply(programs, CELL_TIMEOUT_S)
        for i, (res, report) in zip(active, results):
            exec_result = res if res else report
            queries[i] += f"```output\n{exec_result}\n```\n"
            outputs[i].append((exec_result, not res and bool(report)))
    return outputs, time.perf_counter() - start, rounds


def _config() -> SandboxConfig:
    return SandboxConfig(timeout_s=CELL_TIMEOUT_S)


async def _cortbench(
    trajs: list[Trajectory], limit: int | None = None, measure: bool = False
) -> tuple[Outputs, dict]:
    """Run every trajectory in its own session. With `measure`, also record each cell's CPU time
    (`ExecResult.cpu_s`: the kernel's own and its reaped children's CPU time during the cell)."""
    timings: dict = {"cell_clock": "cpu"}
    start = time.perf_counter()
    async with LocalSandbox(_config()) as sandbox:
        timings["startup_s"] = time.perf_counter() - start
        gate = asyncio.Semaphore(limit) if limit else None
        cell_ms: list[list[float]] = [[] for _ in trajs]

        async def trajectory(index: int, traj: Trajectory) -> list[tuple[str, bool]]:
            outs = []
            async with sandbox.session() as kernel:
                for cell in traj.cells:
                    result = await kernel.run(cell.code)
                    outs.append((result.output, not result.ok))
                    if measure:
                        if result.cpu_s is None:
                            timings["cell_clock"] = "wall"
                        cell_ms[index].append(
                            1000 * (result.duration_s if result.cpu_s is None else result.cpu_s)
                        )
            return outs

        async def gated(index: int, traj: Trajectory):
            if gate is None:
                return await trajectory(index, traj)
            async with gate:
                return await trajectory(index, traj)

        outputs = await asyncio.gather(*(gated(i, t) for i, t in enumerate(trajs)))
        timings["cells_done_s"] = time.perf_counter() - start
        timings["isolated"] = sandbox.isolated
        if measure:
            timings["cell_ms"] = cell_ms
    timings["total_s"] = time.perf_counter() - start
    return list(outputs), timings


def run_cortbench(trajs: list[Trajectory]) -> tuple[Outputs, dict]:
    """All trajectories concurrently, each in its own session; sandbox start and close are timed."""
    return asyncio.run(_cortbench(trajs))


def run_reference(trajs: list[Trajectory]) -> tuple[Outputs, list[list[float]], str]:
    """Real stateful sessions, two trajectories at a time (untimed); also each cell's CPU ms."""
    outputs, timings = asyncio.run(_cortbench(trajs, limit=2, measure=True))
    return outputs, timings["cell_ms"], timings["cell_clock"]


def _inprocess_one(cells: list[str]) -> list[tuple[str, bool]]:
    """A plain exec of the trajectory's cells in one dict (run in a fresh forked child)."""
    ns: dict = {"__name__": "__main__"}
    outs = []
    for i, code in enumerate(cells):
        buf = io.StringIO()
        try:
            with redirect_stdout(buf):
                exec(compile(code, f"<cell-{i + 1}>", "exec"), ns)
            text = buf.getvalue().strip()
            outs.append((cort_truncate(text), False))
        except BaseException as exc:  # noqa: BLE001
            outs.append(("".join(traceback.format_exception_only(type(exc), exc)).strip(), True))
    return outs


def run_inprocess(trajs: list[Trajectory]) -> Outputs:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(min(2, os.cpu_count() or 1), maxtasksperchild=1) as pool:
        return pool.map(_inprocess_one, [[c.code for c in t.cells] for t in trajs], chunksize=1)


# --------------------------------------------------------------------------------------------
# Comparison.
# --------------------------------------------------------------------------------------------

_EST = re.compile(r"estimate(?: again)?: (-?[0-9.]+)")


def _normal(text: str, is_error: bool) -> str:
    if is_error:  # tracebacks differ by frames and line numbers: compare the exception line
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return "ERROR " + (lines[-1].strip() if lines else "")
    return text.strip()


def _estimate(text: str) -> str | None:
    match = _EST.search(text)
    return match.group(1) if match else None


def compare(trajs: list[Trajectory], ref: Outputs, run: Outputs) -> dict:
    """Count cells whose output differs from the stateful reference (see the module docstring)."""
    diffs, classes = [], Counter()
    exact = mc = recall = 0
    for traj, ref_outs, run_outs in zip(trajs, ref, run):
        for idx, (cell, (rt, re_), (ot, oe)) in enumerate(zip(traj.cells, ref_outs, run_outs)):
            if cell.kind == "mc":
                mc += 1
                ok = re_ == oe
            elif cell.kind == "mc_recall":
                recall += 1
                src_text, src_err = run_outs[cell.mc_src]
                ok = re_ == oe and (oe or (not src_err and _estimate(ot) == _estimate(src_text) is not None))
            else:
                exact += 1
                ok = _normal(rt, re_) == _normal(ot, oe)
            if not ok:
                got = _normal(ot, oe)
                if oe and "NameError" in got:
                    cls = "missing_state_nameerror"
                elif oe and ("IndentationError" in got or "SyntaxError" in got):
                    cls = "replay_syntax_error"
                elif cell.kind == "mc_recall" and not oe:
                    cls = "monte_carlo_redrawn"
                elif oe:
                    cls = "other_error"
                else:
                    cls = "different_output"
                classes[cls] += 1
                diffs.append(
                    {
                        "trajectory": traj.tid,
                        "cell": idx,
                        "step": cell.step,
                        "class": cls,
                        "expected": _normal(rt, re_)[:160],
                        "got": got[:160],
                    }
                )
    cells = sum(len(t.cells) for t in trajs)
    return {
        "errors": len(diffs),
        "cells": cells,
        "exact_compared": exact,
        "mc_cells": mc,
        "mc_recall_cells": recall,
        "classes": dict(classes),
        "examples": diffs,
        "trajectories_affected": len({d["trajectory"] for d in diffs}),
    }


# --------------------------------------------------------------------------------------------
# Warm latency.
# --------------------------------------------------------------------------------------------


async def _latency(n: int) -> list[float]:
    async with LocalSandbox(_config()) as sandbox:
        async with sandbox.session() as kernel:
            for _ in range(20):
                await kernel.run("print(1+1)")
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                result = await kernel.run("print(1+1)")
                samples.append(time.perf_counter() - t0)
                if result.output != "2":
                    raise RuntimeError(f"print(1+1) gave {result.output!r}")
    return samples


RNG_PROBE = (
    "import random, numpy as np\n"
    "print(random.getrandbits(62), np.random.randint(2**62), np.random.default_rng().integers(2**62))"
)


async def _rng_probe(n: int = 6) -> bool:
    """Unseeded random numbers must differ between kernels (forks share the parent's RNG state)."""
    async with LocalSandbox(_config()) as sandbox:

        async def one() -> list[str]:
            async with sandbox.session() as kernel:
                return (await kernel.run(RNG_PROBE)).output.split()

        draws = await asyncio.gather(*(one() for _ in range(n)))
    return all(len({d[i] for d in draws}) == n for i in range(3))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# Cell-time buckets (ms, upper bound exclusive); the workload aims at about 70% under 10 ms, 25% at
# 20-200 ms and 5% at 0.3-2 s (the last two are the long tail that --light leaves out).
BUCKETS = [("<10ms", 0, 10), ("10-20ms", 10, 20), ("20-200ms", 20, 200), ("200-300ms", 200, 300)]
BUCKETS += [("0.3-2s", 300, 2000), (">=2s", 2000, math.inf)]


def cell_time_stats(cell_ms: list[list[float]], clock: str) -> dict:
    """Distribution of the reference run's per-cell times (kernel CPU ms, or wall ms if no /proc)."""
    flat = [x for traj in cell_ms for x in traj]
    return {
        "clock": clock,
        "p50": round(percentile(flat, 0.5), 2),
        "p90": round(percentile(flat, 0.9), 2),
        "p99": round(percentile(flat, 0.99), 2),
        "max": round(max(flat), 2),
        "mean": round(statistics.mean(flat), 2),
        "total_s": round(sum(flat) / 1000, 2),
        "shares": {name: round(sum(lo <= x < hi for x in flat) / len(flat), 4) for name, lo, hi in BUCKETS},
    }


# --------------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------------


def machine_info() -> dict:
    try:
        with open("/proc/loadavg") as fh:
            load = fh.read().split()[:3]
    except OSError:
        load = []
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    import pebble

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": load,
        "commit": commit,
        "pebble": getattr(pebble, "__version__", "?"),
        "sympy": sympy.__version__,
        "numpy": numpy.__version__,
    }


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().split()[0]
    except OSError:
        return "?"


def _describe(name: str, trajs: list[Trajectory]) -> str:
    counts = [len(t.cells) for t in trajs]
    kinds = Counter(c.kind for t in trajs for c in t.cells)
    return (
        f"{name}: {len(trajs)} trajectories, {sum(counts)} cells (mean {statistics.mean(counts):.2f}, "
        f"max {max(counts)}), error cells {kinds['error']}, Monte Carlo {kinds['mc']}, "
        f"re-printed estimates {kinds['mc_recall']}"
    )


# Default sizes: (trajectories in the mix, in the 4-cell set, in the 15-cell set, timed repetitions).
# With the long tail, CoRT's replay re-runs every earlier heavy cell on every later call, so the
# 4-cell and 15-cell sets are smaller (80 and 10 instead of 200 and 40) and there are 2 repetitions
# instead of 3: about 5 minutes in all on 2 cores. --light keeps the earlier sizes (about 2 minutes).
SIZES = {
    ("tail", False): (200, 80, 10, 2),
    ("light", False): (200, 200, 40, 3),
    ("tail", True): (20, 20, 4, 1),
    ("light", True): (20, 20, 6, 1),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small workloads, 1 repetition")
    parser.add_argument(
        "--light",
        action="store_true",
        help="leave out the long tail of heavier cells (TAIL): every cell takes a few ms (the earlier workload)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed repetitions per workload (median; default 2, --light 3)",
    )
    parser.add_argument("--seed", type=int, default=20251125)
    parser.add_argument(
        "--trajectories", type=int, default=None, help="trajectories in the mix (default 200)"
    )
    parser.add_argument(
        "--long-trajectories",
        type=int,
        default=None,
        help="trajectories in the 15-cell set (default 10, --light 40)",
    )
    parser.add_argument(
        "--short-trajectories",
        type=int,
        default=None,
        help="trajectories in the 4-cell set (default 80, --light 200)",
    )
    parser.add_argument(
        "--latency-runs", type=int, default=None, help="warm print(1+1) samples (default 1000)"
    )
    parser.add_argument("--show-diffs", type=int, default=1, help="example mismatches to print per class")
    args = parser.parse_args(argv)

    if ProcessPool is None:
        print(
            "bench/interpreter.py needs pebble for the CoRT baseline (CoRT's executor uses pebble.ProcessPool).\n"
            "Install it into this environment:  pip install -e '.[bench]'  (or: pip install pebble)",
            file=sys.stderr,
        )
        return 2

    quick, light = args.quick, args.light
    workload_kind = "light" if light else "tail"
    d_mix, d4, d15, d_repeat = SIZES[(workload_kind, quick)]
    repeat = args.repeat or d_repeat
    n_mix = args.trajectories or d_mix
    n15 = args.long_trajectories or d15
    n4 = args.short_trajectories or d4
    latency_runs = args.latency_runs or (200 if quick else 1000)
    wall_start = time.perf_counter()
    machine = machine_info()
    print(
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, Python {machine['python']}, "
        f"load average {' '.join(machine['loadavg_at_start'])}, pebble {machine['pebble']}"
    )
    approaches = ["cort", "cortbench"]

    print(
        f"workload: {workload_kind} ({'no heavier cells' if light else 'with the long tail of heavier cells'})"
    )
    workloads = {
        "mix": make_workload(n_mix, args.seed, light=light),
        "4cell": make_workload(n4, args.seed + 1, fixed_cells=4, light=light),
        "15cell": make_workload(n15, args.seed + 2, fixed_cells=15, light=light),
    }
    for name, trajs in workloads.items():
        print(_describe(name, trajs))

    # References: real stateful sessions (untimed, with each cell's CPU time), and a plain
    # in-process check of them.
    refs, cell_stats, sanity_bad, workload_bugs = {}, {}, [], []
    t0 = time.perf_counter()
    for name, trajs in workloads.items():
        refs[name], cell_ms, clock = run_reference(trajs)
        cell_stats[name] = cell_time_stats(cell_ms, clock)
        plain = run_inprocess(trajs)
        check = compare(trajs, plain, refs[name])
        sanity_bad += [{**d, "workload": name} for d in check["examples"]]
        for traj, outs in zip(trajs, refs[name]):
            for idx, (cell, (text, err)) in enumerate(zip(traj.cells, outs)):
                if err != (cell.kind == "error"):
                    workload_bugs.append((name, traj.tid, idx, cell.step, _normal(text, err)[:200]))
    print(
        f"references: stateful kernel runs + in-process exec of every trajectory in {time.perf_counter() - t0:.1f} s; "
        f"kernel vs in-process mismatches: {len(sanity_bad)}"
    )
    for d in sanity_bad[:5]:
        print(
            f"  reference mismatch {d['workload']} traj {d['trajectory']} cell {d['cell']} ({d['step']}): "
            f"in-process {d['expected']!r} vs kernel {d['got']!r}"
        )
    if workload_bugs:
        print(f"WARNING: {len(workload_bugs)} cells raised (or did not raise) unexpectedly in the reference:")
        for bug in workload_bugs[:10]:
            print("  ", bug)
    clock = cell_stats["mix"]["clock"]
    print(
        f"cell times in the reference run ({'kernel CPU' if clock == 'cpu' else 'wall, no cpu_s in the records'} "
        f"per cell, each trajectory in its own kernel, two at a time):"
    )
    header = "| workload | p50 ms | p90 ms | p99 ms | max ms | mean ms | total s | " + " | ".join(
        b[0] for b in BUCKETS
    )
    print(header + " |")
    print("|" + " --- |" * (header.count("|")))
    for name, st in cell_stats.items():
        shares = " | ".join(f"{st['shares'][b[0]]:.1%}" for b in BUCKETS)
        print(
            f"| {name} | {st['p50']:.1f} | {st['p90']:.1f} | {st['p99']:.1f} | {st['max']:.1f} | {st['mean']:.1f} | "
            f"{st['total_s']:.1f} | {shares} |"
        )

    # Timed runs; the order of the approaches rotates from one repetition to the next.
    times = {name: {a: [] for a in approaches} for name in workloads}
    startup = {name: [] for name in workloads}
    errors = {name: {a: [] for a in approaches} for name in workloads}
    isolated = None
    for rep in range(repeat):
        for name, trajs in workloads.items():
            order = approaches[rep % len(approaches) :] + approaches[: rep % len(approaches)]
            for approach in order:
                load = _loadavg()
                if approach == "cort":
                    outs, secs, rounds = run_cort(trajs)
                    extra = f"{rounds} rounds"
                else:
                    outs, timing = run_cortbench(trajs)
                    secs = timing["total_s"]
                    isolated = timing["isolated"]
                    startup[name].append(timing["startup_s"])
                    extra = f"sandbox start {timing['startup_s']:.2f} s, all cells done at {timing['cells_done_s']:.2f} s"
                result = compare(trajs, refs[name], outs)
                result["workload"] = name
                times[name][approach].append(secs)
                errors[name][approach].append(result)
                print(
                    f"[rep {rep + 1}/{repeat}] {name:6s} {approach:9s} {secs:7.2f} s  ({extra}; load {load}); "
                    f"state errors {result['errors']}/{result['cells']} {result['classes'] or ''}",
                    flush=True,
                )

    warm = [s * 1000 for s in asyncio.run(_latency(latency_runs))]
    rng_independent = asyncio.run(_rng_probe())
    warm_p50, warm_p99 = percentile(warm, 0.5), percentile(warm, 0.99)

    # Summary: median time per workload and approach; state errors of the worst repetition.
    summary = {}
    for name, trajs in workloads.items():
        med = {a: statistics.median(times[name][a]) for a in approaches}
        summary[name] = {
            "trajectories": len(trajs),
            "cells": sum(len(t.cells) for t in trajs),
            "cort_s": round(med["cort"], 3),
            "cortbench_s": round(med["cortbench"], 3),
            "speedup": round(med["cort"] / med["cortbench"], 2),
            "cort_runs_s": [round(x, 3) for x in times[name]["cort"]],
            "cortbench_runs_s": [round(x, 3) for x in times[name]["cortbench"]],
            "cortbench_startup_s": round(statistics.median(startup[name]), 3),
            "cell_ms": {k: cell_stats[name][k] for k in ("p50", "p90", "p99", "max", "mean")},
            "cell_cpu_total_s": cell_stats[name]["total_s"],
            "cell_shares": cell_stats[name]["shares"],
        }

    def worst(approach: str) -> dict:
        total = {
            "errors": 0,
            "cells": 0,
            "mc_cells": 0,
            "mc_recall_cells": 0,
            "trajectories_affected": 0,
            "classes": Counter(),
            "by_workload": {},
            "examples": [],
        }
        for name in workloads:
            w = max(errors[name][approach], key=lambda r: r["errors"])
            for key in ("errors", "cells", "mc_cells", "mc_recall_cells", "trajectories_affected"):
                total[key] += w[key]
            total["classes"].update(w["classes"])
            total["by_workload"][name] = w["errors"]
            total["examples"] += [{**d, "workload": name} for d in w["examples"]]
        return total

    stats = {a: worst(a) for a in approaches}
    cb, cort = stats["cortbench"], stats["cort"]
    cells, trajectories = cb["cells"], sum(len(t) for t in workloads.values())

    print()
    print(f"workload: {workload_kind}; median of {repeat} repetition(s)")
    print("| workload | trajectories | cells | cell p50 / p99 ms | CoRT s | cortbench s | speedup |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, row in summary.items():
        print(
            f"| {name} | {row['trajectories']} | {row['cells']} | {row['cell_ms']['p50']:.1f} / {row['cell_ms']['p99']:.0f} | "
            f"{row['cort_s']:.2f} | {row['cortbench_s']:.2f} | {row['speedup']:.2f}x |"
        )
    print(f"warm print(1+1): p50 {warm_p50:.3f} ms, p99 {warm_p99:.3f} ms over {latency_runs} runs")
    print(f"unseeded random/numpy draws differ between kernels: {rng_independent}")
    print(
        f"state errors (worst repetition per workload; {cells} cells, of which {cb['mc_cells']} unseeded Monte Carlo "
        f"cells are checked for success/failure only and {cb['mc_recall_cells']} re-printed estimates for "
        f"consistency with the estimate printed earlier in the same run):"
    )
    for approach in approaches:
        st = stats[approach]
        print(
            f"  {approach:9s} {st['errors']:4d} cells ({st['errors'] / cells:.2%}) in {st['trajectories_affected']} "
            f"of {trajectories} trajectories {dict(st['classes'])} by workload {st['by_workload']}"
        )
    for approach in approaches:
        shown = Counter()
        for d in stats[approach]["examples"]:
            if shown[d["class"]] < args.show_diffs:
                shown[d["class"]] += 1
                print(
                    f"  e.g. {approach} {d['workload']} trajectory {d['trajectory']} cell {d['cell']} ({d['step']}, "
                    f"{d['class']}): expected {d['expected']!r}, got {d['got']!r}"
                )
    runtime = time.perf_counter() - wall_start
    print(f"bench runtime {runtime:.1f} s")

    report = {
        "bench": "interpreter",
        "workload": workload_kind,
        "speedup_mix": summary["mix"]["speedup"],
        "speedup_4": summary["4cell"]["speedup"],
        "speedup_15": summary["15cell"]["speedup"],
        "warm_p50_ms": round(warm_p50, 3),
        "warm_p99_ms": round(warm_p99, 3),
        "state_errors": cb["errors"],
        "cort_state_errors": cort["errors"],
        "state_error_rate": round(cb["errors"] / cells, 4),
        "cort_state_error_rate": round(cort["errors"] / cells, 4),
        "cort_state_error_classes": dict(cort["classes"]),
        "cort_state_errors_by_workload": cort["by_workload"],
        "cort_trajectories_affected": cort["trajectories_affected"],
        "kernel_rng_independent": rng_independent,
        "cell_ms": summary["mix"]["cell_ms"],
        "cell_clock": clock,
        "cells": cells,
        "trajectories": trajectories,
        "mc_cells": cb["mc_cells"],
        "mc_recall_cells": cb["mc_recall_cells"],
        "reference_mismatches": len(sanity_bad),
        "workload_bugs": len(workload_bugs),
        "workloads": summary,
        "repeat": repeat,
        "quick": quick,
        "seed": args.seed,
        "latency_runs": latency_runs,
        "isolated": isolated,
        "targets": {"speedup_mix": 3.0, "speedup_15": 8.0, "state_errors": 0, "warm_p50_ms": 5.0},
        "targets_met": {
            "speedup_mix": summary["mix"]["speedup"] >= 3.0,
            "speedup_15": summary["15cell"]["speedup"] >= 8.0,
            "state_errors": cb["errors"] == 0,
            "warm_p50_ms": warm_p50 < 5.0,
        },
        "runtime_s": round(runtime, 1),
        "machine": machine,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
