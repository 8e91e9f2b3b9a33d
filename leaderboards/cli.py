"""`cortbench leaderboard` and `cortbench check`: the static HTML site and the CI regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the leaderboards' commands to the `cortbench` app (entry point `cortbench.commands`)."""
    app.command("leaderboard")(leaderboard_command)
    app.command("check")(check_command)


# --- leaderboard (site) ----------------------------------------------------------------------------


def leaderboard_command(
    runs: Annotated[
        list[Path] | None, typer.Argument(help="Run folders (runs/<name>), e.g. runs/*.", show_default=False)
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write the site into.")] = Path(
        "site"
    ),
    title: Annotated[str, typer.Option(help="Title of the main page.")] = "cortbench leaderboard",
    paper: Annotated[
        bool, typer.Option("--paper/--no-paper", help="Show the CoRT paper's reported rows.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option(help="Runs built at once (default: one per CPU).", min=1)
    ] = None,
) -> None:
    """Build the static leaderboard site (works from file://, offline): the paper's table with
    intervals, plots, and per-run pages with per-problem results and transcripts (docs/leaderboard.md).
    Runs never scored or analysed are scored and analysed in memory."""
    from cortbench.harness.console import console, fail, plural

    from .runs import LeaderboardError
    from .site import build_site

    try:
        site = build_site(runs or [], output, title=title, paper=paper, workers=workers)
    except LeaderboardError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    notes = [*site.skipped, *(f"{s.name}: {note}" for s in site.runs for note in s.notes)]
    for note in notes:
        console.print(note, style="yellow", highlight=False, markup=False, soft_wrap=True)
    index = (site.directory / "index.html").resolve()
    console.print(
        f"wrote {plural(site.pages, 'page')} for {plural(len(site.runs), 'run')} in {site.seconds:.1f} s: "
        f"{index.as_uri()}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# --- check (regression gate) -----------------------------------------------------------------------


def check_command(
    new: Annotated[Path, typer.Argument(help="The run to check (runs/<name>).", show_default=False)],
    baseline: Annotated[
        Path, typer.Option("--baseline", help="The baseline run (runs/<name>; grades.jsonl is enough).")
    ],
    tasks: Annotated[
        str, typer.Option(help="Tasks to check, comma-separated (default: all; both runs must have them).")
    ] = "",
    alpha: Annotated[
        float, typer.Option(help="Significance level: the false-alarm rate on a rerun of the same model.")
    ] = 0.05,
    min_effect: Annotated[
        float, typer.Option(help="Accuracy drop that matters (avg@k, absolute: 0.02 = 2 points).")
    ] = 0.02,
    max_token_growth: Annotated[
        float, typer.Option(help="Relative growth of mean response tokens that matters.")
    ] = 0.10,
    max_code_success_drop: Annotated[
        float, typer.Option(help="Drop of the code success rate that matters (absolute).")
    ] = 0.05,
    correction: Annotated[
        str, typer.Option(help="holm: alpha bounds any false alarm over all checks; none: each.")
    ] = "holm",
    allow_partial: Annotated[
        bool, typer.Option(help="Compare the problems and tasks both runs have.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the swap test and the bootstrap.")] = 0,
    junit: Annotated[
        Path | None, typer.Option(help="Write JUnit XML here (one testcase per task and check).")
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            help="Write the Markdown summary here (also appended to $GITHUB_STEP_SUMMARY when set)."
        ),
    ] = None,
) -> None:
    """Compare a run against a baseline run, task by task and problem by problem, and fail on a
    regression of accuracy, tokens or code success (docs/regression-check.md).
    Exit status: 0 no regression, 1 a regression, 2 the runs cannot be compared."""
    import os

    from cortbench.harness.console import console, err_console, fail

    from .check import (
        BadInput,
        CheckConfig,
        compare_runs,
        headline,
        load_run,
        rich_table,
        to_junit,
        to_markdown,
    )

    if not 0 < alpha < 0.5:
        fail(f"--alpha must be between 0 and 0.5, not {alpha}", 2)
    for name, value in (("--min-effect", min_effect), ("--max-token-growth", max_token_growth),
                        ("--max-code-success-drop", max_code_success_drop)):  # fmt: skip
        if value < 0:
            fail(f"{name} must not be negative, not {value}", 2)
    if correction not in ("holm", "none"):
        fail(f"--correction must be holm or none, not {correction}", 2)
    config = CheckConfig(
        alpha=alpha,
        min_effect=min_effect,
        max_token_growth=max_token_growth,
        max_code_success_drop=max_code_success_drop,
        tasks=tuple(dict.fromkeys(t.strip() for t in tasks.split(",") if t.strip())),
        allow_partial=allow_partial,
        correction=correction,  # type: ignore[arg-type]
        seed=seed,
    )
    try:
        report = compare_runs(load_run(baseline), load_run(new), config)
    except BadInput as exc:
        fail(str(exc), 2)
    except Exception as exc:  # grading a run without grades.jsonl: a clear line, never a traceback
        fail(f"cannot compare {new} with {baseline}: {exc}", 2)
    console.print(rich_table(report))
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    summary = to_markdown(report)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    outputs = [(junit, to_junit(report), "w"), (markdown, summary, "w"),
               (Path(step_summary) if step_summary else None, summary, "a")]  # fmt: skip
    for path, text, mode in outputs:
        if path:
            try:
                with open(path, mode, encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as exc:
                fail(f"cannot write {path}: {exc.strerror}", 2)
    if report.regressed:
        err_console.print(f"[bold red]regression:[/] {headline(report)}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]{headline(report)}[/]", highlight=False)
