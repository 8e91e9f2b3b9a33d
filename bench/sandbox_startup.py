"""Sandbox start-up and per-kernel cost, this tree against an earlier commit, side by side.

    python bench/sandbox_startup.py                      # against efd89a6 (before the boundary)
    python bench/sandbox_startup.py --baseline-ref REF   # another commit
    python bench/sandbox_startup.py --quick              # smoke run

Each measurement runs in a fresh process that imports `cortbench.harness.sandbox` from one tree
(the earlier commit's `harness/` is exported with `git archive` and put first on PYTHONPATH), and
the two trees alternate. Measured, with `warm_kernels=0` so every session pays for its kernel:

* start-up: wall time of `LocalSandbox.start()` (zygote, pre-loading, warm-up, and now the
  boundary's probe and root filesystem); its CPU is the sandbox processes' CPU of a sandbox
  started and closed with no kernel;
* per kernel, one at a time: wall time of a session that runs `pass` (spawn, setup, one cell,
  kill), p50 and p90 of `--kernels` sessions; CPU per kernel = (sandbox processes' CPU with N
  kernels - with none) / N, plus the harness process's own CPU per session;
* a burst: 64 sessions at once in a fresh sandbox, each running one cell, wall time to the last
  result (spawns in parallel, the zygote's own serial work, cgroup creation and removal);
* warm `print(1+1)`: p50 and p99 of `--warm-runs` cells on one warm kernel, and the CPU per cell
  of the harness and the kernel together (from /proc/PID/schedstat, which a shared machine's
  noise moves much less than wall time): the wire checks in the harness, the filters in the kernel.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model  # noqa: E402

BASELINE_REF = "efd89a6"  # main before issue 12 (the boundary)


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _cpu_ns(pid: int) -> int:
    """CPU time a process has used, in ns (schedstat: steadier than wall time on a shared machine)."""
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0])


async def _warm_latency(runs: int) -> dict:
    """`print(1+1)` on one warm kernel, `runs` times (after 50 unmeasured): wall time per cell,
    and CPU per cell of the harness process and the kernel process together."""
    from cortbench.harness.sandbox import LocalSandbox, SandboxConfig

    async with LocalSandbox(SandboxConfig(warm_kernels=1)) as sandbox, sandbox.session() as kernel:
        for _ in range(50):
            await kernel.run("print(1+1)")
        pid = kernel._proc.pid
        cpu0 = _cpu_ns(os.getpid()) + _cpu_ns(pid)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            result = await kernel.run("print(1+1)")
            times.append(time.perf_counter() - t)
            assert result.output == "2"
        cpu = _cpu_ns(os.getpid()) + _cpu_ns(pid) - cpu0
    return {"warm_ms": [1000 * t for t in times], "warm_cpu_us": cpu / runs / 1000}


async def _worker(kernels: int, burst: int) -> dict:
    from cortbench.harness.sandbox import LocalSandbox, SandboxConfig

    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    sandbox = LocalSandbox(SandboxConfig(warm_kernels=0))
    await sandbox.start()
    startup = time.perf_counter() - start
    walls = []
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(kernels):
        t = time.perf_counter()
        async with sandbox.session() as kernel:
            result = await kernel.run("pass")
            assert result.ok, result.output
        walls.append(time.perf_counter() - t)
    self2 = resource.getrusage(resource.RUSAGE_SELF)
    burst_s = None
    if burst:
        t = time.perf_counter()
        results = await asyncio.gather(*(sandbox.run_code("pass") for _ in range(burst)))
        assert all(r.ok for r in results)
        burst_s = time.perf_counter() - t
    await sandbox.close()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "startup_s": startup,
        "sandbox_cpu_s": _cpu(children1) - _cpu(children0),
        "harness_cpu_per_kernel_s": (_cpu(self2) - _cpu(self1)) / kernels if kernels else None,
        "walls": walls,
        "burst_s": burst_s,
        "isolated": sandbox.isolated,
        "layers": sorted(name for name, layer in getattr(sandbox, "layers", {}).items() if layer["on"]),
    }


def _run_worker(tree: Path | None, kernels: int, burst: int) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(kernels), str(burst)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _baseline_tree(ref: str, into: Path) -> Path:
    """`ref`'s harness/ as an importable `cortbench.harness` under `into`."""
    export = into / "export"
    export.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "harness"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive.stdout, check=True)
    tree = into / "tree"
    (tree / "cortbench").mkdir(parents=True)
    (tree / "cortbench" / "harness").symlink_to(export / "harness")
    return tree


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--kernels", type=int, default=100, help="sequential sessions per repetition")
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warm-runs", type=int, default=1000, help="warm print(1+1) runs per repetition")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kernels, burst = args.worker
        print(json.dumps(asyncio.run(_warm_latency(burst) if kernels < 0 else _worker(kernels, burst))))
        return 0
    if args.quick:
        args.kernels, args.burst, args.repeat, args.warm_runs = 20, 16, 1, 200

    with tempfile.TemporaryDirectory(prefix="cortbench-bench-") as tmp:
        trees = {"before": _baseline_tree(args.baseline_ref, Path(tmp)), "after": None}
        samples: dict[str, dict[str, list]] = {name: {} for name in trees}
        for rep in range(args.repeat):
            order = list(trees) if rep % 2 == 0 else list(reversed(trees))
            for name in order:
                empty = _run_worker(trees[name], 0, 0)
                full = _run_worker(trees[name], args.kernels, 0)
                burst = _run_worker(trees[name], 0, args.burst)
                warm = _run_worker(trees[name], -1, args.warm_runs)
                row = samples[name]
                row.setdefault("warm_ms", []).extend(warm["warm_ms"])
                row.setdefault("warm_cpu_us", []).append(warm["warm_cpu_us"])
                row.setdefault("startup_s", []).extend(
                    [empty["startup_s"], full["startup_s"], burst["startup_s"]]
                )
                row.setdefault("startup_cpu_s", []).append(empty["sandbox_cpu_s"])
                row.setdefault("kernel_cpu_ms", []).append(
                    1000 * (full["sandbox_cpu_s"] - empty["sandbox_cpu_s"]) / args.kernels
                )
                row.setdefault("harness_cpu_ms", []).append(1000 * full["harness_cpu_per_kernel_s"])
                row.setdefault("walls_ms", []).extend(1000 * w for w in full["walls"])
                row.setdefault("burst_s", []).append(burst["burst_s"])
                row["layers"] = full["layers"]
                print(f"rep {rep + 1} {name}: start {full['startup_s']:.2f} s, kernel p50 "
                      f"{1000 * statistics.median(full['walls']):.1f} ms, "
                      f"cpu {row['kernel_cpu_ms'][-1]:.1f} ms, burst {burst['burst_s']:.2f} s", flush=True)  # fmt: skip

    summary = {}
    for name, row in samples.items():
        summary[name] = {
            "startup_s": round(statistics.median(row["startup_s"]), 3),
            "startup_cpu_s": round(statistics.median(row["startup_cpu_s"]), 3),
            "kernel_wall_p50_ms": round(_percentile(row["walls_ms"], 0.5), 2),
            "kernel_wall_p90_ms": round(_percentile(row["walls_ms"], 0.9), 2),
            "kernel_cpu_ms": round(statistics.median(row["kernel_cpu_ms"]), 2),
            "harness_cpu_per_kernel_ms": round(statistics.median(row["harness_cpu_ms"]), 2),
            "burst_s": round(statistics.median(row["burst_s"]), 3),
            "warm_p50_ms": round(_percentile(row["warm_ms"], 0.5), 3),
            "warm_p99_ms": round(_percentile(row["warm_ms"], 0.99), 3),
            "warm_cpu_us": round(statistics.median(row["warm_cpu_us"]), 1),
            "layers_on": row["layers"],
        }
    print("| | before | after |")
    print("| --- | --- | --- |")
    for key in ("startup_s", "startup_cpu_s", "kernel_wall_p50_ms", "kernel_wall_p90_ms", "kernel_cpu_ms",
                "harness_cpu_per_kernel_ms", "burst_s", "warm_p50_ms", "warm_p99_ms", "warm_cpu_us"):  # fmt: skip
        print(f"| {key} | {summary['before'][key]} | {summary['after'][key]} |")
    print(json.dumps({
        "bench": "sandbox_startup", "baseline_ref": args.baseline_ref, "kernels": args.kernels,
        "burst": args.burst, "repeat": args.repeat, "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(),
        "python": platform.python_version(), "uid": os.getuid()}, **summary,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
