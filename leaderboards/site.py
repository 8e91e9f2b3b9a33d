"""Build the static leaderboard site from run folders: `build_site(["runs/a", "runs/b"], "site")`.

Layout (every link relative, so the site works from file:// and offline):

    site/index.html                          the main table, the plots, the list of runs
    site/assets/plotly.min.js                plotly.js, bundled once from the installed plotly
    site/assets/leaderboard.js, style.css    table sorting and filtering; the look
    site/runs/<run>/index.html               one run: per-task metrics, analyses, per-problem results
    site/runs/<run>/<task>/<problem>.html    one problem: its samples' transcripts

Runs are read and their pages written one run at a time (in parallel over runs on several CPUs), so
memory holds one run's records, and each transcript is written once, on its problem's page.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import plotly
import plotly.offline
from markupsafe import Markup, escape

from ..analyzers.grading import Grader
from ..harness.console import plural
from ..harness.records import TrajectoryRecord
from ..harness.store import SAMPLES
from . import plots
from .budget import budget_curve, response_length
from .paper import paper_table
from .runs import LeaderboardError, Run, load_run
from .tables import RunSummary, Score, leaderboard_rows, summarize_run, task_columns, task_title
from .transcripts import transcript

MARKER = ".cortbench-site"  # marks a folder this module built, which it may rebuild
STATIC = ("leaderboard.js", "style.css")
PLOTS = {  # the index's plots by element id (plot-<name>), in the page's order
    "accuracy_tokens": plots.accuracy_vs_tokens,
    "budget": plots.budget_curves,
    "purpose": plots.purpose_split,
    "behaviours": plots.behaviour_rates,
    "libraries": plots.library_adoption,
    "code": plots.code_usage,
}


@dataclass
class Site:
    """What `build_site` wrote."""

    directory: Path
    runs: list[RunSummary]
    pages: int
    seconds: float
    skipped: list[str]  # "skipped <path>: <why>", one per path given that is not a run folder


def build_site(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    title: str = "cortbench leaderboard",
    paper: bool = True,
    workers: int | None = None,
) -> Site:
    """Write the site for `run_dirs` into `out`. `out` must be empty, absent, or a site built before
    (its runs/ folder is then replaced). `paper`: show the paper's reported rows. Paths that are not
    run folders are skipped (`Site.skipped` says why) unless none is one."""
    started = time.perf_counter()
    paths, skipped = _run_folders([Path(p) for p in run_dirs])
    if len({p.resolve() for p in paths}) < len(paths):
        raise LeaderboardError("a run folder is given twice")
    out = _prepare(Path(out))
    slugs = _unique([p.resolve().name for p in paths])
    jobs = [(path, slug, out) for path, slug in zip(paths, slugs)]
    workers = min(len(jobs), workers or len(os.sched_getaffinity(0)))
    if workers > 1 and "fork" in mp.get_all_start_methods():
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            built = list(pool.map(_build_run, jobs))
    else:
        built = [_build_run(job) for job in jobs]
    summaries = [summary for summary, _ in built]
    _write(out / "index.html", _render_index(summaries, title, paper))
    return Site(out, summaries, 1 + sum(pages for _, pages in built), time.perf_counter() - started, skipped)


def _run_folders(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The run folders among `paths`, and a note for each other one: `runs/*` also matches the
    trainers' runs/train and stray files, which should not stop the build. A path that does not
    exist is an error (a typo, or an empty glob passed as it is)."""
    if not paths:
        raise LeaderboardError("no run folders given (an empty glob?): give runs/<name> folders")
    runs, skipped = [], []
    for path in paths:
        if not path.exists():
            raise LeaderboardError(f"{path} does not exist (an empty glob?): give runs/<name> folders")
        why = _not_a_run(path)
        if why is None:
            runs.append(path)
        else:
            skipped.append(f"skipped {path}: {why}")
    if not runs:
        if len(paths) == 1:
            raise LeaderboardError(f"{paths[0]}: {_not_a_run(paths[0])}: give runs/<name> folders")
        raise LeaderboardError(
            f"none of the {len(paths)} paths given is a run folder: give runs/<name> folders"
        )
    return runs, skipped


def _not_a_run(path: Path) -> str | None:
    """Why `path` is no run folder to show (None when it is one)."""
    if not path.is_dir():
        return "not a folder"
    samples = path / SAMPLES
    if samples.is_file():
        return None if samples.stat().st_size else "no records yet"
    why = f"not a run folder (no {SAMPLES})"
    below = sorted(p.parent for depth in range(1, 4) for p in path.glob("*/" * depth + SAMPLES))
    if below:
        why += f"; it holds {plural(len(below), 'run')} below it, e.g. {below[0]}"
    return why


def _prepare(out: Path) -> Path:
    """Create `out` (or clear the runs/ of a site built before) and copy the assets into it."""
    if out.exists() and not out.is_dir():
        raise LeaderboardError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise LeaderboardError(f"{out} is not empty and holds no leaderboard: choose another -o folder")
    try:
        shutil.rmtree(out / "runs", ignore_errors=True)
        (out / "assets").mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("built by `cortbench leaderboard`; rebuilt in place\n")
        plotly_js = out / "assets" / "plotly.min.js"
        stamp = out / "assets" / ".plotly-version"
        if not plotly_js.is_file() or not stamp.is_file() or stamp.read_text() != plotly.__version__:
            plotly_js.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
            stamp.write_text(plotly.__version__)
        for name in STATIC:
            (out / "assets" / name).write_bytes(files(__package__).joinpath("static", name).read_bytes())
    except OSError as exc:
        raise LeaderboardError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return out


def _build_run(job: tuple[Path, str, Path]) -> tuple[RunSummary, int]:
    """Load one run, write its pages, and return its summary for the index (runs in a worker)."""
    path, slug, out = job
    with ExitStack() as stack:
        run = load_run(path, lambda: stack.enter_context(Grader()))
    summary = summarize_run(run, slug)
    folder = out / "runs" / slug
    problems = _problems(run)
    pages = _problem_pages(run, problems)
    env = _environment()
    page = env.get_template("problem.html")
    for (task, pid), records in problems.items():
        target = folder / pages[(task, pid)]
        target.parent.mkdir(parents=True, exist_ok=True)
        samples = [_sample(run, r) for r in records]
        correct = sum(bool(s["grade"].get("correct")) for s in samples)
        _write(target, page.render(root="../../../", with_plotly=False, run=run, task_title=task_title(task),
                                   problem_id=pid, samples=samples, correct=correct))  # fmt: skip
    _write(folder / "index.html", _render_run(env, run, summary, problems, pages))
    return summary, 1 + len(problems)


def _problems(run: Run) -> dict[tuple[str, str], list[TrajectoryRecord]]:
    """Records by (task, problem), tasks and problems in the order of the run, samples by index."""
    problems: dict[tuple[str, str], list[TrajectoryRecord]] = defaultdict(list)
    for record in run.records:
        problems[(record.task, record.problem_id)].append(record)
    for records in problems.values():
        records.sort(key=lambda r: r.sample_idx)
    return dict(sorted(problems.items(), key=lambda item: (item[0][0], _natural(item[0][1]))))


def _problem_pages(run: Run, problems) -> dict[tuple[str, str], str]:
    """Each problem's page, relative to the run's folder: <task>/<problem>.html, names made safe."""
    task_slugs = dict(zip(sorted({t for t, _ in problems}), _unique(sorted({t for t, _ in problems}))))
    pages = {}
    for task in task_slugs:
        pids = [pid for t, pid in problems if t == task]
        for pid, slug in zip(pids, _unique(pids)):
            pages[(task, pid)] = f"{task_slugs[task]}/{slug}.html"
    return pages


def _sample(run: Run, record: TrajectoryRecord) -> dict[str, Any]:
    """One sample for problem.html: its grade and its transcript blocks."""
    key = record.key
    return {
        "record": record,
        "grade": run.grades.get(key, {}),
        "transcript": transcript(record, run.behaviour_spans.get(key), run.purposes.get(key)),
    }


def _render_run(env: jinja2.Environment, run: Run, summary: RunSummary, problems, pages) -> str:
    tasks = run.results.get("tasks", {})
    grades = run.grades
    budgets = summary.budgets
    curves = {task_title(t): [100 * a for a in budget_curve(grades.values(), [t], budgets)] for t in tasks}
    rows = []
    for (task, pid), records in problems.items():
        marks = [grades.get(r.key, {}) for r in records]
        answers = Counter(g.get("extracted") for g in marks if g.get("extracted") is not None)
        rows.append({
            "task": task,
            "problem_id": pid,
            "href": pages[(task, pid)],
            "gold": records[0].gold,
            "samples": [(r.sample_idx, g.get("correct"), g.get("grading_error")) for r, g in zip(records, marks)],
            "share": 100 * sum(bool(g.get("correct")) for g in marks) / len(marks),
            "answer": answers.most_common(1)[0][0] if answers else None,
            "tokens": _mean([response_length(g) for g in marks if g]),
            "calls": _mean([len(r.tool_calls) for r in records]),
        })  # fmt: skip
    budget_plot = plots.figure_html(plots.task_budget_curves(budgets, curves), "budget")
    return env.get_template("run.html").render(
        root="../../",
        with_plotly=budget_plot is not None,
        run=run,
        summary=summary,
        tasks={name: _task_view(t) for name, t in tasks.items()},
        group=next(iter(run.results.get("groups", {}).values()), None),
        analysis=run.analysis,
        problems=rows,
        budget_plot=budget_plot,
        config_json=json.dumps(run.config, indent=2, default=str),
    )


def _task_view(task: dict[str, Any]) -> dict[str, Any]:
    k = str(task.get("k"))
    return {
        **task,
        "avg": Score.of(task["avg@k"]),
        "pass": Score.of(task["pass@k"][k]) if k in task.get("pass@k", {}) else None,
        "maj": Score.of(task["maj@k"][k]) if k in task.get("maj@k", {}) else None,
    }


def _render_index(summaries: list[RunSummary], title: str, with_paper: bool) -> str:
    paper = paper_table() if with_paper else None
    figures = {name: plot(summaries) for name, plot in PLOTS.items()}
    missing = {
        name: plots.missing(PLOTS[name], summaries) for name, figure in figures.items() if figure is None
    }
    return (
        _environment()
        .get_template("index.html")
        .render(
            root="",
            with_plotly=True,
            title=title,
            columns=task_columns(summaries),
            rows=leaderboard_rows(summaries, paper),
            runs=summaries,
            paper=paper,
            plots={name: plots.figure_html(figure, f"plot-{name}") for name, figure in figures.items()},
            missing=missing,
            built_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        autoescape=True,  # every page shows model output: escape by default
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        score=_score, number=_number, percent=_percent, task_title=task_title, code=_code, plural=plural
    )
    env.globals.update(task_title=task_title)
    return env


def _score(score: Score | None, interval: bool = True) -> Markup:
    """A score cell: the value, and its 95% interval below it when known."""
    if score is None:
        return Markup('<span class="missing">–</span>')
    text = escape(f"{score.value:.1f}")
    if interval and score.low is not None and score.high is not None:
        text += Markup('<span class="ci">[{:.1f}, {:.1f}]</span>').format(score.low, score.high)
    if not score.complete:
        text += Markup('<span class="partial" title="problems have different numbers of samples">*</span>')
    return text


def _code(text: str) -> Markup:
    """Plain text with `commands` set as <code>, everything escaped."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def _number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None or value != value else f"{value:,.{digits}f}"


def _percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or value != value else f"{100 * value:.{digits}f}%"


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _unique(names: Sequence[str]) -> list[str]:
    """File-safe names, one per input, all distinct: unsafe characters become "_" and a short hash
    of the original keeps two names apart that would otherwise collide."""
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        safe = _UNSAFE.sub("_", name)[:80].lstrip(".") or "_"
        if safe != name or safe.lower() in seen:
            safe = f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        while safe.lower() in seen:
            safe += "_"
        seen.add(safe.lower())
        out.append(safe)
    return out


def _natural(text: str) -> list[Any]:
    """Sort key: "2" before "10"."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
