"""`cortbench check`: the paired regression gate, on synthetic runs with known differences (its
false-alarm rate and power) and on real runs of a tiny transformers model."""

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict, replace
from math import comb
from pathlib import Path

import numpy as np
import pytest

from cortbench.analyzers.scoring import SampleGrade
from cortbench.leaderboards.check import (
    BadInput,
    CheckConfig,
    RunGrades,
    compare_runs,
    holm,
    load_run,
    paired_test,
)


def _cortbench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", *args], capture_output=True, text=True, **kwargs
    )


def _grades(
    task: str,
    accuracy: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    tokens: float = 1000.0,
    code_success: float = 0.8,
) -> list[SampleGrade]:
    """k samples per problem: correct with the problem's probability, ~Poisson(3) tool calls of which
    a share fail, response tokens around `tokens` with a per-problem difficulty factor."""
    out = []
    for pid, p in enumerate(accuracy):
        scale = 0.5 + (pid % 7) / 6  # longer answers to some problems, in every run
        for idx in range(k):
            calls = int(rng.poisson(3))
            out.append(SampleGrade(task, str(pid), idx, bool(rng.random() < p), None, None, None,
                                   int(rng.normal(tokens * scale, 100)), int(tokens * scale * 0.9), calls,
                                   int(rng.binomial(calls, 1 - code_success)), "stop", "math-verify"))  # fmt: skip
    return out


def _run(name: str, *tasks: list[SampleGrade]) -> RunGrades:
    return RunGrades.from_grades(name, [g for t in tasks for g in t], "m")


def _write(path: Path, grades: list[SampleGrade]) -> Path:
    path.mkdir(parents=True)
    (path / "grades.jsonl").write_text("".join(json.dumps(asdict(g)) + "\n" for g in grades))
    (path / "run.json").write_text(json.dumps({"config": {"model": "m", "backend": "hf"}, "sessions": []}))
    return path


# --- the test itself ----------------------------------------------------------------------------------


def _difference(base, new, n):
    return (new[..., 0] - base[..., 0]) / n


def test_identical_runs_have_no_change_and_p_one():
    scores = np.random.default_rng(0).random(30)
    paired = paired_test(scores, scores, _difference, worse=-1, confidence=0.9)
    assert (paired.change, paired.p_value, paired.ci, paired.differing) == (0.0, 1.0, (0.0, 0.0), 0)


@pytest.mark.parametrize("worse_new, better_new", [(10, 0), (8, 2), (6, 6)])
def test_with_one_sample_per_problem_it_is_the_exact_sign_test(worse_new, better_new):
    # k = 1: each problem is right or wrong in each run; only discordant problems move the statistic
    base = np.array([1.0] * worse_new + [0.0] * better_new + [1.0] * 20)
    new = np.array([0.0] * worse_new + [1.0] * better_new + [1.0] * 20)
    paired = paired_test(base, new, _difference, worse=-1, confidence=0.9)
    discordant = worse_new + better_new
    sign_test = sum(comb(discordant, j) for j in range(worse_new, discordant + 1)) / 2**discordant
    assert paired.exact and paired.p_value == pytest.approx(sign_test)


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


# --- false alarms and power (synthetic runs with known true accuracy) --------------------------------


def _false_alarms(config: CheckConfig, reruns: int, problems: int, k: int, tasks: int = 1) -> float:
    """Share of reruns of the same model (same per-problem accuracy) that the check fails."""
    rng = np.random.default_rng(1)
    truth = [rng.beta(0.7, 0.7, problems) for _ in range(tasks)]  # many easy and hard problems, as in AIME
    alarms = 0
    for r in range(reruns):
        base = _run("base", *(_grades(f"t{i}", p, k, rng) for i, p in enumerate(truth)))
        new = _run("new", *(_grades(f"t{i}", p, k, rng) for i, p in enumerate(truth)))
        alarms += compare_runs(base, new, replace(config, seed=r)).regressed
    return alarms / reruns


def test_false_alarm_rate_of_the_accuracy_test_is_at_most_alpha():
    # worst case: no tolerance, no correction, 30 problems (AIME-sized), accuracy alone decides
    config = CheckConfig(alpha=0.05, min_effect=0.0, max_token_growth=1e9, max_code_success_drop=1e9,
                         correction="none", permutations=2000, bootstrap=500)  # fmt: skip
    reruns = 400
    rate = _false_alarms(config, reruns, problems=30, k=16)
    print(f"false-alarm rate, accuracy test alone, alpha 0.05, 30 problems x 16: {rate:.3f}")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / reruns)  # exact test: at most alpha up to MC error


def test_false_alarm_rate_of_the_whole_check_is_at_most_alpha():
    # the defaults: three tasks, three checks each, Holm over the nine
    reruns = 200
    rate = _false_alarms(CheckConfig(permutations=2000, bootstrap=500), reruns, problems=40, k=4, tasks=3)
    print(f"false-alarm rate, whole check (3 tasks x 3 checks, defaults): {rate:.3f}")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / reruns)


@pytest.mark.slow
def test_a_planted_drop_of_the_tolerance_is_caught_with_high_power():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.1, 0.9, 500)  # MATH500-sized, k = 4
    config = CheckConfig(min_effect=0.05, permutations=2000, bootstrap=500)
    caught = []
    for r in range(100):
        base = _run("base", _grades("math500", truth, 4, rng))
        new = _run("new", _grades("math500", truth - 0.05, 4, rng))  # 5 points worse on every problem
        report = compare_runs(base, new, replace(config, seed=r))
        caught.append([c.check for c in report.failures] == ["accuracy"])
    power = float(np.mean(caught))
    print(f"power against a planted 5-point drop (500 problems x 4, alpha 0.05, Holm over 3): {power:.2f}")
    assert power >= 0.9


def test_a_real_drop_smaller_than_the_tolerance_passes_with_a_note():
    rng = np.random.default_rng(3)
    base = _grades("big", np.ones(2000), 1, rng)
    new = [replace(g, correct=False) if int(g.problem_id) < 20 else g for g in base]  # 1 point worse
    report = compare_runs(_run("b", base), _run("n", new), CheckConfig(min_effect=0.05))
    accuracy = report.comparisons[0]
    assert accuracy.p_adjusted < 0.001 and accuracy.status == "pass" and "tolerance" in accuracy.note
    assert not report.regressed


def test_token_growth_and_code_success_drop_are_caught():
    rng = np.random.default_rng(4)
    truth = rng.uniform(0.2, 0.8, 200)
    base = _run("b", _grades("t", truth, 4, rng, tokens=1000, code_success=0.8))
    longer = _run("n", _grades("t", truth, 4, rng, tokens=1300, code_success=0.8))
    failing = _run("n", _grades("t", truth, 4, rng, tokens=1000, code_success=0.6))
    same = _run("n", _grades("t", truth, 4, rng, tokens=1000, code_success=0.8))
    assert [c.check for c in compare_runs(base, longer).failures] == ["tokens"]
    assert [c.check for c in compare_runs(base, failing).failures] == ["code success"]
    assert not compare_runs(base, same).regressed


def test_runs_that_cannot_be_compared_are_refused():
    rng = np.random.default_rng(5)
    a = _grades("a", np.full(10, 0.5), 4, rng)
    b = _grades("b", np.full(10, 0.5), 4, rng)
    with pytest.raises(BadInput, match="different tasks"):
        compare_runs(_run("x", a, b), _run("y", a))
    report = compare_runs(_run("x", a, b), _run("y", a), CheckConfig(allow_partial=True))
    assert {c.task for c in report.comparisons} == {
        "a"
    } and "compared the 1 task both runs have" in report.notes[0]
    assert {
        c.task for c in compare_runs(_run("x", a, b), _run("y", a), CheckConfig(tasks=("a",))).comparisons
    } == {"a"}
    with pytest.raises(BadInput, match="different k"):
        compare_runs(_run("x", a), _run("y", [g for g in a if g.sample_idx < 2]))
    with pytest.raises(BadInput, match="different problems"):
        compare_runs(_run("x", a), _run("y", [g for g in a if g.problem_id != "3"]))
    with pytest.raises(BadInput, match="incomplete"):
        compare_runs(_run("x", a), _run("y", [g for g in a if (g.problem_id, g.sample_idx) != ("3", 3)]))


def test_an_unfinished_run_is_refused_or_compared_on_the_samples_both_runs_have():
    """Interrupted at 1 of 4 samples per problem: refused in one clear message, and with
    --allow-partial compared on the (problem, sample index) pairs both runs have."""
    rng = np.random.default_rng(7)
    full = _grades("a", np.full(10, 0.5), 4, rng)
    first = [g for g in _grades("a", np.full(10, 0.5), 4, rng) if g.sample_idx == 0]
    base = _run("base", full)
    unfinished = RunGrades.from_grades("new", first, "m", k_expected={"a": 4})
    with pytest.raises(
        BadInput, match=r"a: new is incomplete \(1 of 4 samples per problem\).*--allow-partial"
    ):
        compare_runs(base, unfinished)
    report = compare_runs(base, unfinished, CheckConfig(allow_partial=True))
    accuracy = report.comparisons[0]
    assert (accuracy.metric, accuracy.problems) == ("avg@1", 10)
    assert accuracy.base == pytest.approx(np.mean([g.correct for g in full if g.sample_idx == 0]))
    assert accuracy.new == pytest.approx(np.mean([g.correct for g in first]))
    assert any(
        "compared the 10 samples both runs have (10 problems, 1 per problem; the baseline has 40, the new run 10"
        in note
        and "new is incomplete (1 of 4 samples per problem)" in note
        for note in report.notes
    ), report.notes
    # a different k, both complete: refused, or paired on the first two samples
    half = [g for g in full if g.sample_idx < 2]
    with pytest.raises(
        BadInput, match="different k .*pass --allow-partial to compare the samples both runs have"
    ):
        compare_runs(base, _run("y", half))
    assert (
        compare_runs(base, _run("y", half), CheckConfig(allow_partial=True)).comparisons[0].metric == "avg@2"
    )


def test_samples_without_gold_are_left_out_of_the_comparison():
    rng = np.random.default_rng(8)
    grades = _grades("a", np.full(10, 0.5), 2, rng)
    extra = [replace(g, problem_id=f"x{g.problem_id}", correct=False, has_gold=False) for g in grades]
    run = RunGrades.from_grades("y", grades + extra, "m")
    assert set(run.tasks["a"]) == {str(p) for p in range(10)}
    assert run.notes == ["y: 20 samples without a gold answer left out"]


# --- the command --------------------------------------------------------------------------------------


@pytest.fixture
def synthetic_runs(tmp_path):
    """A baseline, a rerun of the same model, and a run 20 points worse on aime24."""
    rng = np.random.default_rng(6)
    truth = {"aime24": rng.uniform(0.3, 0.9, 30), "amc23": rng.uniform(0.3, 0.9, 40)}
    base = [g for task, p in truth.items() for g in _grades(task, p, 16, rng)]
    rerun = [g for task, p in truth.items() for g in _grades(task, p, 16, rng)]
    worse = {**truth, "aime24": truth["aime24"] - 0.2}
    regressed = [g for task, p in worse.items() for g in _grades(task, p, 16, rng)]
    return (
        _write(tmp_path / "base", base),
        _write(tmp_path / "rerun", rerun),
        _write(tmp_path / "worse", regressed),
    )


def test_check_passes_a_rerun_and_fails_a_regression_with_junit_and_markdown(synthetic_runs, tmp_path):
    base, rerun, worse = synthetic_runs
    done = _cortbench("check", str(rerun), "--baseline", str(base), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no regression" in done.stdout
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    junit, markdown = tmp_path / "check.xml", tmp_path / "check.md"
    done = _cortbench("check", str(worse), "--baseline", str(base), "--junit", str(junit), "--markdown", str(markdown),
                      timeout=120, env={"PATH": "", "GITHUB_STEP_SUMMARY": str(summary)})  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "regression: 1 regression: aime24 accuracy" in done.stderr and "Traceback" not in done.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("6", "1")
    failure = suite.find("testcase[@classname='cortbench.check.aime24'][@name='accuracy']/failure")
    assert (
        "avg@16" in failure.get("message")
        and "CI" in failure.get("message")
        and "p = " in failure.get("message")
    )
    text = markdown.read_text()
    assert text.startswith("## cortbench check: :x: 1 regression: aime24 accuracy")
    assert "| aime24 | accuracy avg@16 |" in text and "REGRESSION" in text
    assert summary.read_text() == "earlier step\n" + text  # appended, not replaced


@pytest.mark.parametrize(
    "change, message",
    [
        ("other_task", "the runs have different tasks (only in"),
        ("fewer_samples", "aime24: different k (baseline 16 samples per problem, new run 8)"),
        ("fewer_problems", "aime24: the runs have different problems (30 problems in the baseline, 29"),
        ("missing", "does not exist"),
        ("unknown_task", "task aime25 is not in"),
    ],
)
def test_bad_input_is_exit_2_and_one_line(synthetic_runs, tmp_path, change, message):
    base, rerun, _ = synthetic_runs
    grades = [json.loads(line) for line in (rerun / "grades.jsonl").read_text().splitlines()]
    args = []
    if change == "other_task":
        grades = [{**g, "task": "aime25"} if g["task"] == "amc23" else g for g in grades]
    elif change == "fewer_samples":
        grades = [g for g in grades if g["task"] != "aime24" or g["sample_idx"] < 8]
    elif change == "fewer_problems":
        grades = [g for g in grades if (g["task"], g["problem_id"]) != ("aime24", "0")]
    elif change == "unknown_task":
        args = ["--tasks", "aime24,aime25"]
    new = tmp_path / "new"
    if change != "missing":
        new.mkdir()
        (new / "grades.jsonl").write_text("".join(json.dumps(g) + "\n" for g in grades))
    done = _cortbench("check", str(new), "--baseline", str(base), *args, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert message in " ".join(done.stderr.split()), done.stderr
    if change == "fewer_problems":
        partial = _cortbench("check", str(new), "--baseline", str(base), "--allow-partial", timeout=120)
        assert partial.returncode == 0 and "compared the 29 problems both runs have" in " ".join(
            partial.stdout.split()
        )


# --- real runs of a tiny transformers model ----------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tiny_model_dir, tmp_path_factory):
    """The same greedy run twice (the second left unscored, so check grades it), and one with twice
    the token budget: a real change in response length."""
    root = tmp_path_factory.mktemp("check-runs")
    tasks = root / "toy.jsonl"
    tasks.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "gt_answer": str(2 * i)}) + "\n"
                             for i in range(12)))  # fmt: skip
    runs = {}
    for name, max_tokens in (("base", "80"), ("rerun", "80"), ("longer", "240")):
        out = root / name
        done = _cortbench("run", "--tasks", str(tasks), "--backend", "hf", "--model", tiny_model_dir, "--n", "2",
                          "--temperature", "0", "--hint", "code", "--max-tokens", max_tokens, "--max-tool-calls", "2",
                          "--concurrency", "1", "-o", str(out), timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = out
    (runs["rerun"] / "grades.jsonl").unlink(missing_ok=True)  # `cortbench run` may score at its end
    for name in ("base", "longer"):
        assert _cortbench("score", str(runs[name]), "--workers", "1", timeout=300).returncode == 0
    return runs


@pytest.mark.slow
def test_an_identical_rerun_of_a_real_model_passes(real_runs):
    done = _cortbench("check", str(real_runs["rerun"]), "--baseline", str(real_runs["base"]), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "graded the records here" in " ".join(done.stdout.split())  # the rerun has no grades.jsonl
    base, rerun = load_run(real_runs["base"]), load_run(real_runs["rerun"])
    assert base.tasks.keys() == rerun.tasks.keys() == {"toy"}


@pytest.mark.slow
def test_a_real_token_growth_is_caught(real_runs, tmp_path):
    junit = tmp_path / "check.xml"
    done = _cortbench("check", str(real_runs["longer"]), "--baseline", str(real_runs["base"]),
                      "--junit", str(junit), timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    failures = ET.parse(junit).getroot().findall(".//testcase/failure/..")
    assert [case.get("name") for case in failures] == ["tokens"]


@pytest.mark.slow
def test_a_planted_accuracy_drop_in_real_records_is_caught(real_runs, tmp_path):
    # the baseline's grades say every sample was right: the real run is then a large regression
    better = tmp_path / "better"
    shutil.copytree(real_runs["base"], better)
    lines = (better / "grades.jsonl").read_text().splitlines()
    (better / "grades.jsonl").write_text(
        "".join(json.dumps({**json.loads(line), "correct": True}) + "\n" for line in lines)
    )
    done = _cortbench("check", str(real_runs["base"]), "--baseline", str(better), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "regression: 1 regression: toy accuracy" in done.stderr


def test_check_refuses_or_pairs_an_interrupted_run_from_the_command_line(synthetic_runs, tmp_path):
    base, rerun, _ = synthetic_runs
    grades = [json.loads(line) for line in (rerun / "grades.jsonl").read_text().splitlines()]
    new = _write(tmp_path / "new", [SampleGrade(**g) for g in grades if g["sample_idx"] == 0])
    (new / "run.json").write_text(
        json.dumps({"config": {"model": "m", "samples": {"aime24": 16, "amc23": 16}}})
    )
    done = _cortbench("check", str(new), "--baseline", str(base), timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "is incomplete (1 of 16 samples per problem)" in " ".join(done.stderr.split())
    done = _cortbench("check", str(new), "--baseline", str(base), "--allow-partial", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "aime24: compared the 30 samples both runs have (30 problems, 1 per problem" in out
    assert "accuracy avg@1" in out


def test_the_embedded_model_is_named_in_the_markdown(synthetic_runs, tmp_path):
    base, rerun, _ = synthetic_runs
    (rerun / "run.json").write_text(
        json.dumps({"config": {"model": None, "model_file": "SmolLM2-135M-Q8_0.gguf"}})
    )
    markdown = tmp_path / "check.md"
    done = _cortbench("check", str(rerun), "--baseline", str(base), "--markdown", str(markdown), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = markdown.read_text()
    assert f"new `{rerun}` (SmolLM2-135M-Q8_0.gguf) against baseline `{base}` (m)" in text and "?" not in text


def test_the_check_table_is_readable_in_80_columns(synthetic_runs, tmp_path):
    """Piped (no TTY) at COLUMNS=80: no line wider, no header or cell cut to "…"."""
    base, _, worse = synthetic_runs
    grades = [json.loads(line) for line in (worse / "grades.jsonl").read_text().splitlines()]
    longer = _write(tmp_path / "longer", [SampleGrade(**{**g, "task": g["task"].replace("amc23", "olympiad_bench")})
                                          for g in grades])  # fmt: skip
    baseline = [json.loads(line) for line in (base / "grades.jsonl").read_text().splitlines()]
    base = _write(tmp_path / "base80", [SampleGrade(**{**g, "task": g["task"].replace("amc23", "olympiad_bench")})
                                      for g in baseline])  # fmt: skip
    done = _cortbench(
        "check", str(longer), "--baseline", str(base), timeout=120, env={**os.environ, "COLUMNS": "80"}
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert max(map(len, done.stdout.splitlines())) <= 80 and "…" not in done.stdout, done.stdout
    for word in ("baseline", "tolerance", "REGRESSION", "olympiad_bench", "accuracy avg@16", "response tokens",
                 "code success", "(Holm)"):  # fmt: skip
        assert word in done.stdout, word
