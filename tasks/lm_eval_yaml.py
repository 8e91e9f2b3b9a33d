"""lm-eval's task files for cortbench, generated from the task registry (tasks/lm_eval_tasks/).

lm-eval reads YAML, not our registry, so the files are written out and shipped; this module is
their only author: each number in them (k, the token budget) comes from the tasks' `Protocol`.
`python -m cortbench.tasks.lm_eval_yaml` rewrites them; `--check` exits 1 when the files on disk
differ from what the registry gives (a test runs it, so they cannot drift).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .registry import get_task, groups

# In a checkout (or an editable install) the files are tasks/lm_eval_tasks; a wheel installs them as
# lm_eval/tasks/cortbench beside the cortbench package (pyproject.toml's package-dir).
_HERE = Path(__file__).parent
FOLDER = next(
    (
        p
        for p in (_HERE / "lm_eval_tasks", _HERE.parents[1] / "lm_eval" / "tasks" / "cortbench")
        if p.is_dir()
    ),
    _HERE / "lm_eval_tasks",
)
GROUP = "cort_math"  # the paper's benchmarks, the group lm-eval users run

TEMPLATE = """\
# Shared settings of cortbench's lm-eval tasks (no .yaml suffix: lm-eval does not index it alone).
# One sample per problem at the server's sampling (the protocol's {temperature} / {top_p}): an unbiased estimate
# of the paper's avg@k; the *_avgk tasks draw the paper's k samples per problem.
# Generated from the task registry by `python -m cortbench.tasks.lm_eval_yaml`: do not edit.
tag:
  - cortbench
output_type: generate_until
custom_dataset: !function cortbench.tasks.lmeval.load
test_split: test
doc_to_text: !function cortbench.tasks.lmeval.doc_to_text
doc_to_target: gt_answer
process_results: !function cortbench.analyzers.lmeval.process_results
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: tool_calls
    aggregation: mean
    higher_is_better: false
  - metric: code_success
    aggregation: !function cortbench.analyzers.lmeval.code_success_rate
    higher_is_better: true
generation_kwargs:
  until: []  # the tool loop decides where the turn ends; lm-eval's default "\\n\\n" would cut it
  max_gen_toks: {max_tokens}
num_fewshot: 0
metadata:
  version: 1.0
"""

TASK = """\
include: _template_yaml
task: cort_{name}
dataset_kwargs:
  cort_task: {name}
"""

AVGK = """\
include: _template_yaml
task: cort_{name}_avgk
dataset_kwargs:
  cort_task: {name}
repeats: {k}  # the paper's k samples per problem; acc is avg@{k}
filter_list:
  - name: samples
    filter:
      - function: take_first_k
        k: {k}
"""

GROUP_FILE = """\
group: {group}
task: [{tasks}]
aggregate_metric_list:  # the plain mean of the task scores, as in the paper
  - {{metric: acc, aggregation: mean, weight_by_size: false{filters}}}
  - {{metric: tool_calls, aggregation: mean, weight_by_size: false{filters}}}
  - {{metric: code_success, aggregation: mean, weight_by_size: false{filters}}}
metadata:
  version: 1.0
"""


def task_files() -> dict[str, str]:
    """File name -> text of every lm-eval file, from the registry."""
    names = groups()[GROUP].tasks
    protocols = {get_task(name).protocol for name in names}
    if len({(p.temperature, p.top_p, p.max_tokens) for p in protocols}) != 1:
        raise ValueError(
            f"the tasks of {GROUP} must share sampling and token budget: one template holds them"
        )
    protocol = next(iter(protocols))
    files = {"_template_yaml": TEMPLATE.format(temperature=protocol.temperature, top_p=protocol.top_p,
                                               max_tokens=protocol.max_tokens)}  # fmt: skip
    for name in names:
        files[f"cort_{name}.yaml"] = TASK.format(name=name)
        files[f"cort_{name}_avgk.yaml"] = AVGK.format(name=name, k=get_task(name).protocol.k)
    files[f"{GROUP}.yaml"] = GROUP_FILE.format(
        group=GROUP, tasks=", ".join(f"cort_{n}" for n in names), filters=""
    )
    files[f"{GROUP}_avgk.yaml"] = GROUP_FILE.format(
        group=f"{GROUP}_avgk",
        tasks=", ".join(f"cort_{n}_avgk" for n in names),
        filters=", filter_list: samples",
    )
    return files


def stale(folder: Path = FOLDER) -> list[str]:
    """The files in `folder` that differ from the registry's (missing ones included), or are extra."""
    files = task_files()
    on_disk = {p.name for p in folder.iterdir() if p.suffix == ".yaml" or p.name == "_template_yaml"}
    differ = [
        n for n, text in files.items() if not (folder / n).is_file() or (folder / n).read_text() != text
    ]
    return sorted(differ + sorted(on_disk - set(files)))


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        if changed := stale():
            print(
                f"lm-eval task files out of date: {', '.join(changed)} (python -m cortbench.tasks.lm_eval_yaml)"
            )
            return 1
        return 0
    if argv:
        print("usage: python -m cortbench.tasks.lm_eval_yaml [--check]", file=sys.stderr)
        return 2
    for name, text in task_files().items():
        (FOLDER / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
