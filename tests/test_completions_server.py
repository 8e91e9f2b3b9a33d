"""`cortbench serve`: the tool loop behind /v1/completions, as a real server process on loopback."""

import json

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
