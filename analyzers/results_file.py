"""runs/<name>/results.json is shared: `cortbench score` owns the metrics, `cortbench analyze` its
"analysis" key, and each keeps what the other wrote. Files are replaced atomically, never half
written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = "results.json"
GRADES = "grades.jsonl"  # written by `cortbench score`, one graded sample a line


class ResultsFileError(RuntimeError):
    """results.json exists but cannot be read as a JSON object: it is left as it is."""


def replace_atomically(path: Path, write: Callable[[str], object]) -> None:
    """`write` fills a temporary file beside `path`, which then replaces `path` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    replace_atomically(
        path, lambda tmp: Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)
    )


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """results.json as a dict ({} when there is none); ResultsFileError when it cannot be read."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsFileError(f"cannot read {path} ({exc})") from None
    if not isinstance(data, dict):
        raise ResultsFileError(f"{path} does not hold a JSON object")
    return data


def update_results(run_dir: str | Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Set the given top-level keys of results.json, keeping every other key; returns the whole file."""
    path = Path(run_dir) / RESULTS
    try:
        data = read_results(run_dir)
    except ResultsFileError as exc:
        raise ResultsFileError(f"{exc}; not overwriting it") from None
    data.update(updates)
    write_atomic(path, json.dumps(data, indent=2, default=_plain))
    return data


def _plain(value: Any) -> Any:
    """numpy scalars as JSON numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
