"""A stopped stage resumes: rerunning the same command skips the phases that finished (evaluation,
sampling, training), continues an interrupted training from its checkpoint, and says so in one
line per phase; without a terminal, progress is a plain line."""

from __future__ import annotations

import io
import json
import re

import pytest

pytest.importorskip("trl")
pytest.importorskip("torch")

from conftest import code_chat_pairs  # noqa: E402

from cortbench.harness.records import TrajectoryRecord  # noqa: E402
from cortbench.trainers import sft as sft_module  # noqa: E402
from cortbench.trainers.progress import PhaseProgress  # noqa: E402
from cortbench.trainers.rl import _drop_rollouts_after  # noqa: E402
from cortbench.trainers.synthesis import append_engineered, read_engineered  # noqa: E402


def test_progress_without_a_terminal_is_a_plain_line():
    out = io.StringIO()  # not a TTY, as in CI logs or under nohup
    with PhaseProgress("sampling", 3, every_s=1e9, stream=out) as progress:
        progress.advance()
        progress.advance()
        progress.advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "sampling: 0/3 samples"
    assert lines[1].startswith("sampling: 1/3 samples")  # the first item, then every every_s, then the end
    assert lines[-1].startswith("sampling: 3/3 samples") and len(lines) == 3
    resumed = PhaseProgress("eval after", 16, done=12, stream=io.StringIO())
    resumed.advance(2)  # the rate and ETA cover this run's items, not those done before
    assert resumed.line(elapsed_s=10.0) == "eval after: 14/16 samples, 0.2/s, ETA 0:10"


def test_engineered_trajectories_are_kept_one_by_one_and_a_torn_line_is_dropped(tmp_path):
    journal = tmp_path / "engineered.jsonl"
    for index in (0, 1):
        append_engineered(journal, index, TrajectoryRecord("toy", str(index), 0, "p", "g", "stop"))
    with journal.open("a") as out:
        out.write('{"index": 2, "record": {"task"')  # the run died while writing
    done = read_engineered(journal)
    assert sorted(done) == [0, 1] and done[1].problem_id == "1"


def test_rollouts_past_the_resumed_checkpoint_are_dropped(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(
        "".join(json.dumps({"step": s, "generation": "x"}) + "\n" for s in (0, 0, 1, 1, 2)) + '{"st'
    )
    _drop_rollouts_after(path, 1)  # resuming from checkpoint-1 samples step 1's rollouts again
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 0]


@pytest.fixture
def interrupt_at_first_checkpoint(monkeypatch):
    """The next SFT training stops (as Ctrl-C would) right after writing its first checkpoint."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt

    real = sft_module.sft_trainer

    def stopping(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.add_callback(Stop())
        return trainer

    monkeypatch.setattr(sft_module, "sft_trainer", stopping)
    return monkeypatch


def test_a_stopped_rft_run_resumes_without_redoing_finished_phases(
    code_writing_model_dir, tmp_path, interrupt_at_first_checkpoint
):
    from typer.testing import CliRunner

    from cortbench.trainers.cli import train_app

    pairs = code_chat_pairs()
    for name, chosen in (("train", pairs[:3]), ("heldout", pairs[3:5])):
        rows = [{"problem": f"What is {a} * {b}?", "gt_answer": str(a * b)} for a, b in chosen]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    protocol = "temperature: 0, max_tokens: 200, max_tool_calls: 2, timeout_s: 10, concurrency: 2"
    config = tmp_path / "rft.yaml"
    text = (
        f"stage: rft\nmodel: {code_writing_model_dir}\noutput_dir: {tmp_path / 'out'}\n"
        "training: {learning_rate: 1.0e-4, batch_size: 2, per_device_batch_size: 2, max_steps: 2, save_steps: 1}\n"
        f"eval: {{tasks: ['{{config_dir}}/heldout.jsonl'], n: 1, {protocol}}}\n"
        f"rft: {{sampling: {{tasks: ['{{config_dir}}/train.jsonl'], n: 2, {protocol}}}, dedupe: false}}\n"
    )
    config.write_text(text)
    out = tmp_path / "out"

    def run() -> str:
        result = CliRunner().invoke(train_app, ["rft", "--config", str(config)])
        assert "Traceback" not in result.output
        return result.output

    first = run()  # evaluates, samples, filters, then stops in training
    assert "error: interrupted" in first
    assert "eval before: 0/2 samples" in first and "sampling: 0/6 samples" in first
    assert re.search(r"^sampling: 6/6 samples, [\d.e+-]+/s, took \d+:\d\d$", first, re.M), first
    assert (out / "accepted.jsonl").read_text() and list((out / "trainer").glob("checkpoint-1"))
    samples = (out / "samples" / "samples.jsonl").read_bytes()
    before = (out / "eval" / "before" / "samples.jsonl").read_bytes()

    interrupt_at_first_checkpoint.undo()
    second = run()
    assert "eval before: 2/2 samples already done" in second
    assert "sampling: 6/6 samples already done" in second
    assert re.search(r"training: resuming from \S+checkpoint-1 \(step 1 of 2\)", second), second
    assert "sampling: 0/" not in second and "eval before: 0/" not in second
    assert (out / "samples" / "samples.jsonl").read_bytes() == samples
    assert (out / "eval" / "before" / "samples.jsonl").read_bytes() == before
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["steps"] == 2 and len(report["training"]["losses"]) == 2
    assert (out / "model" / "config.json").is_file() and not list((out / "trainer").glob("checkpoint-*"))

    third = run()  # everything finished: nothing is sampled or trained again
    assert "training: finished in an earlier run" in third and "eval after: 2/2 samples already done" in third
    assert json.loads((out / "report.json").read_text())["training"]["steps"] == 2

    config.write_text(text.replace("max_steps: 2", "max_steps: 3"))
    changed = run()
    assert (
        changed.strip().splitlines()[-1].startswith("error: ") and "(training.max_steps differs)" in changed
    )
