"""Calibration of `cortbench check`: how often it cries wolf on reruns of the same model (false-alarm
rate, which should be at most alpha) and how often it catches a planted drop (power).

Synthetic runs: per-problem true accuracies drawn once, then every rerun samples k answers per
problem (generator shared with tests/test_check.py). Seeds fixed: the figures are reproducible.

    python bench/check.py            # about 3 minutes on 2 cores
    python bench/check.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_check import _grades, _run  # noqa: E402

from cortbench.leaderboards.check import CheckConfig, compare_runs  # noqa: E402


def alarm_rate(accuracies, drop: float, k: int, config: CheckConfig, reruns: int, seed: int = 0) -> float:
    """Share of reruns flagged: any regression when `drop` is 0 (false alarms), else a regression of
    the first task's accuracy (power against a drop planted in that task only)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for rerun in range(reruns):
        base = _run("base", *(_grades(f"t{i}", p, k, rng) for i, p in enumerate(accuracies)))
        dropped = [np.clip(p - (drop if i == 0 else 0.0), 0, 1) for i, p in enumerate(accuracies)]
        new = _run("new", *(_grades(f"t{i}", p, k, rng) for i, p in enumerate(dropped)))
        report = compare_runs(base, new, replace(config, seed=rerun))
        if drop:
            hits += any(f.task == "t0" and f.check == "accuracy" for f in report.failures)
        else:
            hits += report.regressed
    return hits / reruns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few reruns: a smoke run")
    args = parser.parse_args()
    reruns = 40 if args.quick else 400
    rng = np.random.default_rng(0)
    aime = [rng.beta(0.7, 0.7, 30)]  # AIME-sized task, difficulties spread out
    three = [rng.beta(0.7, 0.7, 40) for _ in range(3)]
    large = [rng.uniform(0.1, 0.9, 500), *(rng.uniform(0.1, 0.9, 500) for _ in range(2))]
    accuracy_only = CheckConfig(min_effect=0.0, max_token_growth=1e9, max_code_success_drop=1e9,
                                correction="none", permutations=2000, bootstrap=500)  # fmt: skip
    defaults = CheckConfig(permutations=2000, bootstrap=500)
    start = time.perf_counter()
    figures = {
        "bench": "check",
        "reruns": reruns,
        "false_alarms_accuracy_30x16": alarm_rate(aime, 0, 16, accuracy_only, reruns),
        "false_alarms_sign_test_30x1": alarm_rate(aime, 0, 1, accuracy_only, reruns),
        "false_alarms_whole_check_3x40x4": alarm_rate(three, 0, 4, defaults, reruns),
        "power_500x4_drop_0.05": alarm_rate(large, 0.05, 4, replace(defaults, min_effect=0.05), reruns // 4),
        "power_500x4_drop_0.03": alarm_rate(large, 0.03, 4, replace(defaults, min_effect=0.03), reruns // 4),
        "alpha": defaults.alpha,
    }
    figures["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
