"""`cortbench leaderboard`: the static site from run folders, its numbers, its escaping, its errors,
and the pages in a real headless Chromium (from file://, offline)."""

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cortbench.analyzers.analyze import analyze_run
from cortbench.analyzers.grading import Grader
from cortbench.analyzers.scoring import score_run
from cortbench.harness.fences import output_block
from cortbench.harness.records import InsertedHint, TokenCounts, ToolCall, TrajectoryRecord
from cortbench.harness.store import SAMPLES, RunStore
from cortbench.leaderboards.budget import budget_curve, budgets_for
from cortbench.leaderboards.paper import paper_table
from cortbench.leaderboards.runs import LeaderboardError
from cortbench.leaderboards.site import build_site
from cortbench.leaderboards.transcripts import transcript

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
MATH_TASKS = ("aime24", "aime25", "amc23", "math500", "olympiad_bench")


def _cortbench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortbench.harness.cli", *args], capture_output=True, text=True, **kwargs
    )


def _record(
    task: str,
    pid: str,
    idx: int,
    gold: str,
    answer: str,
    *,
    cells: int = 1,
    text: str = "",
    imports: bool = True,
) -> dict:
    """A trajectory as the runner writes it: reasoning, `cells` python cells with outputs, an answer."""
    generation, calls = f"Let me think about problem {pid}. {text}\n", []
    for i in range(cells):
        code = ("import math\n" if i == 0 and imports else "") + f"print({answer} + {i} - {i})"
        calls.append(ToolCall(code, answer, "ok", 0.01))
        generation += f"We compute it.\n```python\n{code}\n```\n" + output_block(answer)
    generation += f"So the answer is \\boxed{{{answer}}}.\n"
    tokens = len(generation) // 4
    return TrajectoryRecord(
        task, pid, idx, f"<user>Problem {pid}<assistant>", generation, "stop", gold=gold,
        tool_calls=calls, tokens=TokenCounts(generated=tokens, total=tokens + 10, prompt=10),
    ).to_dict()  # fmt: skip


def _write_run(path: Path, records: list[dict], model: str = "tiny/model") -> Path:
    config = {"tasks": ",".join(dict.fromkeys(r["task"] for r in records)), "backend": "hf",
              "model": model, "hint": "code", "max_tool_calls": 15}  # fmt: skip
    with RunStore.open(path, config) as store:
        for record in records:
            store.append(TrajectoryRecord.from_dict(record))
    return path


def _math_records(skill: int, hostile: bool = False) -> list[dict]:
    """All five math tasks, 3 problems x 2 samples; `skill` of each 3 problems answered right."""
    records = []
    for task in MATH_TASKS:
        for p in range(3):
            for idx in range(2):
                right = p < skill
                text = HOSTILE if hostile and task == "aime24" and p == 0 else ""
                records.append(_record(task, str(p), idx, str(10 + p), str(10 + p if right else 99), text=text,
                                       cells=1 + idx))  # fmt: skip
    return records


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three runs: two scored and analysed (with all five math tasks), one never scored nor analysed
    (aime24 only, with hostile text in a generation)."""
    root = tmp_path_factory.mktemp("runs")
    strong = _write_run(root / "strong", _math_records(3))
    weak = _write_run(root / "weak", _math_records(1, hostile=True))
    raw = _write_run(root / "raw", [r for r in _math_records(2, hostile=True) if r["task"] == "aime24"])
    with Grader(workers=1) as grader:
        for run in (strong, weak):
            score_run(run, grader)
            analyze_run(run)
    return {"strong": strong, "weak": weak, "raw": raw}


@pytest.fixture(scope="module")
def site(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    build_site(list(runs.values()), out, workers=1)
    return out


def test_budget_curve_counts_a_sample_only_when_correct_and_within_the_budget():
    grades = [
        {"task": "a", "problem_id": "0", "correct": True, "response_tokens": 300},
        {"task": "a", "problem_id": "0", "correct": True, "response_tokens": 5000},
        {"task": "a", "problem_id": "1", "correct": False, "response_tokens": 100},
        {"task": "a", "problem_id": "1", "correct": True, "response_tokens": None, "generated_tokens": 700},
        {"task": "b", "problem_id": "0", "correct": True, "response_tokens": 20000},
    ]
    assert budgets_for(5000) == [256, 512, 1024, 2048, 4096, 8192]
    assert budgets_for(32768)[-3:] == [8192, 16384, 32768] and len(budgets_for(32768)) == 8
    # task a at 512: problem 0 has 1 of 2 within the budget, problem 1 none -> 0.25; task b: 0
    assert budget_curve(grades, ["a"], [256, 512, 1024, 8192]) == [0.0, 0.25, 0.5, 0.75]
    assert budget_curve(grades, ["a", "b"], [512, 32768]) == [0.125, 0.875]  # plain mean of tasks
    assert budget_curve(grades, ["c"], [512]) == []


def test_paper_rows_are_the_published_table():
    table = paper_table()
    assert len(table.rows) == 14 and "2510.20342" in table.url
    rl = next(r for r in table.rows if r.model == "Prompt-Hint-1.5B-RL")
    assert rl.scores == {
        "aime24": 43.1,
        "aime25": 30.2,
        "amc23": 73.8,
        "math500": 87.3,
        "olympiad_bench": 57.1,
    }
    assert rl.avg == 58.3 and rl.tool and rl.size == "1.5B"
    for row in table.rows:  # the published Avg is the plain mean of the five columns
        assert abs(sum(row.scores.values()) / 5 - row.avg) < 0.11, row.model


def test_transcript_separates_reasoning_code_and_output_and_marks_spans():
    generation = (
        "Think hard.\nHINT\n"
        + "```python\nprint(6 * 7)\n```\n"
        + output_block("42")
        + "Wait, is that right?\n"
    )
    generation += "```python\nprint(1"  # cut by the length limit
    hint_at = generation.index("HINT")
    record = TrajectoryRecord(
        "aime24", "0", 0, "p", generation, "length", tool_calls=[ToolCall("print(6 * 7)", "42", "ok", 0.1)],
        hints=[InsertedHint("before_code", hint_at, "HINT\n")],
    )  # fmt: skip
    distrust = generation.index("Wait")
    spans = [{"kind": "result_distrust", "start": distrust, "end": distrust + 20, "evidence": "doubt"}]
    shown = transcript(record, spans, {0: {"purpose": "calculation", "evidence": "new value"}})
    kinds = [b.kind for b in shown.blocks]
    assert kinds == ["text", "code", "output", "text", "code"]
    code, output, unclosed = shown.blocks[1], shown.blocks[2], shown.blocks[4]
    assert "".join(p.text for p in code.pieces) == "print(6 * 7)" and code.purpose == "calculation"
    assert code.state == "executed" and code.status == "ok"
    assert "".join(p.text for p in output.pieces) == "42"
    assert unclosed.state == "unclosed" and "".join(p.text for p in unclosed.pieces) == "print(1"
    assert [p for p in shown.blocks[0].pieces if p.marks] == [
        p for p in shown.blocks[0].pieces if p.text == "HINT\n" and p.marks == ("hint",)
    ]
    marked = [p for p in shown.blocks[3].pieces if p.marks]
    assert marked[0].text == "Wait, is that right?" and marked[0].marks == ("result_distrust",)
    assert shown.marks == {"hint": 1, "result_distrust": 1}


def test_an_empty_output_is_shown_as_such():
    generation = "```python\nx = 1\n```\n" + output_block("") + "\n\nDone."
    record = TrajectoryRecord(
        "aime24", "0", 0, "p", generation, "stop", tool_calls=[ToolCall("x = 1", "", "ok", 0.1)]
    )
    assert [b.kind for b in transcript(record).blocks] == ["code", "output", "text"]


def test_site_has_measured_and_reported_rows_with_intervals(site, runs):
    index = (site / "index.html").read_text()
    assert (site / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    assert not re.search(r"<script[^>]+src=\"https?://", index), "the site must not load scripts from the web"
    table = index[index.index('id="leaderboard"') : index.index("</table>")]
    for model in ("Prompt-Hint-1.5B-RL", "QwQ-32B", "Hint-Engineering-RFT-32B"):
        assert model in table
    assert table.count('class="badge reported"') == 14 and table.count('class="badge measured"') == 3
    assert "AIME24" in table and "Olympiad" in table and "Avg" in table and "Tokens" in table
    strong = table[table.index(">strong<") :].split("</tr>")[0]
    assert 'data-sort="100.0"' in strong and "[100.0, 100.0]" in strong  # Avg with its interval
    weak = table[table.index(">weak<") :].split("</tr>")[0]
    assert 'class="ci">[' in weak and "33.3" in weak
    raw = table[table.index(">raw<") :].split("</tr>")[0]
    assert "computed in memory" in raw and 'class="num avg" data-sort=""' in raw  # no Avg without all 5
    for plot in ("accuracy_tokens", "budget", "purpose", "behaviours", "libraries", "code"):
        assert f'id="plot-{plot}"' in index


def test_unscored_run_is_scored_and_analysed_in_memory_and_says_so(site, runs):
    page = (site / "runs" / "raw" / "index.html").read_text()
    assert "never scored: scored here in memory" in page and "never analysed: analysed here in memory" in page
    assert "66.7" in page  # 2 of 3 problems right, both samples
    assert not (runs["raw"] / "results.json").exists() and not (runs["raw"] / "grades.jsonl").exists()


def test_run_pages_link_every_problem_and_show_each_transcript_once(site):
    run_page = (site / "runs" / "weak" / "index.html").read_text()
    for task in MATH_TASKS:
        for p in range(3):
            assert f'href="{task}/{p}.html"' in run_page
    problem = (site / "runs" / "weak" / "amc23" / "1.html").read_text()
    assert problem.count('class="sample"') == 2 and problem.count('class="seg code') == 1 + 2
    assert "Let me think about problem 1." in problem and problem.count("Let me think about problem 1.") == 2
    assert 'class="purpose ' in problem  # purpose labels from the analysis


def test_model_output_is_escaped_never_run_as_html(site):
    for run in ("weak", "raw"):
        page = (site / "runs" / run / "aime24" / "0.html").read_text()
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
        assert "<script>window.__pwned" not in page and "<img src=x" not in page


def test_rebuilding_replaces_the_old_site_and_refuses_foreign_folders(runs, tmp_path):
    out = tmp_path / "site"
    build_site([runs["strong"], runs["weak"]], out, workers=1)
    build_site([runs["strong"]], out, workers=1)
    assert (out / "runs" / "strong").is_dir() and not (out / "runs" / "weak").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LeaderboardError, match="not empty"):
        build_site([runs["strong"]], foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_runs_build_in_parallel_like_in_one_process(runs, tmp_path):
    one = build_site(list(runs.values()), tmp_path / "one", workers=1)
    two = build_site(list(runs.values()), tmp_path / "two", workers=2)
    assert [s.name for s in one.runs] == [
        s.name for s in two.runs
    ] and one.pages == two.pages == 1 + 16 + 16 + 4
    a = (tmp_path / "one" / "runs" / "weak" / "aime24" / "0.html").read_text()
    assert a == (tmp_path / "two" / "runs" / "weak" / "aime24" / "0.html").read_text()


def test_measured_runs_come_before_the_papers_rows(site):
    index = (site / "index.html").read_text()
    table = index[index.index('id="leaderboard"') : index.index("</table>")]
    measured = [m.start() for m in re.finditer('class="badge measured"', table)]
    reported = [m.start() for m in re.finditer('class="badge reported"', table)]
    assert len(measured) == 3 and len(reported) == 14
    assert max(measured) < min(reported)  # weak (Avg 33.3) and raw (no Avg) too, not among the 14
    assert table.index('<tbody class="reported" id="paper-rows">') > max(measured)
    assert 'data-rows="paper-rows"' in index  # the box that hides the paper's rows
    assert "1 runs" not in index and "3 measured runs, then the\n14 models" in index


def test_cli_skips_folders_that_are_not_runs_with_a_note(runs, tmp_path):
    """`cortbench leaderboard runs/*` where the trainers wrote runs/train (no run of its own, runs
    below it) and a run has just started (no record yet)."""
    folder = tmp_path / "runs"
    shutil.copytree(runs["raw"], folder / "a")
    (folder / "train" / "sft" / "checkpoint-10").mkdir(parents=True)
    (folder / "train" / "sft" / "trainer_state.json").write_text("{}")
    shutil.copytree(runs["raw"], folder / "train" / "rft" / "eval" / "after")
    (folder / "starting").mkdir()
    (folder / "starting" / SAMPLES).write_text("")
    (folder / "README.md").write_text("my runs")
    done = _cortbench("leaderboard", *map(str, sorted(folder.iterdir())), "-o", str(tmp_path / "site"),
                      timeout=300, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    train = f"skipped {folder / 'train'}: not a run folder (no samples.jsonl)"
    assert f"{train}; it holds 1 run below it, e.g. {folder / 'train' / 'rft' / 'eval' / 'after'}" in lines
    assert f"skipped {folder / 'starting'}: no records yet" in lines
    assert f"skipped {folder / 'README.md'}: not a folder" in lines
    assert any(line.startswith("wrote 5 pages for 1 run in ") for line in lines), done.stdout
    assert (tmp_path / "site" / "runs" / "a" / "index.html").is_file()
    assert sorted(p.name for p in (tmp_path / "site" / "runs").iterdir()) == ["a"]


def test_accuracy_plot_holds_every_point_and_its_interval():
    from cortbench.leaderboards.plots import accuracy_vs_tokens
    from cortbench.leaderboards.tables import RunSummary, Score

    def summary(name: str, tokens: float, avg: Score) -> RunSummary:
        return RunSummary(name, name, "hf: m", "yes", {}, avg, avg.value, (), tokens, 1.0, 10, {}, None, None,
                          {}, [], [])  # fmt: skip

    runs = [summary("all right", 900.0, Score(100.0, 100.0, 100.0)), summary("none", 1000.0, Score(0.0, 0.0, 0.0)),
            summary("verbose", 31000.0, Score(50.0, 20.0, 80.0))]  # fmt: skip
    layout = accuracy_vs_tokens(runs).layout
    (x0, x1), (y0, y1) = layout.xaxis.range, layout.yaxis.range
    assert layout.xaxis.type == "log"  # the range is in decades
    for r in runs:  # strictly inside: a point on the frame is half cut, its label lost
        assert x0 < math.log10(r.tokens) < x1 and y0 < r.avg.low and r.avg.high < y1, (
            r.name,
            layout.xaxis.range,
        )


def test_a_plot_without_data_says_what_is_missing(tmp_path):
    """Runs that were analysed but whose code imports nothing, or whose analysis has no labels."""
    plain = _write_run(
        tmp_path / "plain", [_record("aime24", str(p), 0, "1", "1", imports=False) for p in range(2)]
    )
    no_code = _write_run(
        tmp_path / "no_code", [_record("aime24", str(p), 0, "1", "1", cells=0) for p in range(2)]
    )
    bare = _write_run(tmp_path / "bare", [_record("aime24", str(p), 0, "1", "1") for p in range(2)])
    analyze_run(plain)
    analyze_run(bare, cell_labelers=(), trajectory_labelers=())  # an analysis without labels

    def missing(*run_dirs: Path) -> dict[str, str]:
        build_site(run_dirs, tmp_path / "site", workers=1)
        index = (tmp_path / "site" / "index.html").read_text()
        assert "No run has these data yet" not in index
        return dict(
            re.findall(r'<figure class="plot">\s*<p class="missing">(.*?)</p>\s*<figcaption>(\w+)', index)
        )

    assert set(missing(plain).values()) == {"Library"}
    assert "No run&#39;s code imports a module." in missing(plain)
    found = {v: k for k, v in missing(no_code).items()}
    assert found["Library"] == "No run&#39;s code imports a module (no run executed a code cell)."
    assert found["Calculation"] == "No run executed a code cell."
    found = {v: k for k, v in missing(bare).items()}
    assert found["Calculation"] == found["Delayed"].replace("behaviour", "purpose")
    assert found["Delayed"] == (
        "No run&#39;s analysis has behaviour labels (an older analysis?): <code>cortbench analyze RUN</code> adds them."
    )


@pytest.mark.parametrize(
    "case",
    [
        "not_a_run",
        "no_args",
        "empty_glob",
        "bad_record",
        "binary_samples",
        "bad_results",
        "bad_grades",
        "foreign_out",
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(case, runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs["strong"], bad)
    args = [str(bad)]
    if case == "not_a_run":
        args = [str(tmp_path)]
    elif case == "no_args":
        args = []
    elif case == "empty_glob":  # what the shell passes when runs/* matches nothing
        args = [str(tmp_path / "runs" / "*")]
    elif case == "bad_record":
        with open(bad / SAMPLES, "a") as fh:
            fh.write('{"task": "aime24"}\n')
    elif case == "binary_samples":
        (bad / SAMPLES).write_bytes(b"\xff\xfe\x00garbage\n")
    elif case == "bad_results":
        (bad / "results.json").write_text("{not json")
    elif case == "bad_grades":
        (bad / "grades.jsonl").write_text("[1, 2]\n")
    elif case == "foreign_out":
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "index.md").write_text("mine")
    done = _cortbench("leaderboard", *args, "-o", str(tmp_path / "site"), timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("error:")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- in a real browser ------------------------------------------------------------------------------

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture
def browser(tmp_path):
    """Debian's Chromium through playwright, with a fresh profile and no network features. Skipped
    without chromium or playwright, except in CI (CI=1), where that is a failure."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium is None or sync_playwright is None:
        missing = "the chromium binary" if chromium is None else "playwright (the browser extra)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {missing} is not installed")
        pytest.skip(f"needs {missing}")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=chromium, headless=True, args=BROWSER_ARGS,
            viewport={"width": 1400, "height": 1000}, offline=True,
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def _open(context, path: Path):
    """A page at file://path, with every console error and page error collected."""
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, errors


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CORTBENCH_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_pages_load_sort_and_plot_in_chromium_from_file_urls(browser, site, tmp_path):
    page, errors = _open(browser, site / "index.html")
    assert page.url.startswith("file://")
    for plot in ("accuracy_tokens", "budget", "purpose", "behaviours", "libraries", "code"):
        page.wait_for_selector(f"#plot-{plot} svg.main-svg", timeout=15_000)  # plotly drew it
    avg = page.locator("#leaderboard thead th", has_text="Avg")
    column = page.evaluate(
        "() => Array.from(document.querySelectorAll('#leaderboard thead th')).findIndex(th => th.textContent.trim().startsWith('Avg'))"
    )

    def names() -> list[str]:
        return page.eval_on_selector_all(
            "#leaderboard tbody tr td:first-child", "tds => tds.map(td => td.dataset.sort)"
        )

    def values(body: str) -> list[float | None]:
        cells = page.eval_on_selector_all(
            f"#leaderboard tbody.{body} tr td:nth-child({column + 1})",
            "tds => tds.map(td => td.dataset.sort)",
        )
        return [float(v) if v else None for v in cells]

    avg.click()  # the column starts sorted best first: one click sorts it ascending
    for body in ("measured", "reported"):  # each part on its own: the measured runs stay on top
        ascending = values(body)
        present = [v for v in ascending if v is not None]
        assert present == sorted(present) and len(present) > 1
    assert values("measured")[-1] is None  # rows without an Avg go last
    assert avg.get_attribute("aria-sort") == "ascending"
    avg.click()
    descending = [v for v in values("measured") if v is not None]
    assert descending == sorted(descending, reverse=True) and names()[0] == "strong"
    page.locator("#leaderboard thead th", has_text="Model").click()
    assert names()[:3] == sorted(names()[:3], key=str.lower) and names()[:3] == ["raw", "strong", "weak"]
    page.uncheck("input.show-rows")  # the paper's rows fold away, and come back
    assert page.locator("#leaderboard tbody tr:visible").count() == 3
    page.check("input.show-rows")
    assert page.locator("#leaderboard tbody tr:visible").count() == 3 + 14
    page.screenshot(path=str(_artifacts(tmp_path) / "leaderboard-index.png"), full_page=True)
    assert errors == [], errors

    run, errors = _open(browser, site / "runs" / "weak" / "index.html")
    run.wait_for_selector("#budget svg.main-svg", timeout=15_000)
    run.click("#problems a[href='aime24/0.html']")
    run.wait_for_load_state("load")
    assert run.url.endswith("/runs/weak/aime24/0.html")
    assert errors == [], errors

    problem, errors = _open(browser, site / "runs" / "raw" / "aime24" / "0.html")
    assert problem.evaluate("() => window.__pwned") is None  # the hostile text did not run
    assert (
        problem.locator(".seg.text pre").first.inner_text().count("<script>window.__pwned = 1</script>") == 1
    )
    assert problem.locator(".seg.code").count() >= 1 and problem.locator(".seg.output").count() >= 1
    problem.screenshot(path=str(_artifacts(tmp_path) / "leaderboard-transcript.png"), full_page=True)
    assert errors == [], errors


def test_accuracy_plot_shows_every_point_and_its_titles_whole_in_chromium(browser, runs, tmp_path):
    """A verbose run far to the right, a run at 100%: each point, label and axis title is drawn
    inside the visible figure (the first plot of the grid was drawn at the page's full width and
    cut at its box, and a point at 100% sat on the frame)."""
    verbose = _write_run(tmp_path / "verbose", [_record("aime24", str(p), 0, "1", "1", text="step " * 4000)
                                                for p in range(2)])  # fmt: skip
    build_site([runs["strong"], runs["weak"], verbose], tmp_path / "site", workers=1)
    page, errors = _open(browser, tmp_path / "site" / "index.html")
    page.wait_for_selector("#plot-accuracy_tokens svg.main-svg", timeout=15_000)
    geometry = page.evaluate(
        """() => {
      const plot = document.getElementById('plot-accuracy_tokens');
      const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
      const all = (selector) => Array.from(plot.querySelectorAll(selector)).map(box);
      return {figure: box(plot.closest('figure')), area: box(plot.querySelector('.nsewdrag')),
              points: all('.scatterlayer .point'), labels: all('.scatterlayer .textpoint'),
              titles: all('.g-xtitle, .g-ytitle, .g-gtitle'),
              x: plot._fullLayout.xaxis.range, y: plot._fullLayout.yaxis.range, data: plot.data.map(t => [t.x[0], t.y[0]])};
    }"""
    )

    def inside(inner, outer) -> bool:
        return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]

    assert len(geometry["points"]) == len(geometry["labels"]) == len(geometry["data"]) == 3
    assert len(geometry["titles"]) == 3
    for shape in [*geometry["points"], *geometry["labels"], *geometry["titles"], geometry["area"]]:
        assert inside(shape, geometry["figure"]), (shape, geometry["figure"])
    for point in geometry["points"]:
        assert inside(point, geometry["area"]), (point, geometry["area"])
    (x0, x1), (y0, y1) = geometry["x"], geometry["y"]
    tokens = sorted(x for x, _ in geometry["data"])
    assert tokens[-1] > 10 * tokens[0]  # the verbose run is far to the right
    assert all(x0 < math.log10(x) < x1 and y0 < y < y1 for x, y in geometry["data"]), geometry  # log x axis
    page.locator("#plot-accuracy_tokens").screenshot(
        path=str(_artifacts(tmp_path) / "leaderboard-accuracy.png")
    )
    assert errors == [], errors


# --- end to end: the README's quick start, on a tiny real model ----------------------------------------


@pytest.mark.slow
def test_quickstart_runs_score_analyze_and_leaderboard(tiny_model_dir, cort_data, tmp_path):
    runs = tmp_path / "runs"
    demo, raw = runs / "demo", runs / "raw"
    done = _cortbench("run", "--tasks", "aime24", "--data-dir", str(cort_data), "--limit", "3", "--n", "1",
                      "--hint", "code", "--max-tokens", "96", "--backend", "hf", "--model", tiny_model_dir,
                      "-o", str(demo), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    raw.mkdir()
    for name in ("run.json", SAMPLES):  # the same records, never scored nor analysed
        shutil.copy(demo / name, raw / name)
    for command in ("score", "analyze"):
        done = _cortbench(command, str(demo), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    done = _cortbench(
        "leaderboard", *map(str, sorted(runs.iterdir())), "-o", str(tmp_path / "site"), timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "file://" in done.stdout and "raw: never scored" in done.stdout
    index = (tmp_path / "site" / "index.html").read_text()
    assert ">demo<" in index and ">raw<" in index and "reported" in index
    pages = sorted(p.name for p in (tmp_path / "site" / "runs" / "demo" / "aime24").iterdir())
    assert pages == ["0.html", "1.html", "2.html"]
