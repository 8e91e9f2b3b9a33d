"""The run store: durable appends, torn-line repair, resume without loss or duplicates."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cortbench.harness.records import Segment, ToolCall, TrajectoryRecord
from cortbench.harness.store import SAMPLES, RunStore, RunStoreError, read_run


def record(pid: str, idx: int = 0) -> TrajectoryRecord:
    return TrajectoryRecord(
        task="aime24",
        problem_id=pid,
        sample_idx=idx,
        prompt="p",
        generation="text ```python\nprint(1)\n```\n```output\n1\n```\n \\boxed{1}",
        finish_reason="stop",
        segments=[Segment("text", "text "), Segment("code", "print(1)"), Segment("output", "1")],
        tool_calls=[ToolCall(code="print(1)", output="1", status="ok", duration_s=0.01)],
    )


def test_records_round_trip_through_the_store(tmp_path):
    with RunStore.open(tmp_path / "run", {"model": "m"}) as store:
        store.append(record("a"))
        store.append(record("a", 1))
        assert [r.key for r in read_run(store.path)[1]] == [("aime24", "a", 0), ("aime24", "a", 1)]
        assert read_run(store.path)[1][0] == record("a")


def test_existing_run_is_never_overwritten_silently(tmp_path):
    with RunStore.open(tmp_path / "run", {"model": "m"}) as store:
        store.append(record("a"))
    with pytest.raises(RunStoreError, match="--resume"):
        RunStore.open(tmp_path / "run", {"model": "m"})
    RunStore.open(tmp_path / "run", {"model": "m"}, overwrite=True).close()


def test_resume_skips_done_samples_and_refuses_duplicates(tmp_path):
    with RunStore.open(tmp_path / "run", {"model": "m"}) as store:
        store.append(record("a"))
    with RunStore.open(tmp_path / "run", {"model": "m"}, resume=True, identity=("model",)) as store:
        assert store.is_done("aime24", "a", 0) and not store.is_done("aime24", "b", 0)
        with pytest.raises(RunStoreError, match="already"):
            store.append(record("a"))
        store.append(record("b"))
    sessions = json.loads((tmp_path / "run" / "run.json").read_text())["sessions"]
    assert [s["resumed"] for s in sessions] == [False, True]


def test_a_start_that_writes_nothing_leaves_nothing_behind(tmp_path):
    target = tmp_path / "runs" / "new"
    with RunStore.open(target, {"model": "m"}):
        pass  # e.g. the server was unreachable: no record
    assert not (tmp_path / "runs").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    RunStore.open(tmp_path / "mine", {"model": "m"}).close()
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_a_run_folder_without_records_is_taken_by_a_new_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text('{"config": {"model": "old"}}')  # left by kill -9
    (tmp_path / "run" / SAMPLES).write_text("")
    with RunStore.open(tmp_path / "run", {"model": "m"}) as store:
        store.append(record("a"))
    assert read_run(tmp_path / "run")[0] == {"model": "m"}


def test_resume_refuses_a_different_model(tmp_path):
    with RunStore.open(tmp_path / "run", {"model": "m"}) as store:
        store.append(record("a"))
    with pytest.raises(RunStoreError, match="model differs from the stored run"):
        RunStore.open(tmp_path / "run", {"model": "other"}, resume=True, identity=("model",))
    with pytest.raises(RunStoreError, match="model, hint differ from the stored run"):
        RunStore.open(tmp_path / "run", {"model": "o", "hint": "h"}, resume=True, identity=("model", "hint"))


def test_torn_last_line_is_cut_on_open(tmp_path):
    with RunStore.open(tmp_path / "run", {}) as store:
        store.append(record("a"))
    with open(tmp_path / "run" / SAMPLES, "ab") as fh:
        fh.write(b'{"task": "aime24", "problem_id": "b", "sam')  # a crash mid-write
    with RunStore.open(tmp_path / "run", {}, resume=True) as store:
        assert store.torn_lines == 1 and len(store) == 1
        store.append(record("b"))
        assert [r.problem_id for r in read_run(store.path)[1]] == ["a", "b"]


WRITER = """
import sys, time
from cortbench.harness.store import RunStore
from cortbench.harness.records import TrajectoryRecord
store = RunStore.open(sys.argv[1], {"model": "m"}, resume=True)
for i in range(100000):
    if not store.is_done("t", str(i), 0):
        store.append(TrajectoryRecord("t", str(i), 0, "p", "g" * 5000, "stop"))
"""


def test_kill_9_mid_run_loses_and_duplicates_nothing(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run)])
    deadline = time.time() + 30
    while time.time() < deadline and (
        not (run / SAMPLES).exists() or os.path.getsize(run / SAMPLES) < 200_000
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    with RunStore.open(run, {"model": "m"}, resume=True) as store:
        before = len(store)
        ids = [r.problem_id for r in read_run(store.path)[1]]
    assert before > 0
    assert ids == [str(i) for i in range(before)]  # a prefix, each once


def test_append_many_writes_every_record_once_with_one_fsync(tmp_path):
    with RunStore.open(tmp_path / "run", {"model": "m"}) as store:
        store.append_many(record(str(i)) for i in range(3))
        with pytest.raises(RunStoreError, match="already"):
            store.append_many([record("3"), record("1")])
    _, records = read_run(tmp_path / "run")
    assert [r.problem_id for r in records] == ["0", "1", "2", "3"]  # the one before the duplicate is kept
