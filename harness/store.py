"""The run store: runs/<name>/run.json (configuration) and samples.jsonl (one record per line).

A finished sample is on disk before anything else happens to it: each line is written with one
O_APPEND write and fsynced. A crash (even `kill -9`) can at worst leave a torn last line, which
`open` cuts away; `--resume` then skips every sample already written, so no finished sample is
lost and none is duplicated. A run directory is never overwritten silently; one that holds no
record (a start that failed: unreachable server, bad tokenizer, Ctrl-C before the first sample)
holds nothing to lose, so a new run may take it, and a store closed without writing a record
removes what it made.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .records import TrajectoryRecord

SAMPLES = "samples.jsonl"
CONFIG = "run.json"


class RunStoreError(RuntimeError):
    """The run directory cannot be used as asked (exists, config differs, unreadable)."""


def read_run(path: str | Path) -> tuple[dict[str, Any], list[TrajectoryRecord]]:
    """A run's configuration and records, read-only (a torn last line of a live or crashed run is
    skipped, not cut): what analyzers, scoring and leaderboards read."""
    path = Path(path)
    if not (path / SAMPLES).is_file():
        raise RunStoreError(f"{path} is not a run directory (no {SAMPLES})")
    config = RunStore._read_config(path) if (path / CONFIG).exists() else {}
    records = []
    with open(path / SAMPLES, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break
            try:
                records.append(TrajectoryRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise RunStoreError(f"{path / SAMPLES}:{number}: not a record ({exc})") from None
    return config, records


def _holds_records(path: Path) -> bool:
    if not (path / SAMPLES).is_file():
        return False
    with open(path / SAMPLES, "rb") as fh:
        return any(b"\n" in chunk for chunk in iter(lambda: fh.read(1 << 16), b""))


class RunStore:
    """Append-only storage of one run's trajectory records."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self.torn_lines = 0  # partial lines cut away on open (a crash mid-write)
        self._done: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._made: list[Path] = []  # what open() created, removed again if no record is ever written

    @classmethod
    def open(
        cls,
        path: str | Path,
        config: dict[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        identity: tuple[str, ...] = (),
    ) -> RunStore:
        """Create `path`, or continue it with `resume`; `identity` names the config keys that must
        match the stored run for a resume to make sense (model, tasks, sampling, ...)."""
        path = Path(path)
        existing = (path / CONFIG).exists() or (path / SAMPLES).exists()
        if existing and (overwrite or not _holds_records(path)):
            (path / CONFIG).unlink(missing_ok=True)
            (path / SAMPLES).unlink(missing_ok=True)
            if overwrite:
                shutil.rmtree(path)
            existing = False
        if existing and not resume:
            raise RunStoreError(
                f"{path} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        made = [p for p in (*reversed(path.parents), path) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        if existing:
            stored = cls._read_config(path)
            changed = [k for k in identity if stored.get(k) != config.get(k)]
            if changed:
                verb = "differs" if len(changed) == 1 else "differ"
                raise RunStoreError(f"cannot resume {path}: {', '.join(changed)} {verb} from the stored run")
        store = cls(path, config)
        if not existing:
            store._made = [path / SAMPLES, path / CONFIG, *reversed(made)]
        store._write_config(resumed=existing)
        store._load()
        store._fd = os.open(path / SAMPLES, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return store

    @staticmethod
    def _read_config(path: Path) -> dict[str, Any]:
        try:
            return json.loads((path / CONFIG).read_text())["config"]
        except (OSError, ValueError, KeyError) as exc:
            raise RunStoreError(f"cannot read {path / CONFIG}: {exc}") from None

    def _write_config(self, resumed: bool) -> None:
        target = self.path / CONFIG
        history = []
        if resumed and target.exists():
            history = json.loads(target.read_text()).get("sessions", [])
        history.append({"started_at": time.time(), "resumed": resumed})
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"config": self.config, "sessions": history}, indent=2, default=str))
        os.replace(tmp, target)  # atomic: run.json is always whole

    def _load(self) -> None:
        """Index what is already written, cutting a torn last line left by a crash."""
        samples = self.path / SAMPLES
        if not samples.exists():
            return
        with open(samples, "rb+") as fh:
            data = fh.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                self.torn_lines = 1
                fh.truncate(end)
        for line in data[:end].splitlines():
            try:
                self._done.add(TrajectoryRecord.from_dict(json.loads(line)).key)
            except (ValueError, TypeError, KeyError) as exc:
                raise RunStoreError(f"{samples} holds a line that is not a record: {exc}") from None

    def is_done(self, task: str, problem_id: str, sample_idx: int) -> bool:
        return (task, problem_id, sample_idx) in self._done

    def __len__(self) -> int:
        return len(self._done)

    def append(self, record: TrajectoryRecord) -> None:
        """Write one finished record durably; a second record for the same sample is refused."""
        self.append_many([record])

    def append_many(self, records: Iterable[TrajectoryRecord]) -> None:
        """Write records (each one line, one write) and make them durable together, with one fsync:
        for writers that have many at once (imports, benchmarks), not for a live run."""
        with self._lock:
            if self._fd is None:
                raise RunStoreError(f"the run store {self.path} is closed")
            for record in records:
                if record.key in self._done:
                    raise RunStoreError(f"sample {record.key} is already in {self.path / SAMPLES}")
                line = (json.dumps(record.to_dict(), ensure_ascii=False) + "\n").encode()
                written = os.write(self._fd, line)
                if written != len(line):
                    raise RunStoreError(
                        f"short write to {self.path / SAMPLES} ({written} of {len(line)} bytes)"
                    )
                self._done.add(record.key)
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._made and not self._done:  # a start that failed: leave no run behind
                for made in self._made:
                    if made.is_dir():
                        try:
                            made.rmdir()  # only if still empty
                        except OSError:
                            break
                    else:
                        made.unlink(missing_ok=True)
            self._made = []

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
