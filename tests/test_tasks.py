"""The task registry and loading: the paper's five files as they are, groups, user tasks, clear errors."""

import json
import subprocess
import sys

import pytest

from cortbench.tasks.loading import load_problems, rows_to_problems, source_of
from cortbench.tasks.problems import TaskDataError
from cortbench.tasks.registry import UnknownTaskError, get_task, resolve_tasks, task_from_yaml
from cortbench.tasks.spec import HubSource

SIZES = {"aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "olympiad_bench": 675}


def test_the_papers_files_load_as_they_are(cort_data):
    for spec in resolve_tasks("cort_math"):
        problems = load_problems(spec, cort_data)
        assert len(problems) == SIZES[spec.name] == spec.size
        assert [p.problem_id for p in problems] == [str(i) for i in range(spec.size)]
        assert all(p.problem and p.gold for p in problems)
    aime = load_problems(get_task("aime24"), cort_data)
    assert aime[0].gold == "204" and aime[4].meta["url"].endswith("2024_AIME_I_Problems/Problem_5")
    olympiad = {p.meta["id"]: p for p in load_problems(get_task("olympiad_bench"), cort_data)}
    assert (olympiad[2592].meta["error"], olympiad[2592].meta["unit"]) == ("1e-1", "%")


def test_protocol_defaults_are_the_papers():
    k = {spec.name: spec.protocol.k for spec in resolve_tasks("cort_math")}
    assert k == {"aime24": 16, "aime25": 16, "amc23": 16, "math500": 4, "olympiad_bench": 4}
    spec = get_task("math500")
    assert (spec.protocol.temperature, spec.protocol.top_p, spec.protocol.max_tool_calls) == (0.6, 0.95, 15)
    assert (spec.protocol.max_tokens, spec.protocol.timeout_s) == (32768, 30.0)
    assert spec.instruction.startswith("\nPlease integrate natural language reasoning with python programs")


def test_groups_expand_in_order_without_duplicates():
    assert [s.name for s in resolve_tasks("aime24,cort_math")] == list(SIZES)


def test_limit_takes_the_first_problems(cort_data):
    assert [p.problem_id for p in load_problems(get_task("math500"), cort_data, limit=3)] == ["0", "1", "2"]


def test_unknown_task_names_the_known_ones():
    with pytest.raises(
        UnknownTaskError, match=r"unknown task 'aime42'; known: cort_math, aime24, .*olympiad_bench"
    ):
        resolve_tasks("aime42")


def test_wrong_row_count_and_missing_fields_fail_clearly(cort_data, tmp_path):
    lines = (cort_data / "test_aime24.jsonl").read_text().splitlines()
    (tmp_path / "test_aime24.jsonl").write_text("\n".join(lines[:29]) + "\n")
    with pytest.raises(TaskDataError, match="task aime24: expected 30 problems, found 29"):
        load_problems(get_task("aime24"), tmp_path)
    (tmp_path / "test_aime24.jsonl").write_text(
        "\n".join(lines[:5] + ['{"problem": "x"}'] + lines[6:]) + "\n"
    )
    with pytest.raises(TaskDataError, match=r"test_aime24.jsonl:6: a row needs the fields 'problem'"):
        load_problems(get_task("aime24"), tmp_path)


def test_without_a_data_folder_the_hub_is_used_and_failure_is_one_line(monkeypatch):
    monkeypatch.delenv("CORTBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = get_task("math500")
    assert source_of(spec, None) == "hub:HuggingFaceH4/MATH-500:test"
    with pytest.raises(TaskDataError, match="task math500: .*(hub|datasets).*--data-dir") as info:
        load_problems(spec, None)
    assert "\n" not in str(info.value)


def test_hub_rows_map_onto_problems():
    source = HubSource("Hothan/OlympiadBench", "train", answer=("final_answer",), id=("id",))
    rows = [{"id": 7, "question": "Find a and b.", "final_answer": ["$1$", "$2$"]}]
    [p] = rows_to_problems("olympiad_bench", rows, source)
    assert (p.problem_id, p.problem, p.gold) == ("7", "Find a and b.", "$1$,$2$")
    with pytest.raises(TaskDataError, match="hub row 0 has no answer column"):
        rows_to_problems("x", [{"problem": "p"}], HubSource("d", "s"))


def test_a_yaml_task_definition(tmp_path):
    (tmp_path / "mine.jsonl").write_text(json.dumps({"problem": "1+1?", "gt_answer": "2"}) + "\n")
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ndescription: my set\nfile: mine.jsonl\nsize: 1\nanswer_type: integer\nprotocol: {k: 3}\n"
    )
    spec = task_from_yaml(tmp_path / "mine.yaml")
    assert (spec.name, spec.protocol.k, spec.protocol.temperature) == ("mine", 3, 0.6)
    [problem] = load_problems(spec)
    assert (problem.task, problem.gold) == ("mine", "2")
    assert resolve_tasks(str(tmp_path / "mine.yaml"))[0].name == "mine"
    (tmp_path / "bad.yaml").write_text("name: bad\nfile: mine.jsonl\nk: 3\n")
    with pytest.raises(TaskDataError, match=r"bad.yaml: unknown keys \['k'\]"):
        task_from_yaml(tmp_path / "bad.yaml")


def test_tasks_path_registers_yaml_tasks(tmp_path):
    (tmp_path / "mine.jsonl").write_text(json.dumps({"problem": "1+1?", "gt_answer": "2"}) + "\n")
    (tmp_path / "mine.yaml").write_text("name: my_set\nfile: mine.jsonl\n")
    code = "from cortbench.tasks.registry import task_names; print(task_names())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"CORTBENCH_TASKS_PATH": str(tmp_path), "PATH": ""}, check=True)  # fmt: skip
    assert "my_set" in out.stdout


def test_cortbench_tasks_lists_and_checks(cort_data):
    done = subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", "tasks", "--data-dir", str(cort_data), "--check"],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name, size in SIZES.items():
        assert name in done.stdout and f"{size} ✓" in done.stdout
    assert "group cort_math: aime24, aime25, amc23, math500, olympiad_bench" in done.stdout


def test_cortbench_tasks_reads_at_80_columns_piped(cort_data, tmp_path):
    """Piped (no TTY) at COLUMNS=80: one table line a task, no line wider but the sources, and
    every source shown whole on its line, also a path longer than 80 columns (an installed package's
    data file, or here a deep data folder)."""
    from cortbench.tasks.loading import source_of
    from cortbench.tasks.registry import task_names

    deep = tmp_path / ("a-folder-with-a-long-name-" * 3) / "cort"
    deep.parent.mkdir()
    deep.symlink_to(cort_data.resolve())
    out = tmp_path / "tasks.txt"
    with out.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "cortbench.harness.cli", "tasks", "--data-dir", str(deep)],
            stdout=stdout, stderr=subprocess.PIPE, text=True, env={"COLUMNS": "80", "PATH": ""}, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    names = task_names()
    assert (
        len(lines) <= 2 * len(names) + 10
    )  # was 213 lines for 6 tasks: the source column one character wide
    sources = {
        line.split()[0]: line for line in lines[lines.index("sources:") + 1 :] if line.split()[0] in names
    }
    assert sorted(sources) == sorted(names)
    assert max(len(line) for line in lines if line not in sources.values()) <= 80
    assert max(len(line) for line in sources.values()) > 80  # the case that used to fold
    for name in names:
        [row] = [line for line in lines if line.startswith(f"│ {name} ")]
        assert "…" not in row
        assert sources[name].split() == [name, source_of(get_task(name), deep)]


def test_lm_eval_task_files_are_generated_from_the_registry(tmp_path):
    """The shipped YAMLs are what the registry gives (k per task, the token budget), and a file
    that drifts, is missing or is extra is named."""
    import shutil

    from cortbench.tasks.lm_eval_yaml import FOLDER, main, stale, task_files

    assert stale() == [], "run: python -m cortbench.tasks.lm_eval_yaml"
    assert main(["--check"]) == 0
    files = task_files()
    assert "repeats: 16" in files["cort_aime24_avgk.yaml"] and "repeats: 4" in files["cort_math500_avgk.yaml"]
    assert f"max_gen_toks: {get_task('aime24').protocol.max_tokens}" in files["_template_yaml"]
    copy = tmp_path / "tasks"
    shutil.copytree(FOLDER, copy)
    (copy / "cort_amc23_avgk.yaml").write_text(files["cort_amc23_avgk.yaml"].replace("16", "8"))
    (copy / "cort_aime25.yaml").unlink()
    (copy / "cort_old.yaml").write_text("task: cort_old\n")
    assert stale(copy) == ["cort_aime25.yaml", "cort_amc23_avgk.yaml", "cort_old.yaml"]


def test_the_protocol_has_one_home():
    """Every default of the CoRT protocol comes from tasks.spec.CORT_PROTOCOL."""
    import inspect

    from cortbench.harness.backends import hf, llamacpp, openai, vllm
    from cortbench.harness.rollout import Limits
    from cortbench.harness.sandbox import SandboxConfig
    from cortbench.tasks.spec import CORT_PROTOCOL

    assert Limits() == Limits(
        CORT_PROTOCOL.max_tool_calls, CORT_PROTOCOL.max_tokens, CORT_PROTOCOL.max_tokens
    )
    assert SandboxConfig().timeout_s == CORT_PROTOCOL.timeout_s
    generators = (hf.HFGenerator, llamacpp.LlamaCppGenerator, openai.OpenAIGenerator, vllm.VLLMGenerator)
    for cls in generators:
        parameters = inspect.signature(cls.__init__).parameters
        assert parameters["temperature"].default == CORT_PROTOCOL.temperature, cls
        assert parameters["top_p"].default == CORT_PROTOCOL.top_p, cls

    class Small:  # a backend whose model has a 2,048-token window
        context_length = 2048

    capped = Limits.within_context(Small(), max_tool_calls=3, max_tokens=32768)
    assert (capped.max_tool_calls, capped.max_tokens_per_call, capped.max_total_tokens) == (3, 2048, 2048)
    assert Limits.within_context(object()) == Limits()
