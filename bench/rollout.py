"""Rollout benchmark: cortbench's harness overhead over the engine alone, and its async scheduling
against round-synchronous batching (the CoRT way), on a real llama.cpp server with SmolLM2-135M.

    python bench/rollout.py                      # a few minutes
    python bench/rollout.py --quick              # smoke run, under a minute
    python bench/rollout.py --llama-server /work/llama-server/bin/llama-server   # or LLAMA_SERVER=...

Engine: llama.cpp's C++ `llama-server --parallel C -cb` (continuous batching; build it with
bench/build_llama_server.sh) when --llama-server or $LLAMA_SERVER names one, else the
single-stream `python -m llama_cpp.server` (it serializes requests and keeps one sequence's KV
cache). `--scheduling-python` also measures the scheduling ratio there. Engine threads default to
1 (`--threads`): on a busy 2-core machine two spinning ggml threads collapse whenever another job
takes a core, and one thread leaves the other core to the harness, as a GPU engine would.

Workload: the first N problems of AIME24 and MATH500 with the CoRT instruction, greedy decoding
(temperature 0, top_p 1, server seed fixed), C trajectories at once, a total token cap per
trajectory, and the `code-print` hint (see `workload_hints`; `--hint code` for the built-in one).
Arms:
  cortbench  run_samples as `cortbench run` uses it: the tool loop, LocalSandbox sessions, records
             appended (fsynced) to a RunStore in a temp dir.
  engine     the exact completion requests (prompt, max_tokens, stop) each trajectory made in the
             latest cortbench run, each trajectory's in order, C trajectories at once, through a
             plain httpx client: no sandbox, no rendering, no recording; returned texts are compared.
  rounds     round-synchronous batching (RoundBarrier): each round one request for every active
             trajectory, wait for ALL of them, run all their cells, next round (fixed batches of C
             trajectories, as CoRT does); the very same run_rollout steps, only scheduled in rounds.
A warm-up cortbench run is the reference later runs are compared with (llama-server's continuous
batching is not batch-invariant on CPU, so a greedy trajectory may differ between runs; counts are
reported). Arms alternate their order across repetitions (ABC, CBA, ...); medians are reported.
Overhead = (cortbench - engine) / engine wall time, in steady state (sandbox started, warm kernels
ready) and including the sandbox start-up. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from _machine import cpu_model  # bench/_machine.py (the script's own folder is on sys.path)

from cortbench.harness import runner as runner_module
from cortbench.harness.backends import get_backend
from cortbench.harness.backends.llamacpp import embedded_model_path
from cortbench.harness.chat import render_chat_template
from cortbench.harness.hints import FixedHints, HintPolicy, get_hint_policy
from cortbench.harness.rollout import Completion, Limits, run_rollout
from cortbench.harness.runner import SamplingPlan, build_record, run_samples
from cortbench.harness.sandbox import LocalSandbox, SandboxConfig
from cortbench.harness.store import RunStore
from cortbench.tasks.problems import Problem, load_jsonl
from cortbench.tasks.prompts import CODE_HINT, COT_INSTRUCTION

DATA = Path(os.environ.get("CORT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "cort"))
TASK_FILES = ("test_aime24.jsonl", "test_math500.jsonl")
SEED = 1234


def workload_hints(name: str) -> HintPolicy:
    """`code`: the built-in policy (the turn opens inside a python block); SmolLM2 then mostly writes
    one long block that never closes (about 1 tool call per trajectory). `code-print` (default):
    the same opening plus "print(", and a new "```python\nprint(" after every output, so each
    trajectory makes several short tool calls, the harness's worst case per generated token."""
    if name == "code-print":
        return FixedHints(opening_text=CODE_HINT + "print(", after_output_text=CODE_HINT + "print(")
    return get_hint_policy(name)


# --------------------------------------------------------------------------- engine servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    engine: str  # "llama-server" | "llama_cpp.server"
    version: str
    url: str  # .../v1
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(binary: str | None, model: str, *, parallel: int, ctx_per_slot: int, threads: int,
                 logdir: Path) -> Server:  # fmt: skip
    port = _free_port()
    if binary:
        engine = "llama-server"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        version = " ".join((out.stdout + out.stderr).split("\n")[0].split()) or "?"
        cmd = [
            binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "--parallel", str(parallel),
            "-cb", "-c", str(ctx_per_slot * parallel), "-t", str(threads), "-tb", str(threads),
            "--seed", str(SEED), "--no-webui",
        ]  # fmt: skip
        ready_path = "/health"
    else:
        import llama_cpp

        engine = "llama_cpp.server"
        version = f"llama-cpp-python {llama_cpp.__version__}"
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", str(ctx_per_slot), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--seed", str(SEED),
        ]  # fmt: skip
        ready_path = "/v1/models"
    log = logdir / f"{engine}.{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(base + ready_path, timeout=2).status_code == 200:
                return Server(engine, version, base + "/v1", proc, log)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise SystemExit(f"{engine} did not start ({' '.join(cmd)}):\n{log.read_text()[-3000:]}")


# --------------------------------------------------------------------------- tokenizer and recorder


class GGUFTokenizer:
    """The model's own tokenizer and chat template, read from the GGUF by llama.cpp (vocab only),
    shaped like the bits of a transformers tokenizer the openai backend uses."""

    def __init__(self, path: str) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=path, vocab_only=True, verbose=False)
        meta = self.llm.metadata
        self.template = meta["tokenizer.chat_template"]
        self.special = {
            name: self.llm.detokenize([int(meta[key])], special=True).decode(errors="replace")
            for name, key in (("bos_token", "tokenizer.ggml.bos_token_id"),
                              ("eos_token", "tokenizer.ggml.eos_token_id"))
            if key in meta
        }  # fmt: skip

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        return render_chat_template(self.template, messages, **self.special)

    def __call__(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        return SimpleNamespace(input_ids=self.llm.tokenize(text.encode(), add_bos=False, special=True))


@dataclass
class Request:
    prompt: str
    max_tokens: int
    stop: tuple[str, ...]
    text: str = ""  # as the server returned it (stop string stripped)
    finish: str = ""


class Recorder:
    """Wraps a generator: logs each trajectory's completion requests in order (a trajectory is
    known by its rendered chat prompt, a prefix of all its requests) and times the harness-side
    CPU work that goes through the generator (chat rendering, token counting)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.trajectories: dict[str, list[Request]] = {}  # rendered prompt -> requests, in start order
        self.render_s = 0.0
        self.count_s = 0.0
        self.counts = 0
        self._prompts: list[str] = []

    def render_chat(self, messages):
        start = time.perf_counter()
        prompt = self.inner.render_chat(messages)
        self.render_s += time.perf_counter() - start
        return prompt

    def count_tokens(self, text: str) -> int:
        start = time.perf_counter()
        n = self.inner.count_tokens(text)
        self.count_s += time.perf_counter() - start
        self.counts += 1
        return n

    def expect(self, prompts: list[str]) -> None:
        """The rendered prompts of the trajectories about to run (their requests' common prefixes)."""
        self._prompts = sorted(prompts, key=len, reverse=True)

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        key = next((p for p in self._prompts if prompt.startswith(p)), prompt)
        request = Request(prompt, max_tokens, stop)
        self.trajectories.setdefault(key, []).append(request)
        completion = await self.inner.complete(prompt, max_tokens=max_tokens, stop=stop)
        request.text, request.finish = completion.text, completion.finish_reason
        return completion

    def log(self) -> list[list[Request]]:
        return list(self.trajectories.values())


# --------------------------------------------------------------------------- the three arms


@dataclass
class ArmResult:
    wall_s: float
    cpu_s: float = 0.0  # this process's CPU time during the arm
    records: list = field(default_factory=list)
    log: list[list[Request]] = field(default_factory=list)
    render_s: float = 0.0
    count_s: float = 0.0
    build_s: float = 0.0  # build_record, less its token counting
    append_s: float = 0.0  # RunStore.append
    texts: list[str] = field(default_factory=list)  # engine arm: returned texts, in log order
    gen_tokens: int = 0
    mismatches: int = 0

    def __post_init__(self) -> None:
        if self.records and not self.gen_tokens:
            self.gen_tokens = sum(r.tokens.generated for r in self.records)


def _timed_store(store: RunStore, acc: dict[str, float]) -> RunStore:
    append = store.append

    def timed_append(record) -> None:
        start = time.perf_counter()
        append(record)
        acc["append_s"] += time.perf_counter() - start

    store.append = timed_append  # instance attribute: this store only
    return store


def _timed_build_record(recorder: Recorder, acc: dict[str, float]):
    def timed(*args, **kwargs):
        start, counted = time.perf_counter(), recorder.count_s
        record = build_record(*args, **kwargs)
        acc["build_s"] += time.perf_counter() - start - (recorder.count_s - counted)
        return record

    return timed


async def arm_cortbench(problems, backend, sandbox, plan, workdir: Path) -> ArmResult:
    """cortbench as a user runs it: run_samples with a LocalSandbox and a RunStore."""
    recorder = Recorder(backend)
    recorder.expect([backend.render_chat([{"role": "user", "content": p.problem + plan.instruction}])
                     for p in problems])  # fmt: skip
    recorder.render_s = recorder.count_s = 0.0
    acc = {"append_s": 0.0, "build_s": 0.0}
    records: list = []
    runner_module.build_record = _timed_build_record(recorder, acc)  # to time it; restored below
    path = Path(tempfile.mkdtemp(dir=workdir, prefix="run-"))
    try:
        cpu, start = time.process_time(), time.perf_counter()
        with RunStore.open(path, {"bench": "rollout"}, overwrite=True) as store:
            await run_samples(problems, recorder, sandbox, _timed_store(store, acc), plan, records.append)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        runner_module.build_record = build_record
        shutil.rmtree(path, ignore_errors=True)
    return ArmResult(wall, cpu, records, recorder.log(), recorder.render_s, recorder.count_s,
                     acc["build_s"], acc["append_s"])  # fmt: skip


async def arm_engine(log: list[list[Request]], url: str, payload_base: dict, concurrency: int) -> ArmResult:
    """The same completion requests, each trajectory's in order, C trajectories at once, through a
    plain httpx client (same payload as the openai backend sends)."""
    slots = asyncio.Semaphore(concurrency)
    texts: dict[tuple[int, int], str] = {}
    tokens = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0)) as client:

        async def one(t: int, seq: list[Request]) -> None:
            async with slots:
                for i, req in enumerate(seq):
                    payload = {**payload_base, "prompt": req.prompt, "max_tokens": req.max_tokens}
                    if req.stop:
                        payload["stop"] = list(req.stop)
                    response = await client.post(url + "/completions", json=payload)
                    response.raise_for_status()
                    body = response.json()
                    texts[t, i] = body["choices"][0].get("text") or ""
                    nonlocal tokens
                    tokens += (body.get("usage") or {}).get("completion_tokens") or 0

        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(t, seq) for t, seq in enumerate(log)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    ordered = [texts[t, i] for t, seq in enumerate(log) for i in range(len(seq))]
    return ArmResult(wall, cpu, texts=ordered, gen_tokens=tokens)


class RoundBarrier:
    """Round-synchronous batching (the CoRT way) imposed on cortbench's own loop, so both drivers run
    the very same per-step logic (`run_rollout`): a generator wrapper that holds every completion
    request until all active trajectories of the batch have asked (or finished), sends them all at
    once, and releases the results only when ALL of them are back. Each trajectory then runs its
    cell, and the next round starts once every one of them has asked again: generate for all, wait
    for all, run all cells, repeat."""

    def __init__(self, inner, active: int) -> None:
        self.inner, self.active, self.rounds = inner, active, 0
        self._pending: list[tuple[str, int, tuple[str, ...], asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    def render_chat(self, messages):
        return self.inner.render_chat(messages)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def complete(self, prompt: str, *, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((prompt, max_tokens, stop, future))
        self._maybe_dispatch()
        return await future

    def leave(self) -> None:
        """A trajectory of the batch ended: the others no longer wait for it."""
        self.active -= 1
        self._maybe_dispatch()

    def _maybe_dispatch(self) -> None:
        if self._pending and len(self._pending) >= self.active:
            batch, self._pending = self._pending, []
            self.rounds += 1
            task = asyncio.create_task(self._round(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _round(self, batch) -> None:
        results = await asyncio.gather(
            *(self.inner.complete(p, max_tokens=m, stop=s) for p, m, s, _ in batch), return_exceptions=True
        )
        for (*_, future), result in zip(batch, results, strict=True):  # all at once, after ALL are back
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


async def run_rounds(problems, generator, sandbox, store: RunStore, plan: SamplingPlan, records: list) -> int:
    """Fixed batches of `plan.concurrency` trajectories, each batch round-synchronous; returns rounds."""
    todo = [(p, i) for p in problems for i in range(plan.n)]
    rounds = 0
    for first in range(0, len(todo), plan.concurrency):
        batch = todo[first : first + plan.concurrency]
        barrier = RoundBarrier(generator, len(batch))

        async def one(problem: Problem, idx: int, barrier: RoundBarrier = barrier) -> None:
            prompt = barrier.render_chat([{"role": "user", "content": problem.problem + plan.instruction}])
            started_at = time.time()
            try:
                async with sandbox.session() as kernel:
                    rollout = await run_rollout(prompt, barrier, kernel, plan.limits, hints=plan.hints)
            finally:
                barrier.leave()
            record = build_record(problem, idx, prompt, rollout, barrier, started_at)
            store.append(record)
            records.append(record)

        await asyncio.gather(*(one(p, i) for p, i in batch))
        rounds += barrier.rounds
    return rounds


async def arm_rounds(problems, backend, sandbox, plan, workdir: Path) -> tuple[ArmResult, int]:
    recorder = Recorder(backend)
    recorder.expect([backend.render_chat([{"role": "user", "content": p.problem + plan.instruction}])
                     for p in problems])  # fmt: skip
    records: list = []
    path = Path(tempfile.mkdtemp(dir=workdir, prefix="rounds-"))
    try:
        cpu, start = time.process_time(), time.perf_counter()
        with RunStore.open(path, {"bench": "rollout-rounds"}, overwrite=True) as store:
            rounds = await run_rounds(problems, recorder, sandbox, store, plan, records)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return ArmResult(wall, cpu, records, recorder.log()), rounds


# --------------------------------------------------------------------------- orchestration


async def _sandbox_ready(sandbox: LocalSandbox, timeout: float = 30.0) -> float:
    """Wait until the sandbox's pool of warm kernels is full (private state: a bench may peek)."""
    start = time.perf_counter()
    while len(sandbox._idle) < sandbox.config.warm_kernels and time.perf_counter() - start < timeout:
        await asyncio.sleep(0.01)
    return time.perf_counter() - start


async def start_sandbox(config: SandboxConfig) -> tuple[LocalSandbox, float]:
    start = time.perf_counter()
    sandbox = LocalSandbox(config)
    await sandbox.start()
    await _sandbox_ready(sandbox)
    return sandbox, time.perf_counter() - start


def _load_problems(per_task: int) -> list[Problem]:
    return [p for name in TASK_FILES for p in load_jsonl(DATA / name, limit=per_task)]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _machine() -> dict[str, str]:
    return {"nproc": str(os.cpu_count()), "cpu": cpu_model("?"), "python": platform.python_version(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}  # fmt: skip


def _log_stats(log: list[list[Request]]) -> tuple[int, int]:
    return len(log), sum(len(seq) for seq in log)


def _diverged(ref: ArmResult, res: ArmResult) -> int:
    """Trajectories whose generation differs from the reference run's."""
    gen = {r.key: r.generation for r in ref.records}
    return sum(gen.get(r.key) != r.generation for r in res.records)


async def measure(args, server: Server, problems: list[Problem], *, overhead: bool, workdir: Path) -> dict:
    """Warm-up reference run, then `args.reps` repetitions of the arms in alternating order."""
    C = args.concurrency
    backend = get_backend("openai", base_url=server.url, tokenizer=args.tokenizer, temperature=0.0,
                          top_p=1.0, max_concurrency=C, timeout_s=600.0)  # fmt: skip
    limits = Limits(max_tool_calls=15, max_tokens_per_call=args.max_tokens, max_total_tokens=args.max_tokens)
    plan = SamplingPlan(n=1, instruction=COT_INSTRUCTION, hints=workload_hints(args.hint), limits=limits,
                        concurrency=C)  # fmt: skip
    sconfig = SandboxConfig(timeout_s=args.cell_timeout, warm_kernels=args.warm_kernels)

    sandbox, _ = await start_sandbox(sconfig)
    try:
        ref = await arm_cortbench(problems, backend, sandbox, plan, workdir)  # warm-up and reference
    finally:
        await sandbox.close()
    payload_base = {"model": backend.model, "temperature": backend.temperature, "top_p": backend.top_p}
    n_traj, n_req = _log_stats(ref.log)
    tool_calls = [len(r.tool_calls) for r in ref.records]
    print(f"[{server.engine}] reference run: {n_traj} trajectories, {n_req} requests, "
          f"{statistics.mean(tool_calls):.2f} tool calls/trajectory (min {min(tool_calls)}, max {max(tool_calls)}),"
          f" {ref.gen_tokens} generated tokens, {ref.wall_s:.1f} s", flush=True)  # fmt: skip

    arms = ["cortbench"] + (["engine"] if overhead else []) + (["rounds"] if args.scheduling else [])
    rows: dict[str, list[ArmResult]] = defaultdict(list)
    startups, rounds_count, last_log = [], 0, ref.log
    for rep in range(args.reps):
        order = arms if rep % 2 == 0 else arms[::-1]
        sandbox, startup = await start_sandbox(sconfig)
        startups.append(startup)
        try:
            for arm in order:
                await _sandbox_ready(sandbox)
                if arm == "cortbench":
                    res = await arm_cortbench(problems, backend, sandbox, plan, workdir)
                    last_log = res.log
                    note = f"{_diverged(ref, res)}/{len(res.records)} trajectories differ from the reference"
                elif arm == "rounds":
                    res, rounds_count = await arm_rounds(problems, backend, sandbox, plan, workdir)
                    note = f"{_diverged(ref, res)}/{len(res.records)} trajectories differ from the reference"
                else:  # the latest cortbench run's requests
                    res = await arm_engine(last_log, server.url, payload_base, C)
                    texts = [r.text for seq in last_log for r in seq]
                    res.mismatches = sum(a != b for a, b in zip(res.texts, texts, strict=True))
                    note = f"{res.mismatches}/{len(texts)} replayed texts differ"
                rows[arm].append(res)
                print(f"  rep {rep + 1}/{args.reps} {arm:9s} {res.wall_s:7.2f} s  {res.gen_tokens:5d} tokens  "
                      f"cpu {res.cpu_s:5.2f} s  {note}  (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        finally:
            await sandbox.close()
    await backend.aclose()

    out: dict[str, Any] = {
        "trajectories": n_traj,
        "requests": n_req,
        "tool_calls_mean": round(statistics.mean(tool_calls), 2),
        "generated_tokens": ref.gen_tokens,
        "sandbox_startup_s": round(_median(startups), 3),
    }
    for arm, results in rows.items():
        out[f"{arm}_s"] = round(_median([r.wall_s for r in results]), 3)
        out[f"{arm}_s_all"] = [round(r.wall_s, 3) for r in results]
        out[f"{arm}_tokens_all"] = [r.gen_tokens for r in results]
        out[f"{arm}_cpu_s"] = round(_median([r.cpu_s for r in results]), 3)
    for arm in ("cortbench", "rounds"):
        if arm in rows:
            out[f"{arm}_diverged_trajectories"] = [_diverged(ref, r) for r in rows[arm]]
    if overhead:
        eng, cb = rows["engine"], rows["cortbench"]
        out["engine_text_mismatches"] = [e.mismatches for e in eng]
        steady = [100 * (c.wall_s - e.wall_s) / e.wall_s for c, e in zip(cb, eng, strict=True)]
        incl = [100 * (c.wall_s + s - e.wall_s) / e.wall_s for c, e, s in zip(cb, eng, startups, strict=True)]
        per_token = [100 * ((c.wall_s / c.gen_tokens) / (e.wall_s / e.gen_tokens) - 1)
                     for c, e in zip(cb, eng, strict=True)]  # fmt: skip
        out["overhead_pct"] = round(_median(incl), 2)
        out["overhead_steady_pct"] = round(_median(steady), 2)
        out["overhead_steady_pct_all"] = [round(x, 2) for x in steady]
        out["overhead_steady_per_token_pct"] = round(_median(per_token), 2)
        cells = [sum(r.timing.tools_s for r in c.records) for c in cb]
        calls = [sum(len(r.tool_calls) for r in c.records) for c in cb]
        out["breakdown"] = {
            "sandbox_startup_s": round(_median(startups), 3),
            "cells_s_sum": round(_median(cells), 3),  # summed over trajectories (they overlap)
            "cell_ms_mean": round(
                1000 * _median([x / max(n, 1) for x, n in zip(cells, calls, strict=True)]), 2
            ),
            "render_chat_s": round(_median([c.render_s for c in cb]), 4),
            "count_tokens_s": round(_median([c.count_s for c in cb]), 4),
            "build_record_s": round(_median([c.build_s for c in cb]), 4),
            "store_append_s": round(_median([c.append_s for c in cb]), 4),
            "harness_cpu_extra_s": round(
                _median([c.cpu_s - e.cpu_s for c, e in zip(cb, eng, strict=True)]), 3
            ),
        }
    if args.scheduling:
        pairs = list(zip(rows["cortbench"], rows["rounds"], strict=True))
        ratios = [c.wall_s / r.wall_s for c, r in pairs]
        per_token = [(c.wall_s / c.gen_tokens) / (r.wall_s / r.gen_tokens) for c, r in pairs]
        out["async_vs_rounds"] = round(_median(ratios), 3)  # async wall / rounds wall (< 1: async faster)
        out["async_vs_rounds_all"] = [round(x, 3) for x in ratios]
        out["async_vs_rounds_per_token"] = round(_median(per_token), 3)
        out["rounds"] = rounds_count
    return out


def _print_table(engine: str, res: dict, C: int) -> None:
    print(f"\n== {engine}: {res['trajectories']} trajectories at concurrency {C}, "
          f"{res['tool_calls_mean']} tool calls/trajectory, {res['requests']} requests, "
          f"{res['generated_tokens']} generated tokens (reference run) ==")  # fmt: skip
    print(f"{'arm':10s} {'median s':>9s} {'cpu s':>6s}  wall s per rep / generated tokens per rep")
    for arm in ("engine", "cortbench", "rounds"):
        if f"{arm}_s" in res:
            print(f"{arm:10s} {res[f'{arm}_s']:9.2f} {res[f'{arm}_cpu_s']:6.2f}  {res[f'{arm}_s_all']} "
                  f"/ {res[f'{arm}_tokens_all']}")  # fmt: skip
    if "overhead_steady_pct" in res:
        print(f"overhead (cortbench - engine) / engine: steady state {res['overhead_steady_pct']:+.2f}% "
              f"(per generated token {res['overhead_steady_per_token_pct']:+.2f}%), including the sandbox "
              f"start-up ({res['sandbox_startup_s']:.2f} s) {res['overhead_pct']:+.2f}%")  # fmt: skip
        print("breakdown: " + ", ".join(f"{k} {v}" for k, v in res["breakdown"].items()))
        print(
            f"engine replay: texts differing from the replayed run, per rep: {res['engine_text_mismatches']}"
        )
    if "async_vs_rounds" in res:
        print(f"scheduling: async wall / rounds wall = {res['async_vs_rounds']:.3f} (per generated token "
              f"{res['async_vs_rounds_per_token']:.3f}; rounds driver: {res['rounds']} rounds)")  # fmt: skip
    for arm in ("cortbench", "rounds"):
        if f"{arm}_diverged_trajectories" in res:
            print(f"{arm}: trajectories differing from the reference, per rep: "
                  f"{res[f'{arm}_diverged_trajectories']}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2+2 problems, 384 tokens, 1 repetition")
    ap.add_argument("--problems", type=int, default=None, help="first N problems of each task (default 4)")
    ap.add_argument("--concurrency", type=int, default=None, help="trajectories at once (default 2N)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 4)")
    ap.add_argument("--max-tokens", type=int, default=None, help="total tokens per trajectory (default 512)")
    ap.add_argument("--hint", default="code-print", choices=("code-print", "code"),
                    help="workload: code-print (several tool calls, default) or the built-in code hint")  # fmt: skip
    ap.add_argument("--cell-timeout", type=float, default=10.0)
    ap.add_argument("--warm-kernels", type=int, default=4, help="SandboxConfig.warm_kernels (default 4)")
    ap.add_argument("--threads", type=int, default=1,
                    help="engine threads (default 1: stable on a busy machine; leaves a core to the harness)")  # fmt: skip
    ap.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER"),
                    help="llama.cpp's llama-server binary (default $LLAMA_SERVER); else python -m llama_cpp.server")  # fmt: skip
    ap.add_argument("--no-overhead", dest="overhead", action="store_false", help="skip the engine-alone arm")
    ap.add_argument("--no-scheduling", dest="scheduling", action="store_false", help="skip the rounds arm")
    ap.add_argument("--server-logs", type=Path, default=None, help="keep the engine servers' logs here")
    ap.add_argument("--scheduling-python", action="store_true",
                    help="with --llama-server: also measure the scheduling ratio on python -m llama_cpp.server")  # fmt: skip
    args = ap.parse_args()
    quick = args.quick
    args.problems = args.problems or (2 if quick else 4)
    args.concurrency = args.concurrency or 2 * args.problems
    args.reps = args.reps or (1 if quick else 4)
    args.max_tokens = args.max_tokens or (384 if quick else 512)
    if not (args.overhead or args.scheduling):
        raise SystemExit("nothing to measure: --no-overhead and --no-scheduling")
    if args.llama_server and not (shutil.which(args.llama_server) or os.access(args.llama_server, os.X_OK)):
        raise SystemExit(f"--llama-server {args.llama_server}: not an executable")

    model = embedded_model_path()
    args.tokenizer = GGUFTokenizer(model)
    problems = _load_problems(args.problems)
    machine = _machine()
    engine = "llama-server" if args.llama_server else "llama_cpp.server"
    print(f"engine: {engine} ({args.llama_server or sys.executable + ' -m llama_cpp.server'}); "
          f"model {os.path.basename(model)}; {len(problems)} problems, concurrency {args.concurrency}, "
          f"{args.max_tokens} tokens/trajectory, {args.reps} reps; nproc {machine['nproc']}, "
          f"load {machine['load']}", flush=True)  # fmt: skip

    summary: dict[str, Any] = {"bench": "rollout"}
    with tempfile.TemporaryDirectory(prefix="cortbench-bench-") as tmp:
        workdir = Path(tmp)
        ctx = args.max_tokens + 256
        logdir = args.server_logs or workdir
        logdir.mkdir(parents=True, exist_ok=True)
        server = start_server(args.llama_server, model, parallel=args.concurrency, ctx_per_slot=ctx,
                              threads=args.threads, logdir=logdir)  # fmt: skip
        try:
            res = asyncio.run(measure(args, server, problems, overhead=args.overhead, workdir=workdir))
        finally:
            server.stop()
        _print_table(f"{server.engine} ({server.version})", res, args.concurrency)
        summary.update(engine=server.engine, engine_version=server.version, **res)
        if args.llama_server and args.scheduling_python and args.scheduling:
            server = start_server(
                None, model, parallel=1, ctx_per_slot=ctx, threads=args.threads, logdir=logdir
            )
            try:
                py = asyncio.run(measure(args, server, problems, overhead=False, workdir=workdir))
            finally:
                server.stop()
            _print_table(f"{server.engine} ({server.version})", py, args.concurrency)
            summary["python_server"] = {
                k: py[k] for k in py if k.startswith(("async_vs", "cortbench_s", "rounds"))
            }
    summary.update(engine_threads=args.threads, hint=args.hint, concurrency=args.concurrency, max_tokens=args.max_tokens, reps=args.reps,
                   problems_per_task=args.problems, quick=quick, machine=machine)  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
