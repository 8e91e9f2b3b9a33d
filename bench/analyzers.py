"""Analyzer benchmark: `analyze_run` end to end on a synthetic run of CoRT-like trajectories.

    python bench/analyzers.py            # 10,000 trajectories (target: under a minute)
    python bench/analyzers.py --quick    # 1,000 trajectories
    python bench/analyzers.py --baseline /tmp/before   # and /tmp/before/cortbench on the same run, first

The run is written to a temporary directory (not timed) and holds three tasks: aime24, math500 and
cort_chem (chemistry, where most trajectories import rdkit). Each trajectory is seeded and has:

* reasoning text between cells: sentences with inline LaTeX and numbers, 3-12 KB before the first
  cell and 0.5-5 KB after each cell (mean generation about 19 KB, about 4,800 tokens);
* 0 to 15 python cells (10% none; otherwise 1 + exponential, mean 4.0), each importing a few of
  sympy, numpy, math, itertools, fractions, collections, functools, scipy, networkx, rdkit (in
  every form: `import a as b`, `from a.b import c`, inside a function, `__import__`,
  `importlib.import_module`), then a body of 3-25 lines;
* interpreter outputs, and failures as the sandbox records them: SyntaxError (with code that does
  not parse), NameError, TypeError, ZeroDivisionError, ModuleNotFoundError, timeout, memory,
  killed, kernel_restarted, and truncated outputs;
* a final line with \\boxed{...} (85%), a trajectory cut by the length limit inside an unclosed
  python block (5%), the tool-limit message when a trajectory uses all 15 calls;
* segment token counts as the runner stores them (90%; the rest carry none and are approximated),
  and a Hint-Engineering hint before some cells.

The timed region is one `analyze_run(run_dir)` call: reading samples.jsonl, all analyses (with the
default purpose and behaviour labelers, in worker processes), writing the three parquet files and
results.json. The last line printed is one JSON object; `cpu_s` is this process's CPU time and
`workers_cpu_s` the labelers' workers', which on a shared machine say more than the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from cortbench.analyzers.analyze import analyze_run
from cortbench.harness.fences import output_block, split_segments
from cortbench.harness.records import InsertedHint, TokenCounts, ToolCall, TrajectoryRecord
from cortbench.harness.store import SAMPLES, RunStore

MAX_CALLS = 15
CODE_HINT = "It looks tedious, and we can use python code to simplify the reasoning.\n"
SENTENCES = [
    "Let me set up the notation: write $f(x) = x^{{2}} + {a}x + {b}$.",
    "By Vieta, the sum of the roots is $-{a}$ and their product is ${b}$.",
    "Now the sum $\\sum_{{k=1}}^{{{n}}} k = \\frac{{{n}({n}+1)}}{{2}}$ is easy to evaluate.",
    "Wait, I should double-check the case $n = {n}$ separately.",
    "Hmm, so the remainder modulo ${m}$ must be ${r}$.",
    "That gives ${a} \\cdot {b} = {p}$, which is consistent with the earlier bound.",
    "Alternatively, consider the generating function $\\prod_{{i}} (1 + x^{{i}})$ up to degree {n}.",
    "The molecule has {a} carbon atoms and {b} hydrogen atoms, so its formula mass is about {p}.",
    "So the number of valid arrangements is $\\binom{{{n}}}{{{r}}}$, unless I miscounted.",
    "Let me verify this with a quick computation rather than by hand.",
]
IMPORTS = {  # module -> (probability per cell, forms)
    "sympy": (0.45, ["import sympy as sp", "from sympy import symbols, solve, Rational", "import sympy"]),
    "numpy": (0.25, ["import numpy as np", "from numpy.linalg import det"]),
    "math": (0.3, ["import math", "from math import comb, gcd, isqrt"]),
    "itertools": (0.15, ["import itertools", "from itertools import permutations, product"]),
    "fractions": (0.1, ["from fractions import Fraction"]),
    "collections": (0.06, ["from collections import Counter, defaultdict"]),
    "functools": (0.05, ["from functools import lru_cache"]),
    "scipy": (0.03, ["from scipy.optimize import brentq", "import scipy.special as sps"]),
    "networkx": (0.01, ["import networkx as nx"]),
}
CHEM = [
    "from rdkit import Chem",
    "from rdkit.Chem import Descriptors, rdMolDescriptors",
    "import rdkit.Chem as Chem",
]
DYNAMIC = ["m = __import__('decimal')", "import importlib\nmp = importlib.import_module('mpmath')"]
BODY = [
    "x = symbols('x')",
    "print(solve(x**2 + {a}*x + {b}, x))",
    "total = sum(k for k in range(1, {n} + 1))",
    "print(total % {m})",
    "vals = [comb({n}, r) for r in range({r})]",
    "for i in range({r}):\n    total += i * {a}\n    if total > {p}:\n        break",
    "print(Fraction({a}, {b}) + Fraction(1, {m}))",
    "arr = np.arange({n}).reshape(-1, 1)",
    "print(len(list(permutations(range({r})))))",
    "mol = Chem.MolFromSmiles('C' * {a} + 'O')\nprint(Descriptors.MolWt(mol))",
    "def f(n):\n    import itertools\n    return sum(1 for _ in itertools.combinations(range(n), 2))\nprint(f({n}))",
]
FAILURES = [  # (status, error_name, output, breaks the code)
    (
        "error",
        "SyntaxError",
        "File \"<cell-1>\", line 2\n    print(x\n         ^\nSyntaxError: '(' was never closed",
        True,
    ),
    ("error", "NameError", "NameError: name 'y' is not defined", False),
    ("error", "TypeError", "TypeError: unsupported operand type(s) for +: 'int' and 'str'", False),
    ("error", "ZeroDivisionError", "ZeroDivisionError: division by zero", False),
    ("error", "ModuleNotFoundError", "ModuleNotFoundError: No module named 'rdkit'", False),
    ("timeout", "TimeoutError", "Timeout Error", False),
    ("memory", "MemoryError", "MemoryError", False),
    ("killed", "SIGSEGV", "KernelDied: the Python kernel was killed (SIGSEGV).", False),
    ("kernel_restarted", None, "[The Python kernel was restarted: all variables ... are lost.]", False),
]
FAILURE_WEIGHTS = [4, 5, 3, 2, 2, 2, 0.5, 0.5, 0.5]


def _fill(rng: random.Random, template: str) -> str:
    a, b, n = rng.randint(2, 99), rng.randint(2, 999), rng.randint(5, 60)
    return template.format(a=a, b=b, n=n, m=rng.choice([7, 9, 11, 1000]), r=rng.randint(2, 8), p=a * b)


def _text(rng: random.Random, chars: int) -> str:
    out, size = [], 0
    while size < chars:
        s = _fill(rng, rng.choice(SENTENCES))
        out.append(s + ("\n\n" if rng.random() < 0.2 else " "))
        size += len(out[-1])
    return "".join(out).rstrip(" ") + "\n"


def _cell(rng: random.Random, chem: bool) -> str:
    lines = [form for mod, (p, forms) in IMPORTS.items() if rng.random() < p for form in [rng.choice(forms)]]
    if chem and rng.random() < 0.6:
        lines.append(rng.choice(CHEM))
    if rng.random() < 0.03:
        lines.append(rng.choice(DYNAMIC))
    lines += [_fill(rng, rng.choice(BODY)) for _ in range(rng.randint(2, 12))]
    return "\n".join(lines)


def trajectory(rng: random.Random, task: str, pid: str, idx: int) -> TrajectoryRecord:
    from cortbench.tasks.prompts import TOOL_LIMIT_MESSAGE  # here: --baseline's older code keeps it elsewhere

    chem = task == "cort_chem"
    cells = 0 if rng.random() < 0.1 else min(MAX_CALLS, 1 + int(rng.expovariate(1 / 3.5)))
    generation = _text(rng, rng.randint(3000, 12000))
    calls, hints, finish = [], [], "stop"
    for i in range(cells):
        if rng.random() < 0.1:
            hints.append(InsertedHint("before_code", len(generation), CODE_HINT))
            generation += CODE_HINT
        code = _cell(rng, chem)
        if rng.random() < 0.05 and i == cells - 1:  # the length limit cuts the last cell
            generation += "```python\n" + code[: rng.randint(5, len(code))]
            finish = "length"
            break
        roll = rng.random()
        if roll < 0.22:
            status, name, output, breaks = rng.choices(FAILURES, FAILURE_WEIGHTS)[0]
            if breaks:
                code += "\nprint(x"
        elif roll < 0.25:
            status, name, output = "output_truncated", None, "1" * 400 + "..." + "2" * 400
        else:
            status, name, output = "ok", None, _fill(rng, "{p}\n[{a}, {b}]\n{n}")
        calls.append(
            ToolCall(
                code, output, status, round(rng.uniform(0.001, 2), 3), name, status == "kernel_restarted"
            )
        )
        shown = output + (TOOL_LIMIT_MESSAGE if len(calls) == MAX_CALLS else "")
        generation += f"```python\n{code}\n```\n" + output_block(shown)
        generation += _text(rng, rng.randint(500, 5000))
    if finish == "stop" and rng.random() < 0.85:
        generation += f"Therefore, the final answer is \\boxed{{{rng.randint(0, 999)}}}.\n"
    segments = split_segments(generation)
    counted = rng.random() < 0.9
    for s in segments:
        s.tokens = (len(s.text) * 10 + 35) // 36 if counted else None  # about 3.6 characters per token
    response = sum(s.tokens or 0 for s in segments)
    return TrajectoryRecord(
        task, pid, idx, "<user>problem<assistant>", generation, finish, gold="1",
        problem_meta={"subject": "chemistry" if chem else "algebra"}, segments=segments, tool_calls=calls,
        hints=hints, tokens=TokenCounts(generated=response, total=response + 120, prompt=120),
    )  # fmt: skip


def write_run(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    config = {
        "tasks": "aime24,math500,cort_chem",
        "backend": "hf",
        "model": "synthetic",
        "max_tool_calls": MAX_CALLS,
    }
    k = 16
    tasks = ("aime24", "math500", "cort_chem")
    with RunStore.open(path, config) as store:  # one fsync for all (append_many)
        store.append_many(trajectory(rng, tasks[i % 3], str(i // (3 * k)), (i // 3) % k) for i in range(n))


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _children_cpu() -> float:
    """CPU seconds of this process's finished children: the labelers' worker processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_analysis(run: Path, profile: bool = False):
    """One timed `analyze_run(run)`: (analysis, wall s, CPU s of this process, CPU s of its workers)."""
    cpu, children = time.process_time(), _children_cpu()
    started = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        analysis = profiler.runcall(analyze_run, run)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        analysis = analyze_run(run)
    seconds = time.perf_counter() - started
    return analysis, seconds, time.process_time() - cpu, _children_cpu() - children


def baseline(tree: Path, run: Path) -> dict:
    """The figures of another copy of the code (`tree`/cortbench, e.g. the code before a change) on the
    same run, timed by this script in a subprocess that imports cortbench from `tree`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, __file__, "--run-dir", str(run)], env=env, capture_output=True, text=True, check=True
    )
    print(done.stdout, end="")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 trajectories")
    parser.add_argument("--trajectories", type=int, help="override the number of trajectories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print the top functions (cProfile)")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR",
        help="also time DIR/cortbench (another copy of the code, e.g. before a change) on the same run, "
        "just before this code; its line is printed first, and its figures go under \"baseline\"",
    )  # fmt: skip
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)  # time an existing run (--baseline)
    args = parser.parse_args()
    n = args.trajectories or (1000 if args.quick else 10000)
    root = Path(tempfile.mkdtemp(prefix="cortbench-bench-analyzers-"))
    try:
        run, synth_s = args.run_dir, 0.0
        if run is None:
            run = root / "run"
            started = time.perf_counter()
            write_run(run, n, args.seed)
            synth_s = time.perf_counter() - started
        size_mb = (run / SAMPLES).stat().st_size / 1e6
        before = baseline(args.baseline, run) if args.baseline else None
        load_before = load()
        analysis, seconds, cpu, workers_cpu = time_analysis(run, args.profile)
        n = len(analysis.trajectories)
        s = analysis.summary
        code = s["all"]["code"]
        rows = [
            ("trajectories", f"{n:,}"),
            ("samples.jsonl", f"{size_mb:,.0f} MB (synthesized in {synth_s:.1f} s, not timed)"),
            ("cells / import rows", f"{len(analysis.cells):,} / {len(analysis.imports):,}"),
            ("analyze_run", f"{seconds:.2f} s wall, {cpu:.2f} s CPU (+ {workers_cpu:.2f} s in workers)"),
            ("trajectories / s", f"{n / seconds:,.0f}"),
            (
                "code usage / success",
                f"{100 * code['code_usage_rate']:.1f}% / {100 * code['code_success_rate']:.1f}%",
            ),
            ("rdkit on cort_chem", f"{100 * s['rdkit']['adoption']:.1f}%"),
            ("tokenizers", ", ".join(f"{k} ({v})" for k, v in s["tokenizers"].items())),
            ("load average before / after", f"{load_before}  /  {load()}"),
        ]
        if before is not None:
            rows.append(("baseline (--baseline)", f"{before['seconds']:.2f} s wall, "
                         f"{before['cpu_s'] + before.get('workers_cpu_s', 0):.2f} s CPU in all"))  # fmt: skip
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        figures = {
            "bench": "analyzers",
            "trajectories": n,
            "cells": len(analysis.cells),
            "seconds": round(seconds, 2),
            "per_s": round(n / seconds, 1),
            "cpu_s": round(cpu, 2),  # this process only
            "workers_cpu_s": round(workers_cpu, 2),  # the labelers' worker processes
            "samples_mb": round(size_mb, 1),
            "python": platform.python_version(),
            "pandas": version("pandas"),
            "pyarrow": version("pyarrow"),
            "nproc": os.cpu_count(),
            "load_before": load_before,
            "target_s": 60,
            "met": seconds < 60,
        }
        if before is not None:
            figures["baseline"] = {k: before.get(k) for k in ("seconds", "cpu_s", "workers_cpu_s", "met")}
        print(json.dumps(figures))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
