"""The RL stage: GRPO whose rollouts run real code in the sandbox, with interpreter output masked."""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from types import SimpleNamespace

import pytest

from cortbench.harness.chat import count_with_tokenizer, render_with_tokenizer
from cortbench.harness.rollout import Completion
from cortbench.trainers.rewards import (
    CodeExecutionReward,
    CorrectnessReward,
    all_code_failed,
    code_execution_reward,
    cort_rewards,
)
from cortbench.trainers.rl import CortRollout, RolloutOptions

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

INSTRUCTION = (
    "\nPlease integrate natural language reasoning with python programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)

# --- rewards ------------------------------------------------------------------------------------


def test_code_execution_reward_penalizes_only_all_failed_code():
    statuses = [
        ["ok"],  # correct code
        ["error", "ok"],  # one failure, then a success
        ["error", "timeout"],  # every cell failed
        [],  # no code at all
        ["output_truncated"],  # ran; its output was only cut for the model
        ["kernel_restarted"],  # ran to its end; the kernel was replaced after it (ToolCall.ok)
        ["killed"],  # the kernel died in the cell
    ]
    assert code_execution_reward([""] * 7, statuses) == [0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0]
    assert code_execution_reward([""] * 7, statuses, penalize_no_code=True) == [
        0.0,
        0.0,
        -1.0,
        -1.0,
        0.0,
        0.0,
        -1.0,
    ]
    assert CodeExecutionReward(penalize_no_code=True)([""], [[]]) == [-1.0]
    assert not all_code_failed([]) and all_code_failed(["memory"])


def test_correctness_reward_grades_like_evaluation():
    reward = CorrectnessReward(workers=1, timeout_s=10)
    try:
        scores = reward(
            completions=["", "", "", "", ""],
            gold=["1024", "1024", "\\frac{1}{2}", "1024", "3"],
            generation=[
                "```python\nprint(2**10)\n```\n```output\n1024\n```\nSo \\boxed{1024}.",  # correct
                "So \\boxed{1000}.",  # incorrect
                "It is \\boxed{0.5}.",  # equivalent form
                "no answer at all",
                "\\boxed{3}",  # a chemistry row: graded by its own grader (integer)
            ],
            meta_json=[None, None, None, None, json.dumps({"grader": "chem", "answer_type": "integer"})],
        )
        # without `generation`, the decoded completions are graded (plain text or chat messages)
        fallback = reward(
            completions=["\\boxed{7}", [{"role": "assistant", "content": "\\boxed{8}"}]], gold=["7", "7"]
        )
    finally:
        reward.close()
    assert scores == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert fallback == [1.0, 0.0]


def test_cort_rewards_default_to_the_papers_weights():
    funcs, weights = cort_rewards()
    try:
        assert weights == [1.0, 0.1]
        assert [f.__name__ for f in funcs] == ["correctness", "code_execution"]
        generation = ["```python\n1/0\n```\n```output\nZeroDivisionError\n```\n\\boxed{2}", "\\boxed{2}"]
        kwargs = dict(
            completions=generation, gold=["2", "3"], generation=generation, tool_statuses=[["error"], []]
        )
        total = [sum(w * r for w, r in zip(weights, rs)) for rs in zip(*(f(**kwargs) for f in funcs))]
    finally:
        funcs[0].close()
    assert total == pytest.approx([0.9, 0.0])  # correct but all code failed; wrong without code


def test_verl_compute_score_is_the_same_reward():
    from cortbench.trainers.rewards import verl_compute_score

    solved = "```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo \\boxed{42}."
    assert verl_compute_score("cortbench", solved, "42") == 1.0
    assert verl_compute_score("cortbench", solved, "42", {"tool_statuses": ["error"]}) == pytest.approx(0.9)
    assert verl_compute_score("cortbench", "\\boxed{41}", "42", {"tool_statuses": []}) == 0.0
    chem = {"meta_json": json.dumps({"grader": "chem", "answer_type": "integer"})}
    assert verl_compute_score("cortbench", "\\boxed{3}", "3", chem) == 1.0


def test_verl_rows_carry_the_same_problems(tmp_path):
    from cortbench.trainers.config import RolloutSettings
    from cortbench.trainers.evaluation import resolve_sampling
    from cortbench.trainers.rl import verl_rows

    (tmp_path / "toy.jsonl").write_text(json.dumps({"problem": "What is 6 * 7?", "gt_answer": "42"}) + "\n")
    rows = verl_rows(resolve_sampling(RolloutSettings(tasks=[str(tmp_path / "toy.jsonl")])))
    assert rows[0]["prompt"] == [{"role": "user", "content": "What is 6 * 7?" + INSTRUCTION}]
    assert rows[0]["reward_model"] == {"style": "rule", "ground_truth": "42"}


# --- the rollout function, with a scripted policy --------------------------------------------


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory):
    """A byte-level BPE that spells any text (tracebacks included), with a chat template."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        ["```python\nprint(1)\n```\n```output\n1\n```\nSo the answer is \\boxed{1}."] * 10,
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>", "<pad>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )  # fmt: skip
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}<assistant>"
    )
    return fast


class ScriptedPolicy:
    """A Generator that writes `turns[i]` after the i-th interpreter output, and counts how many of
    its calls are in flight at once (trajectories of a batch must not wait for each other)."""

    def __init__(self, tokenizer, turns: list[str], delay_s: float = 0.0) -> None:
        self.tokenizer, self.turns, self.delay_s = tokenizer, turns, delay_s
        self.in_flight = self.peak = 0

    def render_chat(self, messages):
        return render_with_tokenizer(self.tokenizer, messages)

    def count_tokens(self, text):
        return count_with_tokenizer(self.tokenizer, text)

    async def complete(self, prompt, *, max_tokens, stop):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.delay_s)
        self.in_flight -= 1
        text = self.turns[min(prompt.count("```output"), len(self.turns) - 1)]
        ids = self.tokenizer(text, add_special_tokens=False).input_ids[:max_tokens]
        text = self.tokenizer.decode(ids)
        fence = "```\n" if stop and text.endswith("```\n") else None
        return Completion(text, "stop" if fence or len(ids) < max_tokens else "length", len(ids), stop=fence)


def fake_trainer(tokenizer, max_completion_length: int = 512):
    return SimpleNamespace(
        args=SimpleNamespace(max_completion_length=max_completion_length),
        processing_class=tokenizer,
        model=SimpleNamespace(training=True),
        _metrics=defaultdict(lambda: defaultdict(list)),
        state=SimpleNamespace(global_step=3),
    )


def scripted_rollout(policy, **options) -> CortRollout:
    return CortRollout(RolloutOptions(**options), generator=lambda trainer: (policy, lambda: None))


def test_rollout_runs_code_and_masks_its_output(byte_tokenizer, tmp_path):
    turns = ["Divide.\n```python\nx = 1\nprint(x / 0)\n```\n", "Still \\boxed{2}."]
    policy = ScriptedPolicy(byte_tokenizer, turns)
    trainer = fake_trainer(byte_tokenizer)
    with scripted_rollout(policy, trajectories_path=str(tmp_path / "rollouts.jsonl")) as rollout:
        out = rollout(["What is 1 + 1?" + INSTRUCTION], trainer)
    assert out["tool_statuses"] == [["error"]] and out["num_tool_calls"] == [1]
    assert out["logprobs"] is None and out["finish_reason"] == ["stop"]
    generation = out["generation"][0]
    assert "ZeroDivisionError" in generation
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    assert len(ids) == len(mask)
    # the interpreter's block, and only it, is masked; the model's text (and its eos) is trained
    output_block = generation[generation.index("```output") : generation.index("Still")]
    assert byte_tokenizer.decode([t for t, m in zip(ids, mask) if m == 0]) == output_block
    trained = byte_tokenizer.decode([t for t, m in zip(ids, mask) if m == 1])
    assert trained == generation.replace(output_block, "") + "<eos>"
    # the ids the policy scores are exactly prompt + generation
    prompt = byte_tokenizer.decode(out["prompt_ids"][0])
    assert prompt == render_with_tokenizer(
        byte_tokenizer, [{"role": "user", "content": "What is 1 + 1?" + INSTRUCTION}]
    )
    assert byte_tokenizer.decode(out["prompt_ids"][0] + ids) == prompt + generation + "<eos>"
    # code behaviour is logged beside TRL's metrics, and every trajectory is kept
    assert trainer._metrics["train"]["cort/code_success"] == [0.0]
    saved = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert saved[0]["step"] == 3 and saved[0]["tool_calls"][0]["status"] == "error"
    # the rewards read the rollout's extra keys: correct answer, but every cell failed
    funcs, weights = cort_rewards()
    try:
        kwargs = {
            k: v for k, v in out.items() if k not in ("prompt_ids", "completion_ids", "logprobs", "env_mask")
        }
        rewards = [f(completions=[""], gold=["2"], **kwargs) for f in funcs]
    finally:
        funcs[0].close()
    assert rewards == [[1.0], [-1.0]]


def test_rollout_returns_one_trajectory_per_prompt_and_runs_them_concurrently(byte_tokenizer):
    policy = ScriptedPolicy(byte_tokenizer, ["```python\nprint(6 * 7)\n```\n", "\\boxed{42}"], delay_s=0.05)
    prompts = ["What is 6 * 7?", "What is 6 * 7?", "What is 2 + 2?", "What is 2 + 2?"]  # TRL repeats them
    with scripted_rollout(policy) as rollout:
        out = rollout(prompts, fake_trainer(byte_tokenizer))
    assert all(
        len(out[key]) == len(prompts) for key in ("prompt_ids", "completion_ids", "env_mask", "tool_statuses")
    )
    assert policy.peak == len(prompts)  # every trajectory was generating at the same time
    assert all("```output\n42\n```" in g for g in out["generation"])


def test_completion_stays_within_the_budget_over_all_turns(byte_tokenizer):
    turns = ["```python\nprint('x' * 5000)\n```\n", "\\boxed{1}"]  # a long interpreter output
    with scripted_rollout(ScriptedPolicy(byte_tokenizer, turns)) as rollout:
        out = rollout(["Print."], fake_trainer(byte_tokenizer, max_completion_length=60))
    assert out["tool_statuses"] == [["output_truncated"]]  # the cell ran and is recorded
    # its output block does not fit in the 60 tokens: it is not shown, and the completion ends there
    # (no EOS: TRL sees a truncated completion), never past the budget
    assert len(out["completion_ids"][0]) == len(out["env_mask"][0]) <= 60
    assert out["generation"][0] == turns[0] and all(out["env_mask"][0])
    assert byte_tokenizer.eos_token_id not in out["completion_ids"][0]


def test_tool_limit_in_training_is_twelve(byte_tokenizer):
    policy = ScriptedPolicy(byte_tokenizer, ["```python\nprint(1)\n```\n"] * 30)
    with scripted_rollout(policy) as rollout:
        out = rollout(["Loop."], fake_trainer(byte_tokenizer, max_completion_length=4000))
    assert out["num_tool_calls"] == [12]
    assert "You have exceeded the allowed number of code executions" in out["generation"][0]


# --- GRPO on a tiny model that writes code ------------------------------------------------------


def spelled_pairs() -> list[tuple[int, int]]:
    """Operands the tiny tokenizer can spell (it saw only the digits 0, 1, 2 and 4)."""
    ok = set("0124")
    return [(a, b) for a in range(1, 50) for b in range(1, 50) if set(f"{a}{b}{a * b}") <= ok]


class RewardSpy:
    """A weight-0 reward function that keeps what TRL passed to the reward functions."""

    __name__ = "spy"

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        self.calls.append({"prompts": prompts, "completion_ids": completion_ids, **kwargs})
        return [0.0] * len(prompts)


def test_batched_policy_generation_matches_the_hf_backend(code_writing_model_dir):
    """Concurrent calls are one left-padded `generate`; each row keeps its own stop and budget."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cortbench.harness.backends.hf import HFGenerator
    from cortbench.harness.fences import STOP_STRINGS
    from cortbench.trainers.rl import HFPolicyGenerator

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(code_writing_model_dir)
    model = AutoModelForCausalLM.from_pretrained(code_writing_model_dir).eval()
    batched = HFPolicyGenerator(model, tokenizer, temperature=0.0, top_p=1.0)
    serial = HFGenerator(model, tokenizer, temperature=0.0)
    (a, b), (c, d) = spelled_pairs()[:2]
    prompts = [batched.render_chat([{"role": "user", "content": f"What is {x} * {y}?{INSTRUCTION}"}])
               for x, y in ((a, b), (c, d), (a, b))]  # fmt: skip
    calls = [(prompts[0], 200, STOP_STRINGS), (prompts[1], 200, STOP_STRINGS), (prompts[2], 5, STOP_STRINGS)]

    async def both():
        together = await asyncio.gather(*(batched.complete(p, max_tokens=m, stop=s) for p, m, s in calls))
        alone = [await serial.complete(p, max_tokens=m, stop=s) for p, m, s in calls]
        return together, alone

    together, alone = asyncio.run(both())
    assert [(c.text, c.finish_reason, c.tokens, c.stop) for c in together] == [
        (c.text, c.finish_reason, c.tokens, c.stop) for c in alone
    ]
    assert together[0].stop == "```\n" and together[0].text.endswith("```\n")
    assert together[2].finish_reason == "length" and together[2].tokens == 5


@pytest.mark.slow
def test_grpo_steps_train_on_real_interpreter_rollouts(code_writing_model_dir, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(code_writing_model_dir)
    model = AutoModelForCausalLM.from_pretrained(code_writing_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pairs = spelled_pairs()[:4]
    dataset = Dataset.from_list(
        [{"prompt": f"What is {a} * {b}?{INSTRUCTION}", "gold": str(a * b)} for a, b in pairs]
    )
    funcs, weights = cort_rewards()
    spy = RewardSpy()
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=96,
        max_steps=3, learning_rate=1e-3, temperature=1.0, beta=0.001, reward_weights=[*weights, 0.0],
        use_cpu=True, bf16=False, save_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    scored: list[dict] = []  # what the loss sees
    returned: list[dict] = []  # what rollout_func returned
    try:
        with CortRollout(RolloutOptions(max_tool_calls=2)) as rollout:

            def rollout_func(prompts, trainer):
                returned.append(rollout(prompts, trainer))
                return returned[-1]

            trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[*funcs, spy], args=args,
                                  train_dataset=dataset, rollout_func=rollout_func)  # fmt: skip
            score = trainer._generate_and_score_completions
            trainer._generate_and_score_completions = lambda inputs: (
                scored.append(score(inputs)) or scored[-1]
            )
            trainer.train()
    finally:
        funcs[0].close()

    # the repetition quirk: rollout_func gets each prompt num_generations times, returns one each
    assert rollout.calls == [4, 4, 4]
    assert all(len(call["prompts"]) == 4 and len(set(call["prompts"])) == 2 for call in spy.calls)
    assert all(len(out["completion_ids"]) == 4 for out in returned)
    # the reward functions saw the real executions, and the dataset's gold beside them
    assert [c["tool_statuses"] for c in spy.calls] == [o["tool_statuses"] for o in returned]
    assert all(str(eval(p.split("?")[0].removeprefix("What is "))) == g  # noqa: S307 - our own prompts
               for c in spy.calls for p, g in zip(c["prompts"], c["gold"]))  # fmt: skip
    ran = 0
    for out in returned:
        trajectories = zip(out["generation"], out["completion_ids"], out["env_mask"], out["tool_statuses"],
                           out["finish_reason"])  # fmt: skip
        for generation, ids, mask, statuses, finish in trajectories:
            blocks = [
                generation[i : generation.index("```\n", i + 1) + 4]
                for i in _starts(generation, "```output\n")
            ]
            masked = tokenizer.decode([t for t, m in zip(ids, mask) if m == 0])
            spelled = tokenizer.decode(
                tokenizer("".join(blocks), add_special_tokens=False).input_ids
            )  # <unk>s
            assert masked == spelled[: len(masked)]  # outputs, and only outputs (a cut one may end early)
            # every executed cell's output is in the completion, masked; the last one's is left out
            # only when it did not fit in the budget (the trajectory then ends there, "length")
            assert len(blocks) == len(statuses) or (len(blocks) == len(statuses) - 1 and finish == "length")
            ran += len(blocks)
    assert ran > 0
    # the loss mask TRL built excludes the interpreter's tokens
    for batch, out in zip(scored, returned):
        tool_mask, completion_mask = batch["tool_mask"], batch["completion_mask"]
        for row, mask in enumerate(out["env_mask"]):
            assert tool_mask[row, : len(mask)].tolist() == mask
        assert int(((tool_mask == 0) & (completion_mask == 1)).sum()) > 0
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 3 and all(
        "rewards/correctness/mean" in h and "cort/code_usage" in h for h in logged
    )
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed == any(h["grad_norm"] > 0 for h in logged)  # a group with no reward spread has no gradient


def _starts(text: str, marker: str) -> list[int]:
    found, i = [], text.find(marker)
    while i != -1:
        found.append(i)
        i = text.find(marker, i + 1)
    return found


@pytest.mark.slow
def test_train_rl_command_trains_saves_and_reports_before_and_after(code_writing_model_dir, tmp_path):
    from typer.testing import CliRunner

    from cortbench.trainers.cli import train_app

    pairs = spelled_pairs()
    for name, chosen in (("train", pairs[:2]), ("heldout", pairs[2:4])):
        rows = [{"problem": f"What is {a} * {b}?", "gt_answer": str(a * b)} for a, b in chosen]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "rl.yaml"
    config.write_text(
        f"stage: rl\nmodel: {code_writing_model_dir}\noutput_dir: {tmp_path / 'out'}\n"
        "training: {max_steps: 2, per_device_batch_size: 4}\n"
        "eval: {tasks: ['{config_dir}/heldout.jsonl'], n: 2, max_tokens: 256, temperature: 0}\n"
        "rl: {tasks: ['{config_dir}/train.jsonl'], n: 2, max_tokens: 96, prompts_per_step: 2,\n"
        "     prompts_per_update: 2, learning_rate: 1.0e-3, temperature: 1.0, max_tool_calls: 2}\n"
    )
    result = CliRunner().invoke(train_app, ["rl", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["stage"] == "rl" and report["training"]["steps"] == 2
    assert report["training"]["tokens_per_s"] > 0
    assert report["data"]["problems"] == 2
    change = report["evaluation"]["tasks"]["all"]["change"]
    assert set(change) >= {"value", "ci"} and report["evaluation"]["tasks"]["all"]["after"]["n"] == 2
    assert (out / "model" / "config.json").is_file() and (out / "report.md").is_file()
    assert (out / "eval" / "before" / "samples.jsonl").is_file() and (
        out / "eval" / "after" / "results.json"
    ).is_file()
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 2 * 2 * 2 and any(r["tool_calls"] for r in rollouts)  # 2 steps x 2 problems x 2


def test_rl_config_rejects_the_sft_recipe_fields(tmp_path):
    from cortbench.trainers.config import ConfigError, load_config
    from cortbench.trainers.rl import RLSection, _check_training

    config = tmp_path / "rl.yaml"
    config.write_text(
        "stage: rl\nmodel: m\noutput_dir: out\ntraining: {learning_rate: 1.0e-6}\nrl: {tasks: [aime24]}\n"
    )
    loaded = load_config(config)
    assert isinstance(loaded.section, RLSection)
    assert (loaded.section.n, loaded.section.max_tool_calls, loaded.section.timeout_s) == (8, 12, 5.0)
    assert (loaded.section.learning_rate, loaded.section.beta, loaded.section.code_weight) == (
        1e-6,
        0.001,
        0.1,
    )
    with pytest.raises(ConfigError, match="rl.learning_rate"):
        _check_training(loaded)
