"""`cortbench serve`: the tool loop behind /v1/completions, as a real server process on loopback."""

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("transformers")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    port, record = _free_port(), tmp_path_factory.mktemp("served") / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cortbench.harness.cli", "serve", "--backend", "hf", "--model", tiny_model_dir,
         "--port", str(port), "--hint", "code", "--max-tokens", "200", "--max-tool-calls", "2",
         "--record", str(record), "--served-name", "tiny"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(f"cortbench serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url, record
    proc.terminate()
    proc.wait(20)


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
