"""Leaderboard benchmark: `cortbench leaderboard` on 50 synthetic runs, timed end to end.

    python bench/leaderboard.py            # 50 runs of 200 trajectories (10,000 in all)
    python bench/leaderboard.py --quick    # 10 runs of 40 trajectories

Each run is what `cortbench run`, `score` and `analyze` leave behind (synthesised, not timed):
run.json, samples.jsonl with CoRT-like trajectories (bench/analyzers.py's generator: reasoning
with LaTeX, 0-15 python cells with imports, failures and truncated outputs, hints, unclosed cells
at the length limit; about 19 KB and 5,000 tokens each), grades.jsonl, results.json with the
metrics of `cortbench.analyzers.scoring.summarize` and the "analysis" key, and the parquet tables
of `analyze_run` (purpose labels, behaviour spans). Runs hold the five math tasks of the paper
(k = 2 for AIME/AMC, 1 for MATH500/Olympiad); every fifth run also holds cort_chem. Each run has
its own skill and verbosity, so accuracies, token counts and budget curves differ.

The timed region is one `cortbench leaderboard RUNS... -o SITE` process, as a user runs it. The
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path

from _machine import cpu_model

from analyzers import trajectory  # bench/analyzers.py: CoRT-like trajectories
from cortbench.analyzers.analyze import analyze_run
from cortbench.analyzers.results_file import GRADES, update_results, write_atomic
from cortbench.analyzers.scoring import SampleGrade, summarize
from cortbench.harness.store import SAMPLES, RunStore

TASKS = {  # task -> (problems, samples per problem), per run
    "full": {"aime24": (15, 2), "aime25": (15, 2), "amc23": (20, 2), "math500": (50, 1),
             "olympiad_bench": (50, 1)},
    "quick": {"aime24": (3, 2), "aime25": (3, 2), "amc23": (4, 2), "math500": (8, 1), "olympiad_bench": (8, 1)},
}  # fmt: skip
CHEM = {"full": (20, 1), "quick": (4, 1)}
DIFFICULTY = {
    "aime24": 1.5,
    "aime25": 1.8,
    "amc23": 0.2,
    "math500": -1.5,
    "olympiad_bench": 0.3,
    "cort_chem": 0.5,
}


def write_run(path: Path, index: int, size: str) -> int:
    """One synthetic run with records, grades, results and analysis; returns its trajectories."""
    rng = random.Random(index)
    skill, verbosity = rng.uniform(-1.0, 2.5), rng.uniform(0.5, 1.6)
    tasks = dict(TASKS[size])
    if index % 5 == 0:
        tasks["cort_chem"] = CHEM[size]
    config = {"tasks": ",".join(tasks), "backend": "vllm", "model": f"synthetic/model-{index:02d}",
              "hint": rng.choice(["prompt-hint", "code", None]), "max_tool_calls": 15, "temperature": 0.6,
              "top_p": 0.95, "max_tokens": 32768, "samples": {t: k for t, (_, k) in tasks.items()}}  # fmt: skip
    records, grades = [], []
    for task, (problems, k) in tasks.items():
        for p in range(problems):
            difficulty = DIFFICULTY[task] + rng.gauss(0, 1.2)
            for idx in range(k):
                record = trajectory(rng, task, f"{p}", idx)
                record.gold = str(100 + p)
                for s in record.segments:  # verbose models write longer responses
                    s.tokens = None if s.tokens is None else int(s.tokens * verbosity)
                response = int(record.tokens.generated * verbosity)
                record.tokens = replace(record.tokens, generated=response, total=response + 120)
                correct = rng.random() < 1 / (1 + math.exp(difficulty - skill + response / 20000))
                answer = record.gold if correct else str(rng.randint(0, 99))
                records.append(record)
                grades.append(SampleGrade(
                    task, record.problem_id, idx, correct, answer, None, 0 if correct else 1 + int(answer),
                    response, response, len(record.tool_calls), sum(not c.ok for c in record.tool_calls),
                    record.finish_reason, "chem" if task == "cort_chem" else "math-verify",
                ))  # fmt: skip
    with RunStore.open(path, config) as store:
        store.append_many(records)  # one fsync
    write_atomic(path / GRADES, "".join(json.dumps(asdict(g)) + "\n" for g in grades))
    update_results(path, summarize(grades, config))
    analyze_run(path)  # parquet tables and results.json "analysis"
    return len(grades)


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 runs of 40 trajectories")
    parser.add_argument("--runs", type=int, help="override the number of runs")
    parser.add_argument("--keep", action="store_true", help="keep the runs and the site (prints where)")
    args = parser.parse_args()
    size = "quick" if args.quick else "full"
    count = args.runs or (10 if args.quick else 50)
    root = Path(tempfile.mkdtemp(prefix="cortbench-bench-leaderboard-"))
    try:
        runs = [root / "runs" / f"model-{i:02d}" for i in range(count)]
        started = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            trajectories = sum(pool.map(write_run, runs, range(count), [size] * count))
        synth_s = time.perf_counter() - started
        size_mb = sum((r / SAMPLES).stat().st_size for r in runs) / 1e6
        command = [sys.executable, "-m", "cortbench.harness.cli", "leaderboard", *map(str, runs), "-o",
                   str(root / "site")]  # fmt: skip
        load_before = _load()
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        build_s = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"cortbench leaderboard failed:\n{done.stderr[-3000:]}")
        site = root / "site"
        files = [f for f in site.rglob("*") if f.is_file()]
        site_mb = sum(f.stat().st_size for f in files) / 1e6
        rows = [
            ("runs / trajectories", f"{count} / {trajectories:,}"),
            ("samples.jsonl, all runs", f"{size_mb:,.0f} MB (synthesised and analysed in {synth_s:.0f} s, not timed)"),
            ("cortbench leaderboard", f"{build_s:.2f} s wall (one process, as run from the shell)"),
            ("site", f"{len(files):,} files, {site_mb:,.0f} MB"),
            ("load average before / after", f"{load_before}  /  {_load()}"),
        ]  # fmt: skip
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        if args.keep:
            print(f"kept: {root}")
        print(json.dumps({
            "bench": "leaderboard", "runs": count, "trajectories": trajectories, "build_s": round(build_s, 2),
            "records_mb": round(size_mb, 1), "site_files": len(files), "site_mb": round(site_mb, 1),
            "cpu": cpu_model(), "python": platform.python_version(), "cortbench": version("cortbench"),
        }))  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
