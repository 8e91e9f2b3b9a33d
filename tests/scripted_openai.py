"""A scripted OpenAI-compatible completions server on loopback: it plays a model that behaves like
real ones (writes a bash block and asks to `pip install`, retries a failing cell, answers in
\\boxed{}), so `cortbench run --backend openai` can be driven end to end, exactly.

Each request gets the first turn of the script that the prompt does not hold yet; the text is cut
at the first stop string, which is stripped, as OpenAI-style servers do. `report_stop` chooses
whether the reply says which stop matched (vLLM's `stop_reason`) or not (llama-cpp-python).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _reply(script: list[str], body: dict, report_stop: bool) -> dict:
    prompt, stops = body["prompt"], body.get("stop") or []
    turn = next((t for t in script if t not in prompt), "")
    words = turn.split(" ")
    finish, matched = "stop", None
    if len(turn.split()) > body["max_tokens"]:  # a word a token
        turn, finish = " ".join(words[: body["max_tokens"]]), "length"
    hits = [(turn.find(s), s) for s in stops if s in turn]
    if hits and finish == "stop":
        at, matched = min(hits)
        turn = turn[:at]  # stripped, as the OpenAI API does
    choice = {"index": 0, "text": turn, "finish_reason": finish}
    if report_stop:
        choice["stop_reason"] = matched
    return {"choices": [choice], "usage": {"completion_tokens": max(1, len(turn.split()))}}


@contextmanager
def scripted_server(script: list[str], *, report_stop: bool = True):
    """Serve `script` on a free loopback port; yields the /v1 URL and the list of request bodies."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send({"data": [{"id": "scripted"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            self._send(_reply(script, body, report_stop))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
