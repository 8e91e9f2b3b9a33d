"""Grading benchmark: cortbench's Grader against naive math-verify, side by side, in one invocation.

    python bench/grading.py            # all MATH500 + OlympiadBench golds, 8 responses each (1-2 minutes)
    python bench/grading.py --quick    # 40 golds of each set (about 10 seconds)

The workload uses every gold answer of MATH500 and OlympiadBench (../shared/data/cort). Each gold
gets 8 responses. Each response starts with its problem's text (up to 1,500 characters), so no two
responses are the same:

* verbatim: "... so the answer is \\boxed{GT}."
* model: the gold without its $ delimiters, as a model boxes it
* perturbed: one digit changed, or "+1" appended when there is no digit (mostly wrong)
* unboxed: "The final answer is $GT$." with no \\boxed at all
* boxed_then_text: the box first, then more text with numbers and no box
* last_box: a wrong box, a paragraph, then the right box (the last box must win)
* long: about 8 KB of CoRT-style reasoning (inline math, python cells and their outputs), then
  the right box
* long_wrong: the same, ending in the perturbed answer

* naive: for each answer, in this process, `verify(parse("$" + gold + "$"), parse(response,
  (ExprExtractionConfig(), LatexExtractionConfig())))` with math-verify's default timeouts. This
  is the protocol written out as a plain loop.
* cortbench: `Grader()` with its defaults (one worker per CPU, 30 s per sample). It is started and
  closed inside the timed region. The start-up time is also given separately.

Agreement is the share of answers where both approaches decide the same.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import sys
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

from _machine import cpu_model  # bench/_machine.py (the script's own folder is on sys.path)
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from cortbench.analyzers.grading import Grader

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cort"
SETS = ("math500", "olympiad_bench")
FAR = "Let me reconsider the case analysis once more, carefully checking each of the four cases in turn."
REASONING = (
    "Let me set up the notation first. Write $f(x) = x^2 + 3x + 2 = (x+1)(x+2)$, so the roots are "
    "$x = -1$ and $x = -2$. Substituting $x = t - 1$ gives $g(t) = t^2 + t$, and the discriminant "
    "$\\Delta = b^2 - 4ac = 9 - 8 = 1$ confirms two distinct real roots. By Vieta, $r_1 + r_2 = -3$ "
    "and $r_1 r_2 = 2$. Now, the sum $\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$, so for $n = 10$ it is "
    "$55$, and $\\sum_{k=1}^{n} k^2 = \\frac{n(n+1)(2n+1)}{6} = 385$. It looks tedious, and we can use "
    "python code to simplify the reasoning.\n"
    "```python\nfrom sympy import symbols, solve, Rational\nx = symbols('x')\n"
    "print(solve(x**2 + 3*x + 2, x), sum(range(11)), Rational(385, 55))\n```\n"
    "```output\n[-2, -1] 55 7\n```\n"
    "We don't need to doubt the accuracy of python calculations. The ratio is $\\frac{385}{55} = 7$, "
    "which matches. Next, checking the boundary cases $x \\to \\infty$ and $x = 0$: at $x = 0$ we get "
    "$f(0) = 2$, and for large $x$ the leading term $x^2$ dominates, so $f(x) > 0$ there. "
)


def responses(gold: str, problem: str) -> dict[str, str]:
    """Every response starts from its problem's text, so no two problems share a response."""
    bare = re.sub(r"(?<!\\)\$", "", gold).strip()
    wrong = _perturb(bare)
    lead = f"We need to solve: {problem[:1500]}\n\n"
    long = lead + REASONING * 8  # CoRT generations run to many KB; math-verify scans all of it
    return {
        "verbatim": f"{lead}Let me think.\n... so the answer is \\boxed{{{gold}}}.",
        "model": f"{lead}Putting it together, the final answer is \\boxed{{{bare}}}",
        "perturbed": f"{lead}So the answer is \\boxed{{{wrong}}}.",
        "unboxed": f"{lead}Checking once more, everything is consistent. The final answer is ${bare}$.",
        "boxed_then_text": f"{lead}Hence \\boxed{{{bare}}}.\n\nLet me double-check with code: x = 12, y = 7, and 3 < 4.",
        "last_box": f"{lead}We first guessed \\boxed{{{wrong}}}.\n\n{FAR}\n\nSo the answer is \\boxed{{{bare}}}.",
        "long": f"{long}Therefore the final answer is \\boxed{{{bare}}}.",
        "long_wrong": f"{long}Therefore the final answer is \\boxed{{{wrong}}}.",
    }


def _perturb(answer: str) -> str:
    digits = [i for i, c in enumerate(answer) if c.isdigit()]
    if not digits:
        return answer + "+1"
    i = digits[-1]
    return answer[:i] + str((int(answer[i]) + 1) % 10) + answer[i + 1 :]


def workload(per_set: int | None) -> list[tuple[str, str, str]]:
    """(variant, gold, response) for every gold of MATH500 and OlympiadBench."""
    items = []
    for name in SETS:
        rows = [json.loads(line) for line in (DATA / f"test_{name}.jsonl").read_text().splitlines()]
        for row in rows[:per_set]:
            for variant, response in responses(row["gt_answer"], row["problem"]).items():
                items.append((variant, row["gt_answer"], response))
    return items


def naive(pairs: list[tuple[str, str]]) -> list[bool]:
    config = (ExprExtractionConfig(), LatexExtractionConfig())
    return [
        verify(parse("$" + gold + "$"), parse(response, extraction_config=config)) for gold, response in pairs
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "math_verify": version("math-verify"),
        "sympy": version("sympy"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 golds of each set")
    args = parser.parse_args(argv)
    if not (DATA / "test_math500.jsonl").is_file():
        print(f"benchmark files not found at {DATA}", file=sys.stderr)
        return 1
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, math-verify "
          f"{info['math_verify']}, sympy {info['sympy']}; load average at start {info['loadavg']}")  # fmt: skip
    items = workload(40 if args.quick else None)
    pairs = [(gold, response) for _, gold, response in items]
    print(
        f"{len(pairs)} answers ({len(set(pairs))} distinct pairs, {len({g for g, _ in pairs})} distinct golds)"
    )

    started, cpu = time.perf_counter(), time.process_time()
    reference = naive(pairs)
    naive_s, naive_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"naive math-verify, one process: {naive_s:.1f} s ({naive_cpu:.1f} s CPU)")

    started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    with Grader() as grader:
        grader.grade("1", "\\boxed{1}")
        startup_s = time.perf_counter() - started
        grades = grader.grade_many(pairs)
        workers = grader.workers
    cortbench_s = time.perf_counter() - started
    cortbench_cpu = time.process_time() - cpu + _children_cpu() - children  # workers are reaped at close
    print(f"cortbench Grader, {workers} workers: {cortbench_s:.1f} s (start-up {startup_s:.1f} s; "
          f"{cortbench_cpu:.1f} s CPU, all processes)")  # fmt: skip
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())

    agree = [g.correct == r for g, r in zip(grades, reference)]
    errors = Counter(g.grading_error.split(" after")[0] for g in grades if g.grading_error)
    print(f"\n{'variant':<16} {'answers':>7} {'naive correct':>14} {'cortbench correct':>18} {'agree':>7}")
    for variant in dict.fromkeys(v for v, _, _ in items):
        rows = [i for i, item in enumerate(items) if item[0] == variant]
        print(f"{variant:<16} {len(rows):>7} {sum(reference[i] for i in rows):>14} "
              f"{sum(grades[i].correct for i in rows):>18} {sum(agree[i] for i in rows) / len(rows):>7.2%}")  # fmt: skip
    for i, ok in enumerate(agree):
        if not ok:
            print(
                f"disagreement: {items[i][0]} gold={items[i][1]!r}: naive {reference[i]}, cortbench {grades[i]}"
            )
    print(f"\n{'':<28} {'seconds':>8} {'answers/s':>10} {'CPU s':>7}")
    print(f"{'naive math-verify':<28} {naive_s:>8.1f} {len(pairs) / naive_s:>10.1f} {naive_cpu:>7.1f}")
    print(
        f"{'cortbench Grader (cold)':<28} {cortbench_s:>8.1f} {len(pairs) / cortbench_s:>10.1f} {cortbench_cpu:>7.1f}"
    )
    print(f"grading errors: {dict(errors) or 0}; load average at the end {load_end}")
    report = {
        "bench": "grading",
        "answers": len(pairs),
        "naive_per_s": round(len(pairs) / naive_s, 1),
        "cortbench_per_s": round(len(pairs) / cortbench_s, 1),
        "cortbench_warm_per_s": round(len(pairs) / (cortbench_s - startup_s), 1),
        "speedup": round(naive_s / cortbench_s, 2),
        "agreement": round(sum(agree) / len(agree), 5),
        "grading_errors": sum(errors.values()),
        "workers": workers,
        "startup_s": round(startup_s, 2),
        "naive_s": round(naive_s, 2),
        "cortbench_s": round(cortbench_s, 2),
        "naive_cpu_s": round(naive_cpu, 2),
        "cortbench_cpu_s": round(cortbench_cpu, 2),
        "quick": args.quick,
        **{k: info[k] for k in ("nproc", "python", "math_verify")},
        "loadavg_start": info["loadavg"],
        "loadavg_end": load_end,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
