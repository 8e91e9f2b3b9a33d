"""Other tools' outputs as cortbench runs: `cortbench import FORMAT PATH... -o runs/NAME`.

Why: `score`, `analyze`, `check` and the leaderboard read run folders, and a model evaluated by
another harness should be measured with the same metrics without being run again. An importer
reads rows; each good row becomes one record per generation, the text kept whole and its tool
calls read back from the fenced ```python / ```output blocks (`text_calls`), since other tools
record no executions. Tokens and timings are unknown and left at their defaults, never invented.
A bad row is one line (file:line and the reason) and is counted; it never stops the import, but a
file without a single good row does (most likely the wrong file, or the wrong --field names).

The run is written through `RunStore` into a hidden folder beside the target and moved into place
at the end, so a failed or interrupted import leaves no run folder behind and `--overwrite`
replaces an old run only once the new one is whole. See docs/import.md.

    @register_importer("my-format")   # or a plug-in's entry point in group cortbench.import_formats
    class MyFormat(Importer):
        pattern = "*.jsonl"
        defaults = {"problem": ("question",), "gold": ("answer",), "generation": ("output",)}
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..tasks.prompts import TOOL_LIMIT_MESSAGE
from .fences import split_segments
from .records import FinishReason, TrajectoryRecord
from .registry import Registry
from .store import CONFIG, SAMPLES, RunStore
from .text_calls import tool_calls_from_text

# What a row can give a record; `--field KEY=NAME` says where to read each KEY.
FIELDS = ("problem", "gold", "generation", "task", "problem_id", "problem_meta", "finish_reason")
REQUIRED = ("problem", "gold", "generation")


class ImportFailed(RuntimeError):
    """The import cannot be done as asked (unknown format or field, unreadable path, a file without
    one good row, an occupied output folder); the message is one line."""


class BadRow(ValueError):
    """Why one row cannot be imported; the row is skipped and counted."""


@dataclass(frozen=True)
class Row:
    """One good input row: a problem, its gold answer and one or more generations of it."""

    line: int
    task: str
    problem_id: str
    prompt: str
    gold: str | None
    generations: tuple[str, ...]
    finish_reasons: tuple[str | None, ...]  # one per generation; None: the row does not say
    problem_meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A row that becomes no record: `bad` rows are reported; the others repeat rows already read
    (lm-eval logs a problem once per filter, with the same responses)."""

    line: int
    reason: str
    bad: bool = True


_MISSING = object()


def lookup(row: Any, path: str) -> Any:
    """The value at `path` in a JSON row: a key, or a dotted path into nested objects and lists
    ("doc.answer", "resps.0"); a key that itself holds dots is found whole first."""
    if isinstance(row, dict) and path in row:
        return row[path]
    value = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def parse_fields(items: Iterable[str]) -> dict[str, str]:
    """`--field KEY=NAME` options as a mapping; a malformed item or an unknown key is ImportFailed."""
    fields: dict[str, str] = {}
    for item in items:
        key, sep, name = item.partition("=")
        key, name = key.strip(), name.strip()
        if not sep or not key or not name:
            raise ImportFailed(f"--field takes KEY=NAME (e.g. gold=answer), not {item!r}")
        if key not in FIELDS:
            raise ImportFailed(f"--field: unknown key {key!r}; the keys are {', '.join(FIELDS)}")
        if key in fields:
            raise ImportFailed(f"--field {key} is given twice")
        fields[key] = name
    return fields


@lru_cache(maxsize=1024)
def cortbench_task_name(name: str) -> str:
    """cortbench's name for a task: lm-eval's `cort_aime24` (and `cort_aime24_avgk`) is `aime24`, so
    imported runs line up with `cortbench run`'s in score, check and the leaderboard."""
    from ..tasks.registry import task_names

    known = task_names()
    if name in known or not name.startswith("cort_"):
        return name
    plain = name.removeprefix("cort_").removesuffix("_avgk")
    return plain if plain in known else name


class Importer:
    """Reads one format's files as rows. A format sets `pattern` (the files a folder holds) and
    `defaults` (where each field is, tried in order, when `--field` does not say); `rows` can be
    overridden for formats that are not one JSON object per line."""

    name = ""
    pattern = "*.jsonl"
    hint_files = ""  # said after "no ... files in this folder"
    defaults: Mapping[str, tuple[str, ...]] = {}

    def __init__(self, fields: Mapping[str, str] | None = None, task: str | None = None) -> None:
        self.fields = dict(fields or {})
        unknown = sorted(set(self.fields) - set(FIELDS))
        if unknown:
            raise ImportFailed(f"unknown field keys {', '.join(unknown)}; the keys are {', '.join(FIELDS)}")
        self.task = cortbench_task_name(task) if task else None

    # -- files --------------------------------------------------------------------------------------

    def files(self, paths: Iterable[str | Path]) -> list[Path]:
        """The files to read: each path a file, or a folder searched recursively for `pattern`;
        each file once, in the order given (a folder's in name order)."""
        found: dict[Path, Path] = {}
        for path in map(Path, paths):
            if path.is_dir():
                inside = sorted(p for p in path.rglob(self.pattern) if p.is_file())
                if not inside:
                    raise ImportFailed(f"{path}: no {self.pattern} files in this folder{self.hint_files}")
                for p in inside:
                    found.setdefault(p.resolve(), p)
            elif path.is_file():
                found.setdefault(path.resolve(), path)
            else:
                raise ImportFailed(f"{path}: no such file or folder")
        return list(found.values())

    def model(self, files: list[Path]) -> str | None:
        """The model name the files themselves record, if the format has one."""
        return None

    # -- rows ---------------------------------------------------------------------------------------

    def rows(self, path: Path) -> Iterator[Row | Skipped]:
        """Every non-blank line of a JSONL file as a Row or a Skipped, in order."""
        try:
            with open(path, "rb") as fh:
                for number, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except ValueError as exc:
                        yield Skipped(number, f"not JSON ({_short(exc)})")
                        continue
                    if not isinstance(data, dict):
                        yield Skipped(number, f"not a JSON object but {_kind(data)}")
                        continue
                    try:
                        yield self.row(data, number, path)
                    except BadRow as exc:
                        yield Skipped(number, str(exc))
        except OSError as exc:
            raise ImportFailed(f"cannot read {path}: {exc.strerror or exc}") from None

    def row(self, data: dict[str, Any], number: int, path: Path) -> Row | Skipped:
        """One JSON object as a Row (BadRow says what is wrong with it)."""
        generations = _texts(*self.get(data, "generation"))
        reasons = self.finish_reasons(data, len(generations))
        problem_id = self.get(data, "problem_id", optional=True)
        return Row(
            line=number,
            task=self.task_of(data, path),
            problem_id=_identifier(*problem_id) if problem_id[1] is not _MISSING else str(number - 1),
            prompt=_text(*self.get(data, "problem")),
            gold=_gold(*self.get(data, "gold")),
            generations=generations,
            finish_reasons=reasons,
            problem_meta=_meta(*self.get(data, "problem_meta", optional=True)),
        )

    def get(self, data: dict[str, Any], key: str, optional: bool = False) -> tuple[str, Any]:
        """(where it was read, value) of field `key`: the `--field` path, else the first default
        present. A field named with --field, or a required one, that is missing is a BadRow; an
        optional one is `_MISSING`."""
        if key in self.fields:
            path = self.fields[key]
            value = lookup(data, path)
            if value is _MISSING:
                raise BadRow(f"no field {path!r} (--field {key}={path})")
            return path, value
        candidates = self.defaults.get(key, ())
        for path in candidates:
            value = lookup(data, path)
            if value is not _MISSING:
                return path, value
        if optional:
            return key, _MISSING
        looked = ", ".join(candidates) or "nothing"
        raise BadRow(f"no {key} field (looked for {looked}; name it with --field {key}=NAME)")

    def task_of(self, data: dict[str, Any], path: Path) -> str:
        """--task, else the row's task field, else the file's name."""
        if self.task:
            return self.task
        where, value = self.get(data, "task", optional=True)
        if value is not _MISSING:
            return cortbench_task_name(_identifier(where, value))
        return cortbench_task_name(self.task_from_file(path))

    def task_from_file(self, path: Path) -> str:
        return path.stem

    def finish_reasons(self, data: dict[str, Any], n: int) -> tuple[str | None, ...]:
        """A string for every generation, or a list with one per generation; None where the row
        does not say (`record_of` then reads it from the text)."""
        where, value = self.get(data, "finish_reason", optional=True)
        if value is _MISSING or value is None:
            return (None,) * n
        if isinstance(value, str):
            return (value,) * n
        if isinstance(value, list) and len(value) == n and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise BadRow(f"{where} is {_kind(value)}: give a string, or one string per generation ({n})")


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRow(f"{where} is {_kind(value)}, not a string")
    return value


def _texts(where: str, value: Any) -> tuple[str, ...]:
    """One generation (a string) or several (a list of strings; nested lists, as lm-eval's `resps`
    per request and repeat, are flattened in order)."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise BadRow(f"{where} is {_kind(value)}, not a string or a list of strings")
    texts: list[str] = []

    def walk(items: list, at: str) -> None:
        for i, item in enumerate(items):
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, list):
                walk(item, f"{at}[{i}]")
            else:
                raise BadRow(f"{at}[{i}] is {_kind(item)}, not a string")

    walk(value, where)
    if not texts:
        raise BadRow(f"{where} is an empty list: no generation")
    return tuple(texts)


def _gold(where: str, value: Any) -> str | None:
    """The reference answer as text: a string, a number, or a list of them (joined with commas, as
    cortbench's loader joins OlympiadBench's); null means the row has none (kept, not scored)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    raise BadRow(f"{where} is {_kind(value)}, not a string or a number")


def _identifier(where: str, value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRow(f"{where} is {_kind(value)}, not a name or a number")


def _meta(where: str, value: Any) -> dict[str, Any]:
    if value is _MISSING or value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRow(f"{where} is {_kind(value)}, not an object")
    return value


IMPORTERS: Registry[Importer] = Registry("import format", ImportFailed, lambda: None)


def register_importer(name: str) -> Callable:
    """Register an importer class under `name` (usable as `cortbench import name`)."""

    def decorate(cls: type[Importer]) -> type[Importer]:
        cls.name = name
        return IMPORTERS.register(name)(cls)  # type: ignore[return-value]

    return decorate


def get_importer(name: str, **kwargs: Any) -> Importer:
    return IMPORTERS.create(name, **kwargs)


def importer_names() -> list[str]:
    return IMPORTERS.names()


# lm-eval 0.4's EvaluationTracker.save_results_samples: samples_{task}_{date_id}.jsonl, with date_id
# datetime.now().isoformat() with ":" made "-"; the results file of the same run ends in the same id.
_LM_EVAL_SAMPLES = re.compile(
    r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)$"
)


@register_importer("lm-eval")
class LmEvalImporter(Importer):
    """lm-eval's `--log_samples` files: one line per problem (and filter) holding `doc_id`, `doc`
    (the dataset row), `target`, `arguments` ({gen_args_0: {arg_0: prompt, arg_1: generation
    settings}}), `resps` (per request, the responses of its repeats) and `filtered_resps`.

    `resps` is read, not `filtered_resps`: a filter may cut a transcript down to its answer. For
    cortbench's own lm-eval tasks the doc holds `id`, `problem` and `gt_answer`, so problem ids match
    `cortbench run`'s; for other tasks the doc_id and lm-eval's target serve."""

    pattern = "samples_*.jsonl"
    hint_files = " (lm_eval --log_samples --output_path DIR writes them)"
    defaults = {
        "problem": ("arguments.gen_args_0.arg_0", "doc.problem", "doc.question"),
        "gold": ("doc.gt_answer", "target"),
        "generation": ("resps",),
        "problem_id": ("doc.id", "doc_id"),
    }

    def __init__(self, fields: Mapping[str, str] | None = None, task: str | None = None) -> None:
        super().__init__(fields, task)
        self._first_filter: dict[Path, Any] = {}

    def task_from_file(self, path: Path) -> str:
        match = _LM_EVAL_SAMPLES.match(path.stem)
        return match["task"] if match else path.stem.removeprefix("samples_")

    def row(self, data: dict[str, Any], number: int, path: Path) -> Row | Skipped:
        arguments = data.get("arguments")
        settings = lookup(arguments, "gen_args_0.arg_1") if isinstance(arguments, dict) else _MISSING
        if (
            isinstance(arguments, list)
            and arguments
            and isinstance(arguments[0], list)
            and len(arguments[0]) > 1
        ):
            settings = arguments[0][1]  # older lm-eval versions logged the arguments as lists
        if settings is not _MISSING and not isinstance(settings, dict):
            raise BadRow("a loglikelihood request (not generate_until): lm-eval logs no generation for it")
        filter_name = data.get("filter")
        first = self._first_filter.setdefault(path, filter_name)
        if filter_name != first:
            return Skipped(number, f"the responses again, under lm-eval filter {filter_name!r}", bad=False)
        return super().row(data, number, path)

    def model(self, files: list[Path]) -> str | None:
        """The `model_name` of the results file each samples file came with (same folder, same date)."""
        names = set()
        for path in files:
            match = _LM_EVAL_SAMPLES.match(path.stem)
            if not match:
                continue
            for results in sorted(path.parent.glob(f"*_{match['date']}.json")):
                try:
                    name = json.loads(results.read_text(encoding="utf-8")).get("model_name")
                except (OSError, ValueError, AttributeError):
                    continue
                if isinstance(name, str) and name:
                    names.add(name)
        if len(names) > 1:
            raise ImportFailed(
                f"the files come from different models ({', '.join(sorted(names))}): import each into "
                "its own run, or name one with --model"
            )
        return names.pop() if names else None


@register_importer("jsonl")
class JsonlImporter(Importer):
    """Any JSONL of problem / gold / generation rows (`cortbench grade`'s input, another harness's
    dump, cortbench's own samples.jsonl). A generation that is a list gives several samples of one
    problem; rows that repeat a problem id add samples to it. Without an id, the row's number (from
    0, as `cortbench run --tasks file.jsonl` numbers a task file's problems) is the id."""

    defaults = {
        "problem": ("problem", "question", "prompt"),
        "gold": ("gold", "gt_answer", "answer"),
        "generation": ("generation", "generations", "response", "responses", "completion"),
        "task": ("task",),
        "problem_id": ("problem_id", "id"),
        "problem_meta": ("problem_meta", "meta"),
        "finish_reason": ("finish_reason",),
    }


# -- writing the run --------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import read and wrote."""

    output: Path
    files: list[Path]
    rows: int = 0  # good rows
    bad: int = 0  # rows reported and skipped
    repeated: int = 0  # rows that repeat another filter's responses (lm-eval), read once
    samples: Counter = field(default_factory=Counter)  # records per task
    tool_calls: int = 0
    failed_calls: int = 0
    model: str | None = None

    def summary(self) -> str:
        """The closing line: rows imported and skipped, and what they became."""
        per_task = ", ".join(f"{t} {n:,}" for t, n in sorted(self.samples.items()))
        line = (
            f"imported {_plural(self.rows, 'row')} from {_plural(len(self.files), 'file')} into {self.output}: "
            f"{_plural(sum(self.samples.values()), 'sample')} ({per_task}), "
            f"{_plural(self.tool_calls, 'tool call')} ({self.failed_calls:,} failed); "
            f"skipped {_plural(self.bad, 'bad row')}"
        )
        if self.repeated:
            line += (
                f"; {_plural(self.repeated, 'row')} repeated another lm-eval filter's responses (read once)"
            )
        return line


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def record_of(row: Row, sample_idx: int, text: str, finish_reason: str | None) -> TrajectoryRecord:
    """One generation of a row as a record: segments and tool calls read from the text; tokens and
    timing unknown (their defaults). A finish reason the row does not give is "tool_limit" when the
    text holds the tool-limit message (as the records' own migration reads it), else "stop"."""
    if finish_reason is None:
        limited = TOOL_LIMIT_MESSAGE in text
        finish_reason = str(FinishReason.TOOL_LIMIT if limited else FinishReason.STOP)
    segments = split_segments(text)
    return TrajectoryRecord(
        task=row.task,
        problem_id=row.problem_id,
        sample_idx=sample_idx,
        prompt=row.prompt,
        generation=text,
        finish_reason=finish_reason,
        gold=row.gold,
        problem_meta=dict(row.problem_meta),
        segments=segments,
        tool_calls=tool_calls_from_text(text, segments),
    )


def import_run(
    format_name: str,
    paths: Iterable[str | Path],
    output: str | Path,
    *,
    task: str | None = None,
    fields: Mapping[str, str] | None = None,
    model: str | None = None,
    overwrite: bool = False,
    on_skip: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import `paths` in format `format_name` as the run `output`. `on_skip` gets one line per bad
    row ("file:line: reason") as it is met. Raises ImportFailed (nothing written) when the import
    cannot be done; samples of a problem are numbered in the order they are read."""
    importer = get_importer(format_name, fields=fields, task=task)
    paths = list(paths)
    files = importer.files(paths)
    output = Path(output)
    _check_target(output, overwrite)
    report = ImportReport(output, files, model=model or importer.model(files))
    config: dict[str, Any] = {
        "tasks": "",
        "backend": f"{format_name} import",
        "model": report.model or "unknown model",
        "import": {
            "format": format_name,
            "paths": [str(p) for p in paths],
            "files": [str(f.resolve()) for f in files],
            "fields": dict(importer.fields),
            "task": importer.task,
            "model_given": model is not None,
            "imported_at": time.time(),
        },
        "cortbench": version("cortbench"),
    }
    made = [p for p in (*reversed(output.parent.parents), output.parent) if not p.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = output.parent / f".{output.name}.import-{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()  # not mkdtemp: the run folder gets the usual permissions
    except OSError as exc:
        _remove_empty(made)
        raise ImportFailed(f"cannot write in {output.parent}: {exc.strerror or exc}") from None
    try:
        with RunStore.open(staging, config) as store:
            _write(importer, files, store, report, on_skip)
        config["tasks"] = ",".join(sorted(report.samples))
        config["import"].update(rows=report.rows, bad_rows=report.bad, repeated_rows=report.repeated)
        _rewrite_config(staging, config)
        _install(staging, output)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)
        if isinstance(exc, OSError):
            raise ImportFailed(f"cannot write {output}: {exc.strerror or exc}") from None
        raise
    return report


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders an import made for its output, innermost first, while they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


def _write(
    importer: Importer,
    files: list[Path],
    store: RunStore,
    report: ImportReport,
    on_skip: Callable[[str], None] | None,
) -> None:
    next_sample: Counter = Counter()
    for path in files:
        good = bad = 0
        for item in importer.rows(path):
            if isinstance(item, Skipped):
                if item.bad:
                    bad += 1
                    if on_skip is not None:
                        on_skip(f"{path}:{item.line}: {item.reason}")
                else:
                    report.repeated += 1
                continue
            good += 1
            records = []
            for text, reason in zip(item.generations, item.finish_reasons):
                key = (item.task, item.problem_id)
                records.append(record_of(item, next_sample[key], text, reason))
                next_sample[key] += 1
            store.append_many(records)  # one fsync a row: the run is moved into place only when whole
            report.samples[item.task] += len(records)
            report.tool_calls += sum(len(r.tool_calls) for r in records)
            report.failed_calls += sum(not c.ok for r in records for c in r.tool_calls)
        report.rows += good
        report.bad += bad
        if not good:
            what = {0: "it holds no rows", 1: "its one row is bad"}.get(
                bad, f"none of its {bad:,} rows could be imported"
            )
            raise ImportFailed(f"{path}: {what}; nothing was written")


def _holds_run(folder: Path) -> bool:
    return (folder / CONFIG).exists() or (folder / SAMPLES).exists()


def _check_target(output: Path, overwrite: bool) -> None:
    """The output must be new, empty, a run without records, or (with --overwrite) any run; never a
    folder of other files, which --overwrite would otherwise delete."""
    if output.exists() and not output.is_dir():
        raise ImportFailed(f"{output} exists and is not a folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not _holds_run(output):
        raise ImportFailed(f"{output} holds files but no run: give a new or empty folder for the run")
    samples = output / SAMPLES
    if samples.is_file() and samples.stat().st_size and not overwrite:
        raise ImportFailed(f"{output} already holds a run; pass --overwrite to replace it")


def _rewrite_config(folder: Path, config: dict[str, Any]) -> None:
    """run.json with what the import found (tasks, counts), atomically, sessions kept."""
    target = folder / CONFIG
    data = json.loads(target.read_text())
    data["config"] = config
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, target)


def _install(staging: Path, output: Path) -> None:
    """Move the finished run into place; an old run there goes only once the new one is in."""
    if not output.exists():
        os.replace(staging, output)
        return
    old = staging.with_name(staging.name.replace(".import-", ".old-", 1))
    os.replace(output, old)
    try:
        os.replace(staging, output)
    except OSError:
        os.replace(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)
