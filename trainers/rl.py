"""CoRT's RL stage: TRL's GRPOTrainer with cortbench's interpreter in the loop.

`CortRollout` is the trainer's `rollout_func`. For each prompt it runs one tool-integrated
trajectory with the harness's own `run_rollout` and a stateful sandbox kernel (the code the model
writes really runs), then encodes it with `encoding.encode_trajectory`: the completion is the
model's generation plus the interpreter outputs, and `env_mask` is 0 on the outputs so that they
are kept out of the loss. All trajectories of a batch run concurrently on one event loop (one
kernel each), and the generation calls they make at the same moment go to the policy as one batch:
its own `generate` (CPU or GPU), or TRL's colocated vLLM engine on GPU (`use_vllm=True`).

TRL 1.16 hands `rollout_func` the prompts already repeated `num_generations` times, so it returns
exactly one trajectory per prompt received.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from cortbench.harness.chat import count_with_tokenizer, render_with_tokenizer
from cortbench.harness.hints import HintPolicy
from cortbench.harness.records import TrajectoryRecord
from cortbench.harness.rollout import NO_HINTS, Completion, Generator, Limits, run_rollout
from cortbench.harness.runner import build_record
from cortbench.harness.sandbox import Sandbox, SandboxConfig, make_sandbox
from cortbench.tasks.problems import Problem

from .config import ConfigError, ModelSpec, RolloutSettings, StageConfig, TrainingConfig
from .encoding import encode_trajectory
from .evaluation import (
    Sampling,
    StageReport,
    compare,
    evaluate_stage,
    resolve_sampling,
    save_model,
    write_report,
)
from .registry import register_stage
from .rewards import cort_rewards
from .sft import trainer_settings
from .state import TRAINER_DIR, StageState, finished_training, resume_checkpoint, training_done

T = TypeVar("T")

RL_TOOL_CALLS = 12  # the paper caps tool calls at 12 in training (15 at validation)
RL_CELL_TIMEOUT_S = 5.0  # and gives each cell 5 s during RL (30 s at evaluation)


@dataclass(frozen=True)
class RolloutOptions:
    """How `CortRollout` runs trajectories; defaults are the paper's RL settings.

    Attributes:
        max_tool_calls: cells executed per trajectory; the last one's output carries the limit message.
        generation: "hf" (the policy's own `generate`, CPU or GPU) or "vllm" (TRL's colocated engine;
            needs `GRPOConfig(use_vllm=True, vllm_mode="colocate")`).
        sandbox: a registered sandbox name ("local", "remote", a plug-in's).
        sandbox_args: its settings (remote: {"url": a `cortbench sandbox serve` address}).
        cell_timeout_s: wall-clock limit per cell.
        hints: a hint policy (e.g. Prompt-Hint's opening); inserted text is the environment's, so it
            is masked like interpreter output.
        concurrency: trajectories running at once (each holds a kernel).
        trajectories_path: append every trajectory record (with the step) to this jsonl file, so the
            analyzers can follow code behaviour over training; None keeps none.
    """

    max_tool_calls: int = RL_TOOL_CALLS
    generation: str = "hf"
    sandbox: str = "local"
    sandbox_args: Mapping[str, Any] = field(default_factory=dict)
    cell_timeout_s: float = RL_CELL_TIMEOUT_S
    hints: HintPolicy = NO_HINTS
    concurrency: int = 1024
    trajectories_path: str | None = None


class CortRollout:
    """The `rollout_func` of `GRPOTrainer`: `(prompts, trainer) -> dict` of per-trajectory lists.

    Returned keys: `prompt_ids`, `completion_ids`, `logprobs` (None: TRL then scores the sampled
    ids with the policy itself), `env_mask`, and for the reward functions `generation` (the exact
    text), `tool_statuses` (one status per executed cell), `num_tool_calls`, `finish_reason`.
    A prompt is the user message (a string; the chat template is applied here) or a message list.

    `generator(trainer) -> (Generator, restore)` replaces the policy's own sampling (e.g. a server
    that the trainer syncs weights to). Owns an event loop thread and a started sandbox (`sandbox`,
    else one built from `options`); `close()` stops both.
    """

    def __init__(
        self,
        options: RolloutOptions = RolloutOptions(),
        sandbox: Sandbox | None = None,
        generator: Callable[[Any], tuple[Generator, Callable[[], None]]] | None = None,
    ) -> None:
        self.options = options
        self._generator = generator or (lambda trainer: policy_generator(trainer, options.generation))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cort-rollouts", daemon=True)
        self._thread.start()
        self.sandbox = sandbox or _make_sandbox(options)
        self._slots = asyncio.Semaphore(options.concurrency)
        self._run(self.sandbox.start())
        self.calls: list[int] = []  # prompts received per call (the repetition quirk is pinned on it)

    def __call__(self, prompts: Sequence[str | list[dict[str, str]]], trainer: Any) -> dict[str, Any]:
        self.calls.append(len(prompts))
        max_completion = trainer.args.max_completion_length
        generator, restore = self._generator(trainer)
        try:
            records = self._run(self._batch(prompts, generator, max_completion))
        finally:
            restore()
        tokenizer = trainer.processing_class
        encoded = [encode_trajectory(tokenizer, r) for r in records]
        completion_ids, env_mask = [], []
        for enc in encoded:  # the budget covers every turn, outputs included: cut what ran past it
            ids, mask = enc.completion_ids[:max_completion], enc.completion_mask[:max_completion]
            if not ids:  # TRL needs a last token; an empty trajectory ends at once
                ids, mask = [tokenizer.eos_token_id], [1]
            completion_ids.append(ids)
            env_mask.append(mask)
        self._log(records, trainer)
        return {
            "prompt_ids": [enc.prompt_ids for enc in encoded],
            "completion_ids": completion_ids,
            "logprobs": None,
            "env_mask": env_mask,
            "generation": [r.generation for r in records],
            "tool_statuses": [[c.status for c in r.tool_calls] for r in records],
            "num_tool_calls": [len(r.tool_calls) for r in records],
            "finish_reason": [r.finish_reason for r in records],
        }

    async def _batch(
        self, prompts: Sequence, generator: Generator, max_completion: int
    ) -> list[TrajectoryRecord]:
        return list(
            await asyncio.gather(
                *(self._trajectory(i, p, generator, max_completion) for i, p in enumerate(prompts))
            )
        )

    async def _trajectory(
        self, index: int, prompt: str | list[dict[str, str]], generator: Generator, max_completion: int
    ) -> TrajectoryRecord:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        rendered = generator.render_chat(messages)
        limits = Limits.within_context(
            generator,
            max_tool_calls=self.options.max_tool_calls,
            max_tokens=generator.count_tokens(rendered) + max_completion,  # the prompt is not TRL's budget
            max_tokens_per_call=max_completion,
        )
        started = time.time()
        async with self._slots, self.sandbox.session() as kernel:
            rollout = await run_rollout(rendered, generator, kernel, limits, hints=self.options.hints)
        problem = Problem("rl", str(index), messages[-1]["content"])
        return build_record(problem, index, rendered, rollout, generator, started)

    def _log(self, records: list[TrajectoryRecord], trainer: Any) -> None:
        """Code behaviour per step beside TRL's own metrics, and the trajectories themselves."""
        calls = [c for r in records for c in r.tool_calls]
        metrics = getattr(trainer, "_metrics", None)
        if metrics is not None:
            mode = "train" if trainer.model.training else "eval"
            metrics[mode]["cort/tool_calls_per_completion"].append(len(calls) / max(1, len(records)))
            metrics[mode]["cort/code_usage"].append(
                sum(bool(r.tool_calls) for r in records) / max(1, len(records))
            )
            if calls:
                metrics[mode]["cort/code_success"].append(sum(c.ok for c in calls) / len(calls))
        if self.options.trajectories_path:
            step = getattr(getattr(trainer, "state", None), "global_step", None)
            path = Path(self.options.trajectories_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                for record in records:
                    out.write(json.dumps({"step": step, **record.to_dict()}, ensure_ascii=False) + "\n")

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self.sandbox.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> CortRollout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_sandbox(options: RolloutOptions) -> Sandbox:
    return make_sandbox(
        options.sandbox, SandboxConfig(timeout_s=options.cell_timeout_s), options.sandbox_args
    )


# ---------------------------------------------------------------------------------------------
# The policy as a harness Generator


def policy_generator(trainer: Any, generation: str = "hf") -> tuple[Generator, Callable[[], None]]:
    """A harness `Generator` sampling from the policy being trained, with the trainer's temperature
    and top_p, and a function that undoes what it changed (the model goes to eval mode for `hf`)."""
    args = trainer.args
    if generation == "vllm":
        engine = getattr(getattr(trainer, "vllm_generation", None), "llm", None)
        if engine is None:
            raise ValueError('generation "vllm" needs GRPOConfig(use_vllm=True, vllm_mode="colocate")')
        return VLLMPolicyGenerator(
            engine, trainer.processing_class, args.temperature, args.top_p
        ), lambda: None
    if generation != "hf":
        raise ValueError(f"unknown generation {generation!r}: 'hf' or 'vllm'")
    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training = model.training
    model.eval()
    return HFPolicyGenerator(
        model, trainer.processing_class, args.temperature, args.top_p
    ), lambda: model.train(was_training)


Call = tuple[str, int, tuple[str, ...]]  # prompt, max_tokens, stop


class BatchingGenerator:
    """A harness Generator whose concurrent `complete` calls are answered together: the calls that
    trajectories make while a batch is generating form the next batch. Subclasses implement
    `_generate(calls) -> completions` (blocking; run in a thread, one batch at a time)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._pending: list[tuple[Call, asyncio.Future[Completion]]] = []
        self._flushing = False

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_with_tokenizer(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return count_with_tokenizer(self.tokenizer, text)

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completion] = loop.create_future()
        self._pending.append(((prompt, max_tokens, stop), future))
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every trajectory that is ready queue its call
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await asyncio.to_thread(self._generate, [call for call, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting trajectory gets the error
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results):
                    future.set_result(result)
        self._flushing = False

    def _generate(self, calls: list[Call]) -> list[Completion]:
        raise NotImplementedError


class HFPolicyGenerator(BatchingGenerator):
    """The policy's own `generate`, one left-padded batch per round of concurrent calls (calls with
    the same stop strings share a batch; each row stops on its own). Prompts are tokenized without
    special tokens (the rendered template holds them), as the harness's hf backend does."""

    def __init__(self, model: Any, tokenizer: Any, temperature: float, top_p: float) -> None:
        super().__init__(tokenizer)
        self.model, self.temperature, self.top_p = model, temperature, top_p
        self.context_length = getattr(model.config, "max_position_embeddings", None)

    def _generate(self, calls: list[Call]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(calls)
        by_stop: dict[tuple[str, ...], list[int]] = {}
        for i, (_, _, stop) in enumerate(calls):
            by_stop.setdefault(stop, []).append(i)
        for stop, rows in by_stop.items():
            for i, completion in zip(rows, self._generate_rows([calls[i] for i in rows], stop)):
                results[i] = completion
        return results  # type: ignore[return-value]

    def _generate_rows(self, calls: list[Call], stop: tuple[str, ...]) -> list[Completion]:
        import torch

        from cortbench.harness.backends.hf import decode_to_stop

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompts = [tok(p, add_special_tokens=False).input_ids for p, _, _ in calls]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        attention = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device
        )
        sampling: dict[str, bool | float] = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        with torch.no_grad():
            output = self.model.generate(
                ids,
                attention_mask=attention,
                max_new_tokens=max(m for _, m, _ in calls),
                stop_strings=list(stop) or None,
                tokenizer=tok,
                pad_token_id=pad,
                **sampling,
            )
        completions = []
        for row, (_, max_tokens, _) in zip(output[:, width:].tolist(), calls):
            new = row[:max_tokens]  # a shorter budget than the batch's: its own limit
            if tok.eos_token_id in new:  # what follows the end is padding
                new = new[: new.index(tok.eos_token_id) + 1]
            while new and new[-1] == pad != tok.eos_token_id:  # a row that stopped early is padded
                new.pop()
            text, matched = decode_to_stop(tok, new, stop)
            ended = matched is not None or (bool(new) and new[-1] == tok.eos_token_id)
            finish: Literal["stop", "length"] = "stop" if ended or len(new) < max_tokens else "length"
            completions.append(Completion(text, finish, len(new), stop=matched))
        return completions


class VLLMPolicyGenerator(BatchingGenerator):
    """TRL's colocated vLLM engine (`trainer.vllm_generation.llm`, weights synced by TRL before each
    rollout) as a harness Generator: each round of concurrent calls is one `llm.generate`.
    Prompts go in as token ids without special tokens (the rendered template holds the BOS).
    Needs a GPU; not exercised by the CPU tests.
    """

    def __init__(self, llm: Any, tokenizer: Any, temperature: float, top_p: float) -> None:
        super().__init__(tokenizer)
        self.llm, self.temperature, self.top_p = llm, temperature, top_p

    def _generate(self, calls: list[Call]) -> list[Completion]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=max_tokens,
                stop=list(stop) or None,
                include_stop_str_in_output=True,
            )
            for _, max_tokens, stop in calls
        ]
        prompts = [
            {"prompt_token_ids": self.tokenizer(p, add_special_tokens=False).input_ids} for p, _, _ in calls
        ]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        completions = []
        for output in outputs:
            sample = output.outputs[0]
            matched = sample.stop_reason if isinstance(sample.stop_reason, str) else None
            finish: Literal["stop", "length"] = "length" if sample.finish_reason == "length" else "stop"
            completions.append(Completion(sample.text, finish, len(sample.token_ids), stop=matched))
        return completions


# ---------------------------------------------------------------------------------------------
# The stage: `cortbench train rl --config rl.yaml`


@dataclass
class RLSection(RolloutSettings):
    """The `rl:` section. Problems are named as `cortbench run --tasks` names them (`tasks`,
    `data_dir`, `limit`, `offset`); protocol fields left None take the tasks' values. Defaults are
    the paper's RL recipe (cort-protocol.md, "Training stages").

    Attributes:
        n: rollouts per problem (GRPO's group, `num_generations`).
        max_tool_calls, timeout_s: 12 cells of at most 5 s each in training.
        max_tokens: the response budget over all turns, interpreter outputs included
            (`max_completion_length`).
        learning_rate: the paper's 1e-6 (`training.learning_rate` is the SFT recipe's: not used here).
        prompts_per_step / prompts_per_update: problems sampled per generation round (the paper's
            batch 128) and per optimizer update (mini-batch 64): two updates per round.
        epochs: passes over the problems.
        beta / entropy_coef: KL loss (k3, "low-var") and entropy bonus coefficients.
        correctness_weight / code_weight: R = correctness_weight * Ra + code_weight * Rc.
        penalize_no_code: Rc = -1 also without any code (CoRT's public code; not the paper's formula).
        generation: "hf" (the policy's `generate`) or "vllm" (TRL's colocated vLLM; GPU).
        grading_workers: math-verify processes for the correctness reward.
        save_trajectories: append every rollout to OUTPUT/rollouts.jsonl (records, with the step).
    """

    n: int | None = 8
    max_tool_calls: int | None = RL_TOOL_CALLS
    max_tokens: int | None = 16000
    timeout_s: float | None = RL_CELL_TIMEOUT_S
    concurrency: int = 1024
    learning_rate: float = 1e-6
    prompts_per_step: int = 128
    prompts_per_update: int = 64
    epochs: float = 1.0
    beta: float = 0.001
    entropy_coef: float = 0.001
    correctness_weight: float = 1.0
    code_weight: float = 0.1
    penalize_no_code: bool = False
    generation: str = "hf"
    grading_workers: int = 1
    save_trajectories: bool = True


ROLLOUTS_FILE = "rollouts.jsonl"
REFERENCE_DIR = "reference-model"  # a GGUF start, saved for TRL to load the KL reference from


@register_stage("rl", section=RLSection, help="GRPO with the interpreter in the loop (CoRT's RL stage).")
def run_rl(config: StageConfig) -> StageReport:
    """Evaluate, train with GRPO, save, evaluate again, and write the report."""
    section: RLSection = config.section
    _check_training(config)
    sampling = resolve_sampling(section, config.sandbox)
    dataset = rl_dataset(sampling)
    state = StageState.open(config)
    model, tokenizer = config.model.load()
    before = evaluate_stage(config, model, tokenizer, "before", config.model.name)
    trained: str | None
    if finished := finished_training(config, state):
        trained, summary = finished
        model, tokenizer = ModelSpec(trained, dtype=config.model.dtype).load()
    else:
        model, trained, summary = _train(config, sampling, model, tokenizer, dataset, state)
    after = evaluate_stage(
        config, model, tokenizer, "after", trained or f"{config.model.name} (rl)", resume=finished is not None
    )
    report = StageReport(
        stage="rl",
        model=config.model.name,
        output_dir=str(config.output_dir),
        trained_model=trained,
        config=config.to_dict(),
        data={
            "problems": len(sampling.problems),
            "tasks": [s.name for s in sampling.specs],
            "rollouts_per_problem": sampling.settings.n,
        },  # fmt: skip
        training=summary,
        evaluation=compare(before, after, seed=config.seed) if after else None,
    )
    write_report(report)
    return report


def _train(config: StageConfig, sampling: Sampling, model: Any, tokenizer: Any, dataset: Any,
           state: StageState) -> tuple[Any, str | None, dict[str, Any]]:  # fmt: skip
    """GRPO from the start or from the newest checkpoint; (trained model, OUTPUT/model, summary)."""
    section: RLSection = config.section
    if section.beta and config.model.gguf_file:
        _reference_checkpoint(config, model, tokenizer)
    reward_funcs, weights = cort_rewards(
        section.correctness_weight,
        section.code_weight,
        penalize_no_code=section.penalize_no_code,
        grading_workers=section.grading_workers,
    )
    options = RolloutOptions(
        max_tool_calls=sampling.max_tool_calls,
        generation=section.generation,
        sandbox=config.sandbox.name,
        sandbox_args=config.sandbox.args,
        cell_timeout_s=sampling.timeout_s,
        hints=sampling.hints,
        concurrency=section.concurrency,
        trajectories_path=str(config.output_dir / ROLLOUTS_FILE) if section.save_trajectories else None,
    )
    checkpoint = resume_checkpoint(config)
    if options.trajectories_path:  # what an interrupted run logged past its checkpoint is sampled again
        _drop_rollouts_after(
            Path(options.trajectories_path), _checkpoint_step(checkpoint) if checkpoint else 0
        )
    try:
        with CortRollout(options) as rollout:
            trainer = grpo_trainer(
                config, sampling, model, tokenizer, dataset, reward_funcs, weights, rollout
            )
            started = time.perf_counter()
            result = trainer.train(resume_from_checkpoint=checkpoint)
            train_s = time.perf_counter() - started
    finally:
        reward_funcs[0].close()
        shutil.rmtree(config.output_dir / REFERENCE_DIR, ignore_errors=True)  # only the trainer needed it
    model = trainer.model
    trained = save_model(config, model, tokenizer)
    summary = training_summary(trainer.state.log_history, result, train_s)
    training_done(config, state, trained, summary)
    return model, trained, summary


def _checkpoint_step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def _drop_rollouts_after(path: Path, step: int) -> None:
    """Rollouts logged at or after `step` are sampled again when training resumes from there."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and _logged_step(line) < step]  # fmt: skip
    path.write_text("".join(kept), encoding="utf-8")


def _logged_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step") or 0)
    except ValueError:  # a torn last line
        return 1 << 62


def rl_dataset(sampling: Sampling) -> Any:
    """One row per problem: `prompt` (the user message: problem + the task's instruction), `gold`,
    `scorer` (its task's) and `meta_json` (the problem's metadata; the chemistry set's scorer needs it)."""
    from datasets import Dataset

    rows = [
        {
            "prompt": p.problem + sampling.samples[p.task][1],
            "gold": p.gold,
            "scorer": p.scorer,
            "meta_json": json.dumps(p.meta),
            "task": p.task,
            "problem_id": p.problem_id,
        }
        for p in sampling.problems
    ]
    return Dataset.from_list(rows)


def verl_rows(sampling: Sampling, data_source: str = "cortbench") -> list[dict[str, Any]]:
    """The same problems as verl's RL parquet rows (`prompt` as chat messages, the gold under
    `reward_model.ground_truth`, what the reward needs in `extra_info`):
    `pandas.DataFrame(verl_rows(resolve_sampling(section))).to_parquet("train.parquet")`."""
    return [
        {
            "data_source": data_source,
            "prompt": [{"role": "user", "content": p.problem + sampling.samples[p.task][1]}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": p.gold},
            "extra_info": {
                "index": i,
                "task": p.task,
                "problem_id": p.problem_id,
                "scorer": p.scorer,
                "meta_json": json.dumps(p.meta),
            },
        }
        for i, p in enumerate(sampling.problems)
    ]


def grpo_trainer(config: StageConfig, sampling: Sampling, model: Any, tokenizer: Any, dataset: Any,
                 reward_funcs: list, weights: list[float], rollout: CortRollout) -> Any:  # fmt: skip
    """GRPOTrainer with the paper's batch structure: `prompts_per_step` problems x `n` rollouts per
    generation round, one optimizer update per `prompts_per_update` problems."""
    from trl import GRPOConfig, GRPOTrainer

    section: RLSection = config.section
    training = config.training
    group = sampling.settings.n or 8
    processes = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    per_update = section.prompts_per_update * group  # completions per optimizer update
    per_pass = training.per_device_batch_size * processes
    if per_update % per_pass or section.prompts_per_step % section.prompts_per_update:
        raise ConfigError(
            f"rl: prompts_per_update x n ({per_update}) must be a multiple of per_device_batch_size x processes "
            f"({per_pass}), and prompts_per_step ({section.prompts_per_step}) a multiple of prompts_per_update"
        )
    args = dict(
        output_dir=str(config.output_dir / TRAINER_DIR),
        seed=config.seed,
        learning_rate=section.learning_rate,
        num_train_epochs=section.epochs,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.per_device_batch_size,
        gradient_accumulation_steps=per_update // per_pass,
        generation_batch_size=section.prompts_per_step * group,
        num_generations=group,
        max_completion_length=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        beta=section.beta,
        entropy_coef=section.entropy_coef,
        reward_weights=weights,
        use_vllm=section.generation == "vllm",
        vllm_mode="colocate",
        **trainer_settings(training),
    )
    peft_config = None
    if training.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(**({"task_type": "CAUSAL_LM"} | training.lora))
    return GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        args=GRPOConfig(**(args | training.trl_args)),
        train_dataset=dataset,
        rollout_func=rollout,
        peft_config=peft_config,
    )


def training_summary(log_history: list[dict[str, Any]], result: Any, train_s: float) -> dict[str, Any]:
    """Steps, time, throughput, and how reward and code behaviour moved (first vs last step)."""
    steps = [h for h in log_history if "reward" in h]
    tokens = int(max((h.get("num_tokens", 0) for h in steps), default=0))
    keys = ("reward", "rewards/correctness/mean", "rewards/code_execution/mean", "cort/code_usage",
            "cort/code_success", "cort/tool_calls_per_completion", "completions/mean_length", "kl", "loss")  # fmt: skip
    summary: dict[str, Any] = {
        "steps": result.global_step,
        "train_s": round(train_s, 2),
        "tokens": tokens,  # prompt + model-written tokens seen (TRL's num_tokens)
        "tokens_per_s": round(tokens / train_s, 1) if train_s else None,
        "train_loss": round(result.training_loss, 6),
    }
    if steps:
        summary |= {f"{k} (first -> last)": [_round(steps[0].get(k)), _round(steps[-1].get(k))] for k in keys}
    return summary


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _reference_checkpoint(config: StageConfig, model: Any, tokenizer: Any) -> None:
    """GRPOTrainer loads its KL reference model again from `model.config._name_or_path`, which for a
    GGUF file is a folder without a config: save the dequantized weights once and point there."""
    path = config.output_dir / REFERENCE_DIR
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    model.config._name_or_path = str(path)


def _check_training(config: StageConfig) -> None:
    """The `training` section's learning rate, epochs and batch are the SFT recipe's; RL has its
    own in `rl:`. A value changed there would be silently ignored: refuse it instead."""
    defaults = TrainingConfig()
    for name, instead in (("learning_rate", "learning_rate"), ("num_train_epochs", "epochs"),
                          ("batch_size", "prompts_per_step / prompts_per_update")):  # fmt: skip
        if getattr(config.training, name) != getattr(defaults, name):
            raise ConfigError(f"training.{name} is not used by the rl stage: set rl.{instead} instead")
