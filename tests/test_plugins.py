"""Plug-ins by name: one registry with entry-point discovery (docs/extending.md).

An "installed" plug-in package is a module plus a `NAME-0.1.dist-info/` folder (METADATA and
entry_points.txt) in a temporary folder: importlib.metadata finds it when the folder is on the path,
so `python -m cortbench.harness.cli` with PYTHONPATH set to it sees the plug-ins as pip would
install them. The end-to-end runs use the scripted OpenAI-compatible server (no model generation):
cells really run, through the plug-in sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from cortbench.harness.records import ToolCall, TrajectoryRecord
from cortbench.harness.sandbox import (
    LocalSandbox,
    SandboxConfig,
    SandboxError,
    make_sandbox,
    register_sandbox,
)
from cortbench.harness.store import RunStore
from cortbench.tasks.plugins import OptionError, Registry, parse_options, shown_options

PLUGIN_MODULE = '''
"""A throwaway cortbench plug-in package for tests/test_plugins.py."""
import json

from cortbench.analyzers.purpose import CellPurpose, executed_cells
from cortbench.harness.hints import HintPolicy
from cortbench.harness.sandbox import LocalSandbox
from cortbench.trainers.evaluation import StageReport, write_report
from cortbench.trainers.registry import register_stage

OPENING = "Plug-in hint: use python.\\n"


class MyHint(HintPolicy):
    def opening(self):
        return OPENING


class RecordedSandbox(LocalSandbox):
    """The local sandbox, noting in `log` that it started and every cell it ran."""

    def __init__(self, config=None, log="", **overrides):
        super().__init__(config, **overrides)
        self.log = log

    def note(self, **fields):
        with open(self.log, "a") as out:
            out.write(json.dumps(fields) + "\\n")

    async def start(self):
        self.note(event="start", timeout_s=self.config.timeout_s)
        await super().start()

    def new_session(self):
        session = super().new_session()
        run = session.run

        async def recorded(code, **options):
            self.note(event="cell", code=code)
            return await run(code, **options)

        session.run = recorded
        return session


class Always:
    """A purpose judge that calls every executed cell a verification."""

    model_name = "always"

    def __init__(self, reason="always"):
        self.reason, self.cells = reason, 0

    async def classify_many(self, records):
        out = []
        for record in records:
            cells = executed_cells(record)
            self.cells += len(cells)
            out.append([CellPurpose(c.index, "verification", (), self.reason, "judge") for c in cells])
        return out

    def report(self):
        return {"cells": self.cells, "summary": f"{self.cells} cells, all verification"}

    async def aclose(self):
        pass


@register_stage("echo", help="Writes its report and nothing else.")
def echo(config):
    report = StageReport("echo", config.model.name, str(config.output_dir),
                         data={"sandbox": config.sandbox.name})
    write_report(report)
    return report
'''

ENTRY_POINTS = """
[cortbench.hints]
myhint = cortbench_demo_plugins:MyHint
broken = cortbench_demo_missing:Policy

[cortbench.sandboxes]
recorded = cortbench_demo_plugins:RecordedSandbox

[cortbench.judges]
always = cortbench_demo_plugins:Always

[cortbench.stages]
echo = cortbench_demo_plugins:echo
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """A folder holding an 'installed' plug-in package (module + dist-info), for PYTHONPATH."""
    root = tmp_path_factory.mktemp("site")
    (root / "cortbench_demo_plugins.py").write_text(PLUGIN_MODULE)
    info = root / "cortbench_demo_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cortbench-demo-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def _cortbench(*args: str, plugins=None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80"}
    if plugins is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugins), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "cortbench.harness.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)  # fmt: skip


def _one_problem(tmp_path) -> str:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"problem": "What is 6 * 7?", "gt_answer": "42"}) + "\n")
    return str(path)


SCRIPT = ["Let me compute.\n```python\nprint(6 * 7)\n```\n", "So the answer is \\boxed{42}."]


def _log(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the registry --------------------------------------------------------------------------------------


class WidgetError(RuntimeError):
    pass


def test_entry_point_groups_are_the_kinds_in_the_plural():
    groups = {kind: Registry(kind, WidgetError, lambda: None).group
              for kind in ("backend", "sandbox", "judge", "stage", "scorer", "task", "task group")}  # fmt: skip
    assert groups == {"backend": "cortbench.backends", "sandbox": "cortbench.sandboxes",
                      "judge": "cortbench.judges", "stage": "cortbench.stages", "scorer": "cortbench.scorers",
                      "task": "cortbench.tasks", "task group": "cortbench.task_groups"}  # fmt: skip
    from cortbench.analyzers.scorers import SCORERS
    from cortbench.harness.backends import BACKENDS
    from cortbench.harness.hints import HINT_POLICIES
    from cortbench.harness.sandbox._base import SANDBOXES
    from cortbench.tasks.registry import TASKS

    assert (HINT_POLICIES.group, SANDBOXES.group, BACKENDS.group) == (
        "cortbench.hints", "cortbench.sandboxes", "cortbench.backends"
    )  # fmt: skip
    assert (SCORERS.group, TASKS.group) == ("cortbench.scorers", "cortbench.tasks")


def test_plug_ins_load_lazily_and_a_broken_one_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "widgets_ok.py").write_text("LOADED = True\nclass Big:\n    def __init__(self, size=1):\n"
                                            "        self.size = size\nNOT_A_FACTORY = 3\n")  # fmt: skip
    (tmp_path / "widgets_module.py").write_text("import widgets_holder\n"
                                                "widgets_holder.REG.register('from-module')(dict)\n")  # fmt: skip
    (tmp_path / "widgets_holder.py").write_text("REG = None\n")
    info = tmp_path / "widgets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: widgets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[cortbench.widgets]\nbig = widgets_ok:Big\nbroken = widgets_nowhere:Thing\n"
        "number = widgets_ok:NOT_A_FACTORY\nbuiltin = widgets_ok:Big\nmods = widgets_module\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets_holder

    registry: Registry[object] = Registry("widget", WidgetError, lambda: None)
    registry.register("builtin")(list)
    widgets_holder.REG = registry

    assert registry.names() == ["big", "broken", "builtin", "from-module", "number"]
    assert "widgets_ok" not in sys.modules  # listed, not imported: loaded when asked for
    assert "widgets_module" in sys.modules  # a module entry point is imported to learn its names
    assert registry.create("big", size=3).size == 3 and "widgets_ok" in sys.modules
    assert registry.create("builtin") == [] and registry.create("from-module") == {}
    with pytest.raises(WidgetError) as broken:
        registry.create("broken")
    assert str(broken.value) == (
        "the widget plug-in 'broken' (cortbench.widgets: broken = widgets_nowhere:Thing) failed to load: "
        "ModuleNotFoundError: No module named 'widgets_nowhere'"
    )
    with pytest.raises(WidgetError, match=r"'number' .* is not a factory: it names a int"):
        registry.create("number")
    with pytest.raises(WidgetError) as unknown:
        registry.create("nope")
    assert str(unknown.value).startswith("unknown widget 'nope'; known: big, builtin, from-module; "
                                         "plug-ins that failed to load: the widget plug-in 'broken'")  # fmt: skip
    with pytest.raises(WidgetError, match=r"^widget 'big': .*unexpected keyword argument 'colour'"):
        registry.create("big", colour="red")
    assert registry.create("big").size == 1  # the others are unaffected


def test_options_parse_as_yaml_and_secrets_are_not_shown():
    assert parse_options(["n=4", "f=0.5", "on=true", "xs=[1, a]", "url=http://h:8080/v1", "empty=", "n=5"],
                         "--x-arg") == {"n": 5, "f": 0.5, "on": True, "xs": [1, "a"], "url": "http://h:8080/v1",
                                        "empty": ""}  # fmt: skip
    for bad, message in (("novalue", "--x-arg takes KEY=VALUE, not 'novalue'"),
                         ("9key=1", "--x-arg takes KEY=VALUE, not '9key=1'"),
                         ("k=[1", "--x-arg 'k=[1': the value is not valid YAML (quote it)")):  # fmt: skip
        with pytest.raises(OptionError) as error:
            parse_options([bad], "--x-arg")
        assert str(error.value) == message
    assert shown_options({"url": "u", "token": "t", "api_key": "k", "password": None}) == {
        "url": "u", "token": "***", "api_key": "***", "password": None
    }  # fmt: skip


def test_hint_stage_and_task_registries_keep_their_functions():
    from cortbench.harness.hints import HintError, get_hint_policy, hint_names, register_hint
    from cortbench.tasks.registry import UnknownTaskError, get_task, groups, resolve_tasks, task_names
    from cortbench.trainers.config import ConfigError
    from cortbench.trainers.registry import Stage, get_stage, stage_names

    assert {"none", "prompt-hint", "code"} <= set(hint_names())
    register_hint("test-plugins-hint")(lambda: get_hint_policy("code"))
    assert get_hint_policy("test-plugins-hint").opening() == get_hint_policy("code").opening()
    with pytest.raises(HintError, match="unknown hint policy 'nope'; known: .*code"):
        get_hint_policy("nope")
    assert {"sft", "rft", "rl", "synthesize"} <= set(stage_names())
    assert isinstance(get_stage("sft"), Stage) and get_stage("sft").name == "sft"
    with pytest.raises(ConfigError, match="unknown stage 'nope'; known: "):
        get_stage("nope")
    assert "aime24" in task_names() and groups()["cort_math"].tasks[0] == "aime24"
    assert [s.name for s in resolve_tasks("cort_math")][:2] == ["aime24", "aime25"]
    assert get_task("math500").name == "math500"
    with pytest.raises(
        UnknownTaskError, match=r"unknown task 'x'; known: cort_math, aime24, .*\(or a .jsonl"
    ):
        get_task("x")


# --- sandboxes by name ---------------------------------------------------------------------------------


class _Noted(LocalSandbox):
    made: list[dict] = []

    def __init__(self, config=None, tag="", **overrides):
        super().__init__(config, **overrides)
        _Noted.made.append({"tag": tag, "timeout_s": self.config.timeout_s})


register_sandbox("test-plugins-noted")(_Noted)


def test_make_sandbox_passes_the_runs_config_and_the_settings():
    box = make_sandbox("local", SandboxConfig(timeout_s=7), {"memory_mb": 512})
    assert isinstance(box, LocalSandbox) and (box.config.timeout_s, box.config.memory_mb) == (7, 512)
    remote = make_sandbox("remote", SandboxConfig(timeout_s=5), {"url": "http://h:1/"})
    assert remote.url == "http://h:1" and remote.config.timeout_s == 5
    for name, args, message in (
        ("nope", {}, "unknown sandbox 'nope'; known: local, "),
        ("local", {"bogus": 1}, "sandbox 'local': SandboxConfig.__init__() got an unexpected keyword argument 'bogus'"),
        ("remote", {"bogus": 1}, "sandbox 'remote': RemoteSandbox.__init__() got an unexpected keyword argument"),
    ):  # fmt: skip
        with pytest.raises(SandboxError) as error:
            make_sandbox(name, SandboxConfig(), args)
        assert str(error.value).startswith(message)


def test_a_stages_sandbox_key_reaches_sampling_and_rl(tmp_path):
    from cortbench.trainers.config import ConfigError, RolloutSettings, SandboxSpec, config_from_dict
    from cortbench.trainers.evaluation import resolve_sampling
    from cortbench.trainers.rl import RolloutOptions, _make_sandbox

    base = {"stage": "sft", "model": "m", "output_dir": str(tmp_path), "sft": {"records": []}}
    assert config_from_dict(base).sandbox == SandboxSpec("local", {})
    assert config_from_dict({**base, "sandbox": "remote"}).sandbox == SandboxSpec("remote", {})
    spec = config_from_dict(
        {**base, "sandbox": {"name": "remote", "url": "http://h:8080", "token": "s"}}
    ).sandbox
    assert spec == SandboxSpec("remote", {"url": "http://h:8080", "token": "s"})
    config = config_from_dict({**base, "sandbox": {"name": "remote", "url": "http://h:8080", "token": "s"}})
    assert config.to_dict()["sandbox"] == {"name": "remote", "args": {"url": "http://h:8080", "token": "***"}}
    for value, message in (("nope", "config: sandbox: unknown sandbox 'nope'; known: local"),
                           ({"name": "local", "bogus": 1}, "sandbox: sandbox 'local': SandboxConfig.__init__() got"),
                           ([1], "config: sandbox: a sandbox name, or a mapping")):  # fmt: skip
        with pytest.raises(ConfigError) as error:
            config_from_dict({**base, "sandbox": value})
        assert message in str(error.value)

    tasks = tmp_path / "toy.jsonl"
    tasks.write_text(json.dumps({"problem": "1+1?", "gt_answer": "2"}) + "\n")
    noted = SandboxSpec("test-plugins-noted", {"tag": "eval"})
    sampling = resolve_sampling(RolloutSettings(tasks=[str(tasks)], timeout_s=3), noted)
    assert sampling.sandbox == noted
    assert sampling.run_config("m")["sandbox"] == "test-plugins-noted"
    _Noted.made.clear()
    sampling.sandbox.make(SandboxConfig(timeout_s=sampling.timeout_s))
    _make_sandbox(RolloutOptions(sandbox="test-plugins-noted", sandbox_args={"tag": "rl"}, cell_timeout_s=5))
    assert _Noted.made == [{"tag": "eval", "timeout_s": 3}, {"tag": "rl", "timeout_s": 5}]


class _CellThenAnswer:
    """A Generator that writes one cell, then answers."""

    def render_chat(self, messages):
        return f"<user>{messages[-1]['content']}<assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]):
        from cortbench.harness.rollout import Completion

        if "```output" not in prompt:
            return Completion("Let me compute.\n```python\nprint(6 * 7)\n", "stop", 5, stop="```\n")
        return Completion("So the answer is \\boxed{42}.", "stop", 6)


def test_stage_sampling_runs_its_cells_in_the_configured_sandbox(tmp_path):
    from cortbench.trainers.config import RolloutSettings, SandboxSpec
    from cortbench.trainers.evaluation import resolve_sampling, sample_run

    tasks = tmp_path / "toy.jsonl"
    tasks.write_text(json.dumps({"problem": "What is 6 * 7?", "gt_answer": "42"}) + "\n")
    _Noted.made.clear()
    spec = SandboxSpec("test-plugins-noted", {"tag": "sampling", "warm_kernels": 0})
    sampling = resolve_sampling(RolloutSettings(tasks=[str(tasks)], n=1, timeout_s=4, concurrency=1), spec)
    (record,) = sample_run(_CellThenAnswer(), sampling, tmp_path / "run", model_name="scripted")
    assert [c.output for c in record.tool_calls] == ["42"]
    assert _Noted.made == [{"tag": "sampling", "timeout_s": 4}]
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert (config["sandbox"], config["sandbox_args"]) == (
        "test-plugins-noted",
        {"tag": "sampling", "warm_kernels": 0},
    )


# --- an installed plug-in package, used by name from the command line ----------------------------------


@pytest.mark.slow
def test_installed_hint_and_sandbox_plug_ins_run_by_name(plugin_dir, tiny_model_dir, tmp_path):
    from scripted_openai import scripted_server

    out, log = tmp_path / "run", tmp_path / "sandbox.log"
    with scripted_server(SCRIPT) as (url, _):
        done = _cortbench("run", "--tasks", _one_problem(tmp_path), "--backend", "openai", "--base-url", url,
                          "--tokenizer", tiny_model_dir, "--n", "1", "--timeout", "9", "--hint", "myhint",
                          "--sandbox", "recorded", "--sandbox-arg", f"log={log}", "-o", str(out),
                          plugins=plugin_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert [h["text"] for h in record["hints"]] == ["Plug-in hint: use python.\n"]
    assert [c["output"] for c in record["tool_calls"]] == ["42"]
    assert _log(log) == [{"event": "start", "timeout_s": 9.0}, {"event": "cell", "code": "print(6 * 7)"}]
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["hint"], config["sandbox"], config["sandbox_args"]) == (
        "myhint",
        "recorded",
        {"log": str(log)},
    )

    # the purpose judge plug-in, on the run just made
    done = _cortbench("analyze", str(out), "--judge", "always", "--judge-arg", "reason=by rule",
                      plugins=plugin_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "purpose of executed cells (judge always" in done.stdout and "judge always: 1 cells" in done.stdout
    cells = pd.read_parquet(out / "analysis" / "cells.parquet").dropna(subset=["purpose"])
    assert list(cells["purpose"]) == ["verification"] and list(cells["purpose_evidence"]) == ["by rule"]
    summary = json.loads((out / "results.json").read_text())["analysis"]
    assert summary["judge"]["model"] == "always" and summary["labelers"]["cell"] == ["judge:always"]


def test_broken_and_unknown_plug_ins_are_one_line(plugin_dir, tmp_path):
    problem = _one_problem(tmp_path)
    done = _cortbench(
        "run", "--tasks", problem, "--hint", "broken", "-o", str(tmp_path / "r"), plugins=plugin_dir
    )
    assert done.returncode == 1 and not (tmp_path / "r").exists()
    assert done.stderr == (
        "error: the hint policy plug-in 'broken' (cortbench.hints: broken = cortbench_demo_missing:Policy) "
        "failed to load: ModuleNotFoundError: No module named 'cortbench_demo_missing'\n"
    )
    done = _cortbench(
        "run", "--tasks", problem, "--hint", "nope", "-o", str(tmp_path / "r"), plugins=plugin_dir
    )
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "unknown hint policy 'nope'; known: broken, code, myhint, none, prompt-hint" in done.stderr
    for args, message in (
        (["--sandbox", "nope"], "error: unknown sandbox 'nope'; known: local, recorded, remote, sandboxfusion"),
        (["--sandbox", "recorded", "--sandbox-arg", "colour=red"],
         "error: sandbox 'recorded': SandboxConfig.__init__() got an unexpected keyword argument 'colour'"),
        (["--sandbox-arg", "colour"], "error: --sandbox-arg takes KEY=VALUE, not 'colour'"),
    ):  # fmt: skip
        done = _cortbench("run", "--tasks", problem, *args, "-o", str(tmp_path / "r"), plugins=plugin_dir)
        assert done.returncode == 1 and done.stderr.strip() == message and not (tmp_path / "r").exists()
    done = _cortbench("serve", "--sandbox", "nope", plugins=plugin_dir)
    assert done.returncode == 1 and done.stderr.startswith(
        "error: unknown sandbox 'nope'; known: local, recorded"
    )


def test_a_plug_in_stage_runs_from_its_config(plugin_dir, tmp_path):
    config = tmp_path / "echo.yaml"
    config.write_text(
        f"stage: echo\nmodel: m\noutput_dir: {tmp_path / 'out'}\nsandbox: {{name: recorded, log: x}}\n"
    )
    done = _cortbench("train", "run", "--config", str(config), plugins=plugin_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stage"] == "echo" and report["data"] == {"sandbox": "recorded"}
    config.write_text(f"stage: echo\nmodel: m\noutput_dir: {tmp_path / 'out'}\nsandbox: nowhere\n")
    done = _cortbench("train", "run", "--config", str(config), plugins=plugin_dir)
    assert (
        done.returncode == 1 and "sandbox: unknown sandbox 'nowhere'; known: local, recorded" in done.stderr
    )
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.slow
def test_serve_runs_cells_in_the_named_sandbox(plugin_dir, tiny_model_dir, tmp_path, monkeypatch):
    from conftest import cortbench_serve
    from scripted_openai import scripted_server

    log = tmp_path / "sandbox.log"
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")]))
    )
    with scripted_server(SCRIPT) as (url, _), cortbench_serve(
        "--backend", "openai", "--base-url", url, "--tokenizer", tiny_model_dir, "--sandbox", "recorded",
        "--sandbox-arg", f"log={log}", "--timeout", "8"
    ) as served:  # fmt: skip
        reply = httpx.post(f"{served}/v1/completions", json={"prompt": "What is 6 * 7?"}, timeout=120).json()
    assert reply["choices"][0]["text"].endswith("```output\n42\n```\nSo the answer is \\boxed{42}.")
    assert _log(log) == [{"event": "start", "timeout_s": 8.0}, {"event": "cell", "code": "print(6 * 7)"}]


# --- the LLM purpose judge from the command line -------------------------------------------------------


def _judged_run(path) -> str:
    steps = [("The product is 42.\n", "print(6 * 7)", "42"), ("Now the sum.\n", "print(6 + 7)", "13")]
    generation = "".join(
        f"{prose}```python\n{code}\n```\n```output\n{out}\n```\n" for prose, code, out in steps
    )
    record = TrajectoryRecord("toy", "0", 0, "<user>What is 6 * 7?<assistant>", generation + "\\boxed{42}", "stop",
                              tool_calls=[ToolCall(code, out, "ok", 0.0) for _, code, out in steps])  # fmt: skip
    with RunStore.open(path, {"model": "scripted", "backend": "openai"}) as store:
        store.append(record)
    return str(path)


def test_llm_judge_from_the_command_line_against_a_scripted_server(tiny_model_dir, tmp_path):
    from scripted_openai import scripted_server

    run, cache = _judged_run(tmp_path / "run"), tmp_path / "judge.jsonl"
    answer = '{"purpose": "verification", "categories": ["Pattern Recognition and Analysis"], "reason": "rechecks 42"}'
    judge = ["--judge", "llm", "--judge-arg", "model=scripted-judge", "--judge-arg", f"tokenizer={tiny_model_dir}",
             "--judge-arg", f"cache_path={cache}", "--judge-arg", "concurrency=2"]  # fmt: skip
    with scripted_server([answer]) as (url, requests):
        done = _cortbench("analyze", run, *judge, "--judge-arg", f"base_url={url}")
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(requests) == 2 and all(
            r["temperature"] == 0.0 and r["model"] == "scripted-judge" for r in requests
        )
        assert "purpose of executed cells (judge scripted-judge" in done.stdout
        assert (
            "judge scripted-judge: 2 cells: 2 labelled by the judge (0 answers from the cache, 2"
            in done.stdout
        )
        cells = pd.read_parquet(tmp_path / "run" / "analysis" / "cells.parquet").dropna(subset=["purpose"])
        assert list(cells["purpose"]) == ["verification", "verification"]
        assert set(cells["purpose_method"]) == {"judge"}
        assert list(cells["purpose_evidence"])[0] == "scripted-judge: rechecks 42"
        summary = json.loads((tmp_path / "run" / "results.json").read_text())["analysis"]
        assert summary["judge"]["requests"] == 2 and summary["purpose"]["all"]["verification"] == 1.0

        again = _cortbench("analyze", run, *judge, "--judge-arg", f"base_url={url}")  # from the cache
        assert again.returncode == 0 and len(requests) == 2 and "(2 answers from the cache, 0" in again.stdout

    for extra, message in (
        (["--judge", "llm"], "error: judge 'llm': give the served model's name (--judge-arg model=NAME): it keys the cache"),
        (["--judge-arg", "model=m", "--judge-arg", "base_url=http://127.0.0.1:9/v1"],
         "error: judge 'llm': give the judge model's tokenizer (--judge-arg tokenizer=HF_ID or folder): prompts"),
        (["--judge-arg", "model=m", "--judge-arg", "base_url=http://x/v1", "--judge-arg", "colour=red",
          "--judge-arg", f"tokenizer={tiny_model_dir}"],
         "error: judge 'llm': backend 'openai': OpenAIGenerator.__init__() got an unexpected keyword argument"),
        (["--judge", "nope"], "error: unknown judge 'nope'; known: llm"),
        (["--judge-arg", "bad"], "error: --judge-arg takes KEY=VALUE, not 'bad'"),
    ):  # fmt: skip
        done = _cortbench("analyze", run, *extra)
        assert done.returncode == 1 and done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1
