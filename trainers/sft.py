"""Supervised fine-tuning on trajectories with TRL's SFTTrainer (stage `sft`).

Rows are pre-tokenized by `encoding.encode_trajectory`: the loss covers what the model wrote
(reasoning, code, its answer, and the hints when Hint-Engineering data teaches the model to write
them) and never the prompt or the interpreter's output blocks. SFTTrainer keeps given `labels` as
they are, so the mask reaches the loss unchanged (tests/test_trainers_sft.py checks the collated
batch). Hyperparameters default to the paper's recipe (`TrainingConfig`); the global batch is kept
whatever the number of processes, so the same YAML runs on one CPU or under accelerate/DeepSpeed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..harness.records import TrajectoryRecord
from ..harness.store import SAMPLES
from .config import ConfigError, ModelSpec, StageConfig, TrainingConfig
from .encoding import IGNORE_INDEX, encode_trajectory
from .evaluation import StageReport, evaluate_stage, save_model, write_report
from .registry import register_stage
from .state import TRAINER_DIR, StageState, finished_training, resume_checkpoint, training_done


@dataclass
class SFTSection:
    """The `sft:` section.

    Attributes:
        records: trajectory files: records JSONL (as `cortbench train synthesize` writes) or run
            folders (their samples.jsonl).
        train_on_hints: train on inserted hint text too (Hint-Engineering data: the model learns to
            write the hints itself). Interpreter outputs are never trained.
        finish_reasons: keep only trajectories that ended this way (empty: keep all).
    """

    records: list[str]
    train_on_hints: bool = True
    finish_reasons: list[str] | None = None


def read_records(paths: Sequence[str | Path]) -> list[TrajectoryRecord]:
    """Trajectory records from JSONL files or run folders, in order; a missing path is a ConfigError."""
    records = []
    for given in paths:
        path = Path(given)
        file = path / SAMPLES if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"no trajectory records at {given} (a records .jsonl or a run folder)")
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(TrajectoryRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"{file}:{number}: not a trajectory record ({exc})") from None
    return records


def write_records(path: str | Path, records: list[TrajectoryRecord]) -> Path:
    """Records as JSONL (the format `read_records` and the `sft` stage take)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


def sft_rows(tokenizer: Any, records: list[TrajectoryRecord], *, train_on_hints: bool = True,
             max_length: int | None = None) -> list[dict[str, list[int]]]:  # fmt: skip
    """Pre-tokenized {"input_ids", "labels"} rows; rows with nothing to train are dropped."""
    rows = []
    for record in records:
        row = encode_trajectory(tokenizer, record, train_on_hints=train_on_hints).row()
        if max_length is not None:
            row = {k: v[:max_length] for k, v in row.items()}
        if any(label != IGNORE_INDEX for label in row["labels"]):
            rows.append(row)
    return rows


def sft_config(training: TrainingConfig, output_dir: str | Path, *, seed: int = 0, **overrides: Any) -> Any:
    """TRL's SFTConfig from our TrainingConfig: CPU-safe settings where no GPU is present (float32,
    no activation checkpointing), checkpoints to resume from, nothing reported."""
    from trl import SFTConfig

    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=training.learning_rate,
        num_train_epochs=training.num_train_epochs,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.per_device_batch_size,
        gradient_accumulation_steps=accumulation_steps(training),
        max_length=training.max_length,
        seed=seed,
        **trainer_settings(training),
    )
    return SFTConfig(**(args | training.trl_args | overrides))


def trainer_settings(training: TrainingConfig) -> dict[str, Any]:
    """The TrainingArguments every stage shares: schedule, clipping, logging, precision (float32 and
    `use_cpu` without a GPU), activation checkpointing, resumable checkpoints every
    `training.save_steps` (the newest kept), nothing reported."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "lr_scheduler_type": training.lr_scheduler_type,
        "warmup_steps": training.warmup_steps,
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "logging_steps": training.logging_steps,
        "bf16": cuda if training.bf16 is None else training.bf16,
        "use_cpu": not cuda,
        _checkpointing_key(): training.gradient_checkpointing,
        "save_strategy": "steps" if training.save_steps else "no",
        "save_steps": training.save_steps or 500,
        "save_total_limit": 1,
        "report_to": "none",
        "disable_tqdm": True,
    }


def accumulation_steps(training: TrainingConfig, world_size: int | None = None) -> int:
    """Gradient accumulation that makes `batch_size` the global batch across `world_size` processes
    (default: $WORLD_SIZE, which accelerate and torchrun set)."""
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    return max(1, training.batch_size // (training.per_device_batch_size * world))


def _checkpointing_key() -> str:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing."""
    import dataclasses

    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def sft_trainer(model: Any, tokenizer: Any, rows: list[dict[str, list[int]]], training: TrainingConfig,
                output_dir: str | Path, *, seed: int = 0, **overrides: Any) -> Any:  # fmt: skip
    """An SFTTrainer on pre-tokenized rows (LoRA through peft when `training.lora` is set)."""
    from datasets import Dataset
    from trl import SFTTrainer

    if not rows:
        raise ConfigError("no training rows: every trajectory was filtered out or had nothing to train")
    peft_config = None
    if training.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**({"task_type": "CAUSAL_LM"} | training.lora))
    return SFTTrainer(
        model=model,
        args=sft_config(training, output_dir, seed=seed, **overrides),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


@dataclass
class TrainResult:
    """What a training run did: optimizer steps, the logged losses, and throughput over the tokens
    of every processed sequence (prompt and outputs included: what the GPU/CPU actually ran)."""

    model: Any
    trainer: Any
    steps: int
    losses: list[float]
    seconds: float
    tokens: int
    trained_tokens: int

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "losses": self.losses,
            "seconds": round(self.seconds, 3),
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else None,
        }


def train(model: Any, tokenizer: Any, rows: list[dict[str, list[int]]], training: TrainingConfig,
          output_dir: str | Path, *, seed: int = 0, resume_from: str | None = None) -> TrainResult:  # fmt: skip
    """SFT on `rows` (continuing from the checkpoint `resume_from`); returns the trained model
    (peft-wrapped with LoRA) and the loss curve. Time and tokens count this run's steps only."""
    trainer = sft_trainer(model, tokenizer, rows, training, output_dir, seed=seed)
    counts: dict[str, int] = {"tokens": 0, "trained": 0}
    collate = trainer.data_collator

    def counting(examples: list[dict[str, Any]]) -> dict[str, Any]:  # count what really ran
        batch = collate(examples)
        counts["tokens"] += (
            int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        )
        counts["trained"] += int((batch["labels"] != IGNORE_INDEX).sum())
        return batch

    trainer.data_collator = counting
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return TrainResult(
        trainer.model,
        trainer,
        trainer.state.global_step,
        losses,
        seconds,
        counts["tokens"],
        counts["trained"],
    )


def supervised_stage(config: StageConfig, records: list[TrajectoryRecord], *, train_on_hints: bool,
                     data: dict[str, Any], sections: dict[str, str] | None = None, model_and_tokenizer=None,
                     before=None, state: StageState | None = None) -> StageReport:  # fmt: skip
    """What sft, rft and synthesize share: evaluate the starting model, fine-tune on `records`,
    save the model, evaluate it, write report.json and report.md. `before` is an evaluation
    already made (synthesize and rft evaluate before they sample). A training that finished in an
    earlier run of the command is not repeated (its model is loaded); an interrupted one continues
    from its newest checkpoint."""
    import torch

    torch.manual_seed(config.seed)
    state = state or StageState.open(config)
    model, tokenizer = model_and_tokenizer or config.model.load()
    if before is None:
        before = evaluate_stage(config, model, tokenizer, "before", config.model.name)
    rows = sft_rows(tokenizer, records, train_on_hints=train_on_hints, max_length=config.training.max_length)
    trained_model: str | None
    if finished := finished_training(config, state):
        trained_model, summary = finished
        model, tokenizer = ModelSpec(trained_model, dtype=config.model.dtype).load()
    else:
        result = train(model, tokenizer, rows, config.training, config.output_dir / TRAINER_DIR, seed=config.seed,
                       resume_from=resume_checkpoint(config))  # fmt: skip
        model, summary = result.model, result.summary()
        trained_model = save_model(config, model, tokenizer, result.trainer)
        training_done(config, state, trained_model, summary)
    after = evaluate_stage(
        config, model, tokenizer, "after", trained_model or f"{config.model.name}+{config.stage}",
        resume=finished is not None,
    )  # fmt: skip
    from .evaluation import compare

    report = StageReport(
        stage=config.stage,
        model=config.model.name,
        output_dir=str(config.output_dir),
        trained_model=trained_model,
        config=config.to_dict(),
        data={"trajectories": len(records), "rows": len(rows), **data},
        training=summary,
        evaluation=compare(before, after, seed=config.seed) if after is not None else None,
        sections=sections or {},
    )
    write_report(report)
    return report


@register_stage("sft", section=SFTSection, help="Fine-tune on trajectories (outputs masked out of the loss).")
def sft(config: StageConfig) -> StageReport:
    """Fine-tune on trajectory records (outputs masked out of the loss), then evaluate before/after."""
    section: SFTSection = config.section
    state = StageState.open(config)
    records = read_records(section.records)
    if section.finish_reasons:
        records = [r for r in records if r.finish_reason in section.finish_reasons]
    return supervised_stage(
        config, records, train_on_hints=section.train_on_hints, data={"sources": section.records}, state=state
    )
