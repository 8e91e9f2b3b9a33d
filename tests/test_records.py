"""The record contract: unknown fields are ignored at every depth, a newer schema is refused in one
line, older records are migrated as they are read, and one definition of a successful call."""

import json

import pytest

from cortbench.harness.records import (
    SCHEMA_VERSION,
    FinishReason,
    RecordVersionError,
    ToolCall,
    TrajectoryRecord,
)
from cortbench.harness.sandbox import SUCCEEDED, ExecStatus
from cortbench.harness.store import RunStore, RunStoreError, read_run
from cortbench.tasks.prompts import TOOL_LIMIT_MESSAGE


def _record(**changes) -> dict:
    data = TrajectoryRecord(
        "aime24", "0", 0, "Q", "```python\nprint(1)\n```\n```output\n1\n```\n\\boxed{1}", "stop", gold="1",
        tool_calls=[ToolCall("print(1)", "1", "ok", 0.01)],
    ).to_dict()  # fmt: skip
    data.update(changes)
    return data


def test_fields_a_newer_writer_added_are_ignored_at_every_depth():
    data = _record(added_at_top=1)
    data["tool_calls"][0]["cpu_s"] = 0.002  # the field that made every reader refuse the file
    data["segments"] = [{"kind": "text", "text": "x", "tokens": 1, "offset": 0}]
    data["hints"] = [{"point": "opening", "offset": 0, "text": "h", "source": "policy"}]
    data["tokens"] = {"generated": 3, "total": 9, "prompt": 2, "cached": 1}
    data["timing"] = {"started_at": 1.0, "queue_s": 0.5}
    record = TrajectoryRecord.from_dict(data)
    assert record.tool_calls[0].code == "print(1)" and record.tokens.response == 7
    assert record.segments[0].text == "x" and record.hints[0].text == "h" and record.timing.started_at == 1.0


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    with pytest.raises(RecordVersionError, match=f"reads up to {SCHEMA_VERSION}"):
        TrajectoryRecord.from_dict(_record(schema_version=SCHEMA_VERSION + 1))
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples.jsonl").write_text(json.dumps(_record(schema_version=99)) + "\n")
    with pytest.raises(RunStoreError, match=r"samples.jsonl:1: not a record \(a record of schema version 99"):
        read_run(run)


def test_version_1_records_are_migrated_as_they_are_read(tmp_path):
    hit = "```python\nprint(1)\n```\n```output\n1" + TOOL_LIMIT_MESSAGE + "\n```\nSo \\boxed{1}"
    old = [
        _record(schema_version=1, generation=hit),  # version 1 wrote "stop" after the limit
        _record(schema_version=1, problem_id="1"),
        {k: v for k, v in _record(problem_id="2", generation=hit).items() if k != "schema_version"},
        _record(schema_version=1, problem_id="3", generation=hit, finish_reason="length"),
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"model": "m"}, "sessions": []}))
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    _, records = read_run(run)
    assert [r.finish_reason for r in records] == ["tool_limit", "stop", "tool_limit", "length"]
    assert {r.schema_version for r in records} == {SCHEMA_VERSION}
    assert [r.ended for r in records] == [True, True, True, False]
    with RunStore.open(run, {"model": "m"}, resume=True) as store:  # a resumed old run keeps its records
        assert store.is_done("aime24", "3", 0)


def test_one_definition_of_a_successful_call():
    """A call succeeded when its code ran to its end: a cut output or a kernel replaced after it
    do not make it a failure; a raise, a timeout, memory or a dead kernel do."""
    assert {str(s) for s in SUCCEEDED} == {"ok", "output_truncated", "kernel_restarted"}
    for status in ExecStatus:
        assert ToolCall("x", "", str(status), 0.0).ok == (status in SUCCEEDED)
    assert not ToolCall("x", "", "some_other_sandbox_status", 0.0).ok
    assert FinishReason.TOOL_LIMIT.ended and not FinishReason.LENGTH.ended
