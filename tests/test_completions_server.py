"""`cortbench serve`: the tool loop behind /v1/completions, as a real server process on loopback."""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from conftest import cortbench_serve

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    record = tmp_path_factory.mktemp("served") / "run"
    args = ["--backend", "hf", "--model", tiny_model_dir, "--hint", "code", "--max-tokens", "200",
            "--max-tool-calls", "2", "--record", str(record), "--served-name", "tiny"]  # fmt: skip
    with cortbench_serve(*args) as url:
        yield url, record


def test_completions_run_the_tool_loop_and_return_the_transcript(server):
    url, record = server
    response = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": ["What is 2+2?", "And 3+3?"],
                                                          "max_tokens": 150, "temperature": 0.0}, timeout=300)  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny" and len(body["choices"]) == 2
    for choice in body["choices"]:
        assert choice["text"].startswith("```python\n")  # the code hint opened the turn
        assert choice["finish_reason"] in ("stop", "length")
        assert choice["cortbench"]["tool_calls"] == choice["text"].count("```output\n")
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    records = [json.loads(line) for line in (record / "samples.jsonl").read_text().splitlines()]
    assert {r["problem_id"] for r in records} and all(r["task"] == "serve" for r in records)
    assert sorted(r["generation"] for r in records) == sorted(c["text"] for c in body["choices"])


def test_models_and_health(server):
    url, _ = server
    assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "tiny"
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_bad_request_is_a_422_not_a_crash(server):
    url, _ = server
    assert httpx.post(url + "/v1/completions", json={"max_tokens": 3}).status_code == 422
    assert httpx.get(url + "/health").status_code == 200


def test_chat_messages_as_prompt_and_the_chat_endpoint(server):
    url, _ = server
    messages = [{"role": "user", "content": "What is 5*5?"}]
    body = httpx.post(
        url + "/v1/completions", json={"prompt": messages, "max_tokens": 60}, timeout=300
    ).json()
    assert len(body["choices"]) == 1 and body["choices"][0]["text"].startswith("```python\n")
    chat = httpx.post(
        url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 60}, timeout=300
    )
    assert chat.json()["choices"][0]["message"]["content"].startswith("```python\n")


def test_a_hostile_cell_is_a_completion_not_a_server_error():
    """The model's cell writes a 100,000-deep frame on the kernel's wire: the served trajectory
    goes on (the model is told its kernel was replaced), and the server answers 200."""
    from fastapi.testclient import TestClient
    from test_runner import HOSTILE_FRAME, ProblemScriptedGenerator

    from cortbench.harness.completions_server import ServeConfig, create_app
    from cortbench.harness.sandbox import SandboxConfig

    generator = ProblemScriptedGenerator({"hostile": HOSTILE_FRAME, "fine": "print(2)"})
    app = create_app(
        generator, SandboxConfig(warm_kernels=0, timeout_s=10), ServeConfig(model_name="scripted")
    )
    with TestClient(app) as client:
        reply = client.post("/v1/completions", json={"prompt": ["hostile", "fine"], "max_tokens": 100})
    assert reply.status_code == 200, reply.text
    hostile, fine = reply.json()["choices"]
    assert "malformed reply" in hostile["text"] and hostile["text"].endswith("\\boxed{2}.")
    assert hostile["cortbench"]["failed_tool_calls"] == 1
    assert "```output\n2\n```" in fine["text"]


def _scripted_app(tmp_path, log=None):
    from test_runner import ProblemScriptedGenerator

    from cortbench.harness.completions_server import ServeConfig, create_app
    from cortbench.harness.sandbox import SandboxConfig

    generator = ProblemScriptedGenerator({"two": "print(2)", "also two": "print(1 + 1)"})
    config = ServeConfig(model_name="scripted", record_dir=tmp_path / "served")
    return create_app(generator, SandboxConfig(warm_kernels=0, timeout_s=10), config, log=log)


def test_a_requests_gold_is_recorded_and_scored_and_records_without_gold_say_so(tmp_path):
    """`cortbench serve --record` keeps the "gold" a request sends; `cortbench score` grades those
    records, and on records without any gold says so in one line instead of a 0% score."""
    from fastapi.testclient import TestClient

    from cortbench.analyzers.grading import Grader
    from cortbench.analyzers.scoring import score_run

    lines: list[str] = []
    with TestClient(_scripted_app(tmp_path, log=lines.append)) as client:
        assert client.post("/v1/completions", json={"prompt": "two", "max_tokens": 50}).status_code == 200
        done = subprocess.run([sys.executable, "-m", "cortbench.harness.cli", "score", str(tmp_path / "served")],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "no gold answers in these records: nothing to score" in done.stderr
        assert not (tmp_path / "served" / "grades.jsonl").exists()
        reply = client.post("/v1/completions", json={"prompt": ["two", "also two"], "gold": ["2", "3"],
                                                     "max_tokens": 50})  # fmt: skip
        assert reply.status_code == 200, reply.text
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "two"}],
                                                         "gold": "2", "max_tokens": 50})  # fmt: skip
        assert chat.status_code == 200, chat.text
    from cortbench.harness.completions_server import prompt_id

    records = [json.loads(line) for line in (tmp_path / "served" / "samples.jsonl").read_text().splitlines()]
    assert {(r["sample_idx"], r["gold"]) for r in records if r["problem_id"] == prompt_id("two")} == {
        (0, None), (1, "2"), (2, "2")
    }  # fmt: skip
    with Grader(workers=1, timeout_s=10) as grader:
        results = score_run(tmp_path / "served", grader)
    assert results["samples"] == 4 and results["samples_without_gold"] == 1
    task = results["tasks"]["serve"]
    assert task["samples"] == 3 and task["grading_errors"] == 0
    # "two" twice right (gold 2), "also two" wrong (gold 3): per problem, 1 and 0
    assert task["avg@k"]["value"] == pytest.approx(0.5)
    assert len(lines) == 4 and all(" tool call" in line and " tokens, " in line for line in lines)


def test_gold_that_does_not_match_the_prompts_is_a_422(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(_scripted_app(tmp_path)) as client:
        for body in ({"prompt": ["two", "also two"], "gold": "2"}, {"prompt": ["two"], "gold": ["2", "3"]}):
            reply = client.post("/v1/completions", json={**body, "max_tokens": 50})
            assert reply.status_code == 422 and "gold" in reply.text


SERVE_SCRIPTED = """
import sys
sys.path.insert(0, sys.argv[1])
from test_runner import ProblemScriptedGenerator
from cortbench.harness.completions_server import ServeConfig, serve
from cortbench.harness.sandbox import SandboxConfig
serve("127.0.0.1", int(sys.argv[2]), ProblemScriptedGenerator({"two": "print(2)"}),
      SandboxConfig(warm_kernels=0, timeout_s=10), ServeConfig(model_name="scripted"))
"""


def _printed(fd: int, pending: bytearray) -> list[str]:
    """The complete lines a process has written to its stdout pipe so far (no waiting)."""
    import select

    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
    *lines, rest = pending.split(b"\n")
    pending[:] = rest
    return [line.decode() for line in lines]


def test_serve_prints_its_url_and_a_line_per_request_into_a_pipe(tmp_path):
    """Not a TTY (a pipe, a CI log): the URL once it listens, then one plain line per trajectory
    with the prompt's id (the records' problem_id), tool calls, tokens, seconds and finish reason,
    each there by the time the server answers."""
    import hashlib
    import re
    from pathlib import Path

    from conftest import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPTED, str(Path(__file__).parent), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    pending = bytearray()
    try:
        while True:  # up when /health answers
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert _printed(proc.stdout.fileno(), pending) == [f"cortbench serve: {url}/v1 (model scripted)"]
        reply = httpx.post(url + "/v1/completions", json={"prompt": "two", "max_tokens": 50}, timeout=120)
        assert reply.status_code == 200, reply.text
        [line] = _printed(proc.stdout.fileno(), pending)
        pid = hashlib.sha1(b"two").hexdigest()[:16]
        assert re.fullmatch(rf"{pid}: 1 tool call \(0 failed\), [\d,]+ tokens, [\d.]+ s, stop", line), line
    finally:
        proc.terminate()
        proc.wait(20)
