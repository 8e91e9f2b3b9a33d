"""RL training throughput: GRPO steps whose rollouts run real code in cortbench's sandbox, on CPU.

    python bench/train_rl.py            # 8 steps after a warm-up step, about two minutes
    python bench/train_rl.py --quick    # 3 steps, under a minute
    python bench/train_rl.py --model DIR [--gguf-file NAME.gguf]   # another model (e.g. SmolLM2)

Model: by default a tiny Llama (2 layers, hidden 64, byte-level BPE) built here and warm-started by
a short SFT on chats in CoRT's fenced format, so that it writes a python block, reads the output and
answers in \\boxed{} (a random model never writes code). Workload: addition problems with the CoRT
instruction; each step samples `--prompts` problems x `--generations` rollouts (temperature 1.0,
at most `--max-completion` tokens over all turns, 12 tool calls), grades them (math-verify pool),
and takes one optimizer step (TRL GRPOTrainer, `rollout_func` = cortbench.trainers.rl.CortRollout,
hf generation batched across concurrent trajectories, or `--serial`: one call at a time, LocalSandbox
kernels). One thread for torch (shared 2-core machines).

Figures, over the steps after the first (sandbox, grader and allocator warm-up):
  tokens_per_s        every token of a step's sequences (prompt + the whole completion, interpreter
                      outputs included) / step wall time
  model_tokens_per_s  the model-written (trained) tokens only / step wall time
  step_s              median wall time of one step (rollouts + rewards + forward/backward + update)
  rollout_share       fraction of step time spent in rollout_func (generation and tool calls)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from _machine import cpu_model  # bench/_machine.py (the script's own folder is on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

INSTRUCTION = (
    "\nPlease integrate natural language reasoning with python programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)


def addition(a: int, b: int) -> tuple[str, str]:
    problem = f"What is {a} + {b}?"
    completion = f"Let me compute.\n```python\nprint({a} + {b})\n```\n```output\n{a + b}\n```\nSo the answer is \\boxed{{{a + b}}}."
    return problem, completion


def build_code_writer(path: Path, steps: int = 300) -> None:
    """A tiny Llama that writes CoRT-format code (short SFT warm start, interpreter output masked)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from cortbench.harness.records import ToolCall, TrajectoryRecord
    from cortbench.trainers.encoding import IGNORE_INDEX, encode_trajectory

    rng = random.Random(0)
    torch.manual_seed(0)
    chats = [addition(rng.randint(1, 99), rng.randint(1, 99)) for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [p + INSTRUCTION + c for p, c in chats],
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>", "<pad>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )  # fmt: skip
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}<assistant>"
    )
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    rows = []
    for problem, completion in chats:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem + INSTRUCTION}], tokenize=False, add_generation_prompt=True
        )
        answer = completion.split("```output\n")[1].split("\n")[0]
        record = TrajectoryRecord("bench", problem, 0, prompt, completion, "stop",
                                  tool_calls=[ToolCall("", answer, "ok", 0.0)])  # fmt: skip
        rows.append(encode_trajectory(tokenizer, record).row())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = rng.sample(rows, 8)
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.tensor(
            [r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])) for r in batch]
        )
        labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in batch])
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def serial_generator(trainer):
    """The harness's hf backend on the policy: one `generate` call at a time (for comparison)."""
    from cortbench.harness.backends.hf import HFGenerator

    model = trainer.model
    generator = HFGenerator(model, trainer.processing_class, temperature=trainer.args.temperature,
                            top_p=trainer.args.top_p, device=str(model.device))  # fmt: skip
    return generator, lambda: model.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 steps instead of 8 (plus the warm-up step)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=4, help="problems per step")
    parser.add_argument("--generations", type=int, default=4, help="rollouts per problem (GRPO group)")
    parser.add_argument("--max-completion", type=int, default=128, help="token budget over all turns")
    parser.add_argument("--model", default=None, help="a model folder (default: build the tiny code writer)")
    parser.add_argument("--gguf-file", default=None)
    parser.add_argument(
        "--serial",
        action="store_true",
        help="generate one call at a time (the harness's hf backend), not batched",
    )
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 8)

    import torch

    torch.set_num_threads(1)
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from cortbench.trainers.config import ModelSpec
    from cortbench.trainers.rewards import cort_rewards
    from cortbench.trainers.rl import CortRollout, RolloutOptions

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model_dir = args.model
        if model_dir is None:
            model_dir = str(Path(tmp) / "model")
            build_code_writer(Path(model_dir))
        model, tokenizer = ModelSpec(model_dir, gguf_file=args.gguf_file).load()
        setup_s = time.perf_counter() - started
        rng = random.Random(1)
        rows = [(rng.randint(1, 99), rng.randint(1, 99)) for _ in range(args.prompts * (steps + 1))]
        dataset = Dataset.from_list(
            [{"prompt": addition(a, b)[0] + INSTRUCTION, "gold": str(a + b)} for a, b in rows]
        )
        funcs, weights = cort_rewards()
        config = GRPOConfig(
            output_dir=str(Path(tmp) / "out"), per_device_train_batch_size=args.prompts * args.generations,
            num_generations=args.generations, max_completion_length=args.max_completion, max_steps=steps + 1,
            learning_rate=1e-5, temperature=1.0, top_p=1.0, beta=0.001, entropy_coef=0.001, reward_weights=weights,
            use_cpu=True, bf16=False, save_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True,
            shuffle_dataset=False, seed=0,
        )  # fmt: skip
        per_step: list[dict] = []
        try:
            with CortRollout(
                RolloutOptions(), generator=serial_generator if args.serial else None
            ) as rollout:

                def rollout_func(prompts, trainer):
                    begun = time.perf_counter()
                    out = rollout(prompts, trainer)
                    per_step.append({
                        "rollout_s": time.perf_counter() - begun,
                        "tokens": sum(len(p) + len(c) for p, c in zip(out["prompt_ids"], out["completion_ids"])),
                        "model_tokens": sum(sum(m) for m in out["env_mask"]),
                        "tool_calls": sum(out["num_tool_calls"]),
                        "trajectories": len(prompts),
                    })  # fmt: skip
                    return out

                trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=funcs, args=config,
                                      train_dataset=dataset, rollout_func=rollout_func)  # fmt: skip
                trainer.train()
        finally:
            funcs[0].close()
    logged = [h for h in trainer.state.log_history if "step_time" in h]
    for row, log in zip(per_step, logged):
        row["step_s"] = log["step_time"]
        row["reward"] = log.get("reward")
    measured = per_step[1:]  # the first step warms the sandbox, the grader and torch up
    wall = sum(r["step_s"] for r in measured)
    result = {
        "bench": "train_rl",
        "tokens_per_s": round(sum(r["tokens"] for r in measured) / wall, 1),
        "step_s": round(statistics.median(r["step_s"] for r in measured), 3),
        "model_tokens_per_s": round(sum(r["model_tokens"] for r in measured) / wall, 1),
        "rollout_share": round(sum(r["rollout_s"] for r in measured) / wall, 3),
        "steps": len(measured),
        "trajectories_per_step": args.prompts * args.generations,
        "tool_calls_per_step": round(statistics.mean(r["tool_calls"] for r in measured), 2),
        "tokens_per_step": round(statistics.mean(r["tokens"] for r in measured), 1),
        "reward_first_last": [per_step[0]["reward"], per_step[-1]["reward"]],
        "generation": "serial" if args.serial else "batched",
        "model": args.model or "tiny-llama (2 layers, hidden 64, built here)",
        "max_completion_length": args.max_completion,
        "setup_s": round(setup_s, 1),
        "torch_threads": 1,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other jobs on the machine at the end
        "python": platform.python_version(),
    }
    for row in per_step:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
