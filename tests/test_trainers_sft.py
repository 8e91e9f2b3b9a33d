"""SFT on trajectories: the loss covers what the model wrote, never the prompt or interpreter output;
training lowers it; stage configs are checked; the stage ends with a before/after evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from conftest import code_chat  # noqa: E402

from cortbench.harness.chat import render_with_tokenizer  # noqa: E402
from cortbench.harness.records import ToolCall, TrajectoryRecord  # noqa: E402
from cortbench.tasks.prompts import COT_INSTRUCTION  # noqa: E402
from cortbench.trainers.config import ConfigError, TrainingConfig, config_from_dict, load_config  # noqa: E402
from cortbench.trainers.encoding import IGNORE_INDEX  # noqa: E402
from cortbench.trainers.sft import sft_rows, sft_trainer, train, write_records  # noqa: E402

PAIRS = [(12, 2), (21, 2), (11, 4), (4, 10), (2, 22), (10, 12)]


def chat_record(tokenizer, a: int, b: int, idx: int = 0) -> TrajectoryRecord:
    problem, completion = code_chat(a, b)
    prompt = render_with_tokenizer(tokenizer, [{"role": "user", "content": problem + COT_INSTRUCTION}])
    return TrajectoryRecord(
        "toy", f"{a}*{b}", idx, prompt, completion, "stop", gold=str(a * b),
        tool_calls=[ToolCall(f"print({a} * {b})", str(a * b), "ok", 0.0)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def cpu_training(**changes) -> TrainingConfig:
    fields = dict(learning_rate=5e-3, batch_size=2, per_device_batch_size=2, max_steps=30, save_model=False)
    return TrainingConfig(**(fields | changes))


def test_collated_batch_masks_prompt_and_interpreter_output(tiny, tmp_path):
    model, tokenizer = tiny
    records = [chat_record(tokenizer, a, b) for a, b in PAIRS[:2]]
    rows = sft_rows(tokenizer, records)
    trainer = sft_trainer(model, tokenizer, rows, cpu_training(max_steps=1), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape
    seen = set()
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        trained = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
        record = next(
            r for r in records if trained.startswith("Let me") and str(r.gold) in trained.split("boxed")[-1]
        )
        a, b = record.problem_id.split("*")
        # every model-written token and the closing eos, nothing of the prompt or the output block
        assert trained == (
            f"Let me compute this with python.\n```python\nprint({a} * {b})\n```\n"
            f"So the answer is \\boxed{{{record.gold}}}.<eos>"
        )
        prompt_len = len(tokenizer(record.prompt, add_special_tokens=False)["input_ids"])
        assert all(lab == IGNORE_INDEX for lab in labels[:prompt_len])
        # labels equal the input ids wherever they are trained (the model shifts them itself)
        assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ids, labels))
        output = tokenizer(f"```output\n{record.gold}\n```\n", add_special_tokens=False)["input_ids"]
        start = next(i for i in range(len(ids)) if ids[i : i + len(output)] == output)
        assert labels[start : start + len(output)] == [IGNORE_INDEX] * len(output)
        seen.add(record.problem_id)
    assert len(seen) == 2


def masked_loss(model, rows) -> float:
    model.eval()
    with torch.no_grad():
        losses = [
            model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss.item()
            for r in rows
        ]
    return sum(losses) / len(losses)


def test_sft_lowers_the_loss_on_its_trajectories(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = sft_rows(tokenizer, [chat_record(tokenizer, a, b) for a, b in PAIRS])
    before = masked_loss(model, rows)
    result = train(model, tokenizer, rows, cpu_training(), tmp_path, seed=0)
    after = masked_loss(result.model, rows)
    assert result.steps == 30
    assert after < 0.5 * before
    assert result.losses[-1] < result.losses[0]
    assert result.tokens > result.trained_tokens > 0


def test_paper_recipe_is_the_default_and_global_batch_is_kept(tmp_path):
    from cortbench.trainers.sft import accumulation_steps, sft_config

    training = TrainingConfig()
    assert (training.learning_rate, training.num_train_epochs, training.batch_size) == (1e-5, 17, 96)
    assert accumulation_steps(TrainingConfig(batch_size=96, per_device_batch_size=2), world_size=4) == 12
    args = sft_config(training, tmp_path)
    assert args.gradient_accumulation_steps == 96 and args.learning_rate == 1e-5
    assert (
        args.save_strategy == "steps" and args.save_steps == 0.1 and args.save_total_limit == 1
    )  # resumable
    assert not args.bf16 and args.use_cpu
    assert sft_config(TrainingConfig(save_steps=0), tmp_path).save_strategy == "no"


def test_config_is_checked(tmp_path):
    base = {"stage": "sft", "model": "m", "output_dir": str(tmp_path), "sft": {"records": ["r.jsonl"]}}
    config = config_from_dict(base | {"training": {"learning_rate": "1e-4", "max_steps": 3}})
    assert config.training.learning_rate == 1e-4 and config.section.records == ["r.jsonl"]
    for bad, message in [
        (base | {"trainning": {}}, "unknown keys ['trainning']"),
        (base | {"training": {"learning_rat": 1}}, "training: unknown keys ['learning_rat']"),
        (base | {"training": {"max_steps": "many"}}, "training.max_steps: expected int"),
        (base | {"stage": "distil"}, "unknown stage 'distil'"),
        ({k: v for k, v in base.items() if k != "model"}, "'model' is required"),
        (base | {"sft": {}}, "sft: missing records"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            config_from_dict(bad)
    path = tmp_path / "c.yaml"
    path.write_text("stage: sft\nmodel: m\noutput_dir: '{config_dir}/out'\nsft: {records: [a.jsonl]}\n")
    assert load_config(path).output_dir == tmp_path / "out"


def cortbench(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", *args], cwd=cwd, capture_output=True, text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}, timeout=600,
    )  # fmt: skip


def test_bad_configs_fail_in_one_line(tmp_path, tiny_model_dir):
    (tmp_path / "bad.yaml").write_text(
        f"model: {tiny_model_dir}\noutput_dir: out\nsft: {{records: [missing.jsonl]}}\n"
    )
    (tmp_path / "typo.yaml").write_text(
        "model: m\noutput_dir: out\nsft: {records: [x], train_on_hint: true}\n"
    )
    for config, message in [
        ("bad.yaml", "no trajectory records at missing.jsonl"),
        ("typo.yaml", "unknown keys ['train_on_hint']"),
        ("nope.yaml", "config file nope.yaml does not exist"),
    ]:
        done = cortbench("train", "sft", "--config", config, cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [f"error: {message}"] or message in done.stderr
        assert "Traceback" not in done.stderr


def test_sft_stage_evaluates_before_and_after(tmp_path, code_writing_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(code_writing_model_dir)
    write_records(tmp_path / "records.jsonl", [chat_record(tokenizer, a, b) for a, b in PAIRS])
    (tmp_path / "heldout.jsonl").write_text(
        "".join(json.dumps({"problem": f"What is {a} * {b}?", "gt_answer": str(a * b)}) + "\n" for a, b in [(2, 12), (4, 11)])
    )  # fmt: skip
    (tmp_path / "sft.yaml").write_text(
        f"stage: sft\nmodel: {code_writing_model_dir}\noutput_dir: out\nseed: 0\n"
        "training: {learning_rate: 1.0e-4, batch_size: 2, per_device_batch_size: 2, max_steps: 2}\n"
        "eval: {tasks: [heldout.jsonl], n: 2, temperature: 0, max_tokens: 200, timeout_s: 10, concurrency: 2}\n"
        "sft: {records: [records.jsonl]}\n"
    )
    done = cortbench("train", "sft", "--config", "sft.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["steps"] == 2 and report["data"]["rows"] == len(PAIRS)
    assert report["trained_model"] == "out/model" and (out / "model" / "config.json").is_file()
    for label in ("before", "after"):
        run = out / "eval" / label
        assert (run / "grades.jsonl").is_file() and (run / "run.json").is_file()
        results = json.loads((run / "results.json").read_text())
        assert results["tasks"]["heldout"]["samples"] == 4
    heldout = report["evaluation"]["tasks"]["heldout"]
    assert {"before", "after", "change"} <= set(heldout) and heldout["after"]["n"] == 2
    assert heldout["change"]["ci"][0] <= heldout["change"]["value"] <= heldout["change"]["ci"][1]
    assert "| heldout | 2 |" in (out / "report.md").read_text()
