"""Make the lm-eval `--log_samples` fixture of tests/test_import.py with the real `lm_eval` CLI.

The real `lm_eval` (stock `local-completions`) runs `cort_aime24_avgk` (16 repeats) and `cort_amc23`
on their first two problems against a scripted completions server on loopback, which returns, in
turn, three CoRT transcripts whose cells were run in cortbench's sandbox: one that computes and
answers right, one whose first cell fails (a real NameError traceback) and answers wrong, and one
without code that answers right. lm-eval writes the files exactly as it writes them for any run;
they are copied here (the folder name is lm-eval's sanitized model name), the results file less
the keys that describe this machine (its environment, paths and git state).

    python tests/data/lm_eval/make_fixture.py ../shared/data/cort
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cortbench.harness.fences import output_block
from cortbench.harness.sandbox import LocalSandbox, SandboxConfig

HERE = Path(__file__).resolve().parent
MACHINE_KEYS = ("configs", "config", "pretty_env_info", "git_hash", "upper_git_hash", "transformers_version")


async def transcripts(gold: str) -> list[str]:
    """The three transcripts for a problem whose answer is `gold`, outputs from the real sandbox."""
    wrong = str(int(float(gold)) + 1)
    plans = [
        ["Let me compute it.", f"answer = {gold!r}\nprint(answer)", f"So the answer is \\boxed{{{gold}}}."],
        ["First a check.", "print(y)", "Fix the name.", f"y = {wrong}\nprint(y)", f"So \\boxed{{{wrong}}}."],
        [f"Without code: the answer is \\boxed{{{gold}}}."],
    ]
    texts = []
    async with LocalSandbox(SandboxConfig(timeout_s=10, warm_kernels=1)) as sandbox:
        for plan in plans:
            text = ""
            async with sandbox.session() as kernel:
                for i, part in enumerate(plan):
                    if i % 2:  # code
                        result = await kernel.run(part)
                        text += f"```python\n{part}\n```\n{output_block(result.output)}"
                    else:
                        text += part + "\n"
            texts.append(text.rstrip("\n"))
    return texts


def main(data_dir: str) -> None:
    answers = {}
    for task in ("aime24", "amc23"):
        for line in (Path(data_dir) / f"test_{task}.jsonl").read_text().splitlines()[:2]:
            row = json.loads(line)
            answers[row["problem"]] = row["gt_answer"]
    replies = {problem: asyncio.run(transcripts(gold)) for problem, gold in answers.items()}
    served = {problem: 0 for problem in replies}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = []
            for i, prompt in enumerate(prompts):
                problem = next(p for p in replies if p in prompt)
                choices.append(
                    {"index": i, "text": replies[problem][served[problem] % 3], "finish_reason": "stop"}
                )
                served[problem] += 1
            data = json.dumps({"choices": choices}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/completions"
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [str(Path(sys.executable).with_name("lm_eval")), "--model", "local-completions", "--model_args",
             f"base_url={url},model=scripted,tokenizer_backend=none,num_concurrent=1,max_retries=1",
             "--tasks", "cort_aime24_avgk,cort_amc23", "--limit", "2", "--log_samples", "--output_path", out],
            check=True, env={**os.environ, "CORTBENCH_DATA_DIR": data_dir, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        target = HERE / "scripted"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(out) / "scripted", target)
    for results in target.glob("results_*.json"):
        data = json.loads(results.read_text())
        for key in MACHINE_KEYS:
            data.pop(key, None)
        results.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
