"""The leaderboard's plotly figures, as HTML fragments that use the site's bundled plotly.min.js.

Each function returns None when no run has the data (no run's code imports a module, for
instance), and `missing` says what is missing, so the page can say so instead of drawing an empty
frame. Labels come from run folders and configs, so they are HTML-escaped: plotly renders a subset
of HTML in text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

import plotly.graph_objects as go

from .tables import RunSummary

BEHAVIOUR_TITLES = {
    "delayed_computation": "Delayed code computation",
    "result_distrust": "Code result distrust",
}
CONFIG = {"displaylogo": False, "responsive": True}
LAYOUT = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
    "height": 420,
    "legend": {"orientation": "h", "y": -0.2},
}
PERCENT_TICKS = [0, 20, 40, 60, 80, 100]


def figure_html(figure: go.Figure | None, div_id: str) -> str | None:
    """A <div> and the script that draws into it; plotly.js itself is loaded once by the page."""
    if figure is None:
        return None
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)


def accuracy_vs_tokens(runs: Sequence[RunSummary]) -> go.Figure | None:
    """The paper's Figure 1: accuracy against average response tokens, one point per run."""
    points = [r for r in runs if r.headline is not None and r.tokens]
    if not points:
        return None
    figure = go.Figure()
    for r in points:
        error = None
        if r.avg and r.avg.low is not None and r.avg.high is not None:
            error = {"type": "data", "symmetric": False, "array": [r.avg.high - r.avg.value],
                     "arrayminus": [r.avg.value - r.avg.low]}  # fmt: skip
        figure.add_trace(
            go.Scatter(
                x=[r.tokens],
                y=[r.headline],
                error_y=error,
                cliponaxis=False,  # a point at 0% or 100% is drawn whole, its label too
                mode="markers+text",
                text=[_label(r.name)],
                textposition="top center",
                name=_label(r.name),
                hovertemplate=f"{_label(r.name)}<br>{_label(r.model)}<br>"
                f"{'Avg' if r.avg else 'mean of ' + ', '.join(r.headline_tasks)}: %{{y:.1f}}%<br>"
                "tokens: %{x:,.0f}<extra></extra>",
            )
        )
    figure.update_layout(
        LAYOUT,
        title="Accuracy vs. average response tokens",
        # ranges from the data, with room for each point's label; the caption says what y is
        xaxis={
            "title": "average response tokens (mean over tasks)",
            "type": "log",
            "range": _log_range([r.tokens for r in points if r.tokens]),  # (all of them)
        },  # fmt: skip
        yaxis={"title": "avg@k (%)", "range": [-5, 110], "tickvals": PERCENT_TICKS},
        showlegend=False,
    )
    return figure


def missing(plot: Callable[[Sequence[RunSummary]], go.Figure | None], runs: Sequence[RunSummary]) -> str:
    """What the runs lack when `plot` (a function here) returned None, in words a user can act on:
    every run is scored and analysed (in memory if need be), so the gap is in the runs' data."""
    executed = any(r.code.get("calls") for r in runs)
    labels = {label for r in runs for label in r.labels}
    older = "No run's analysis has {} labels (an older analysis?): `cortbench analyze RUN` adds them."
    if plot in (accuracy_vs_tokens, budget_curves):
        return "No run has a scored task: no record has a gold answer to grade."
    if plot is purpose_split:
        if not executed:
            return "No run executed a code cell."
        if "purpose" not in labels:
            return older.format("purpose")
        return "No executed code cell got a purpose label."
    if plot is behaviour_rates:
        return older.format("behaviour")
    if plot is library_adoption:
        return "No run's code imports a module" + ("." if executed else " (no run executed a code cell).")
    if plot is code_usage:
        return "No run has code statistics: no run holds a trajectory."
    raise ValueError(f"{plot} is not a plot of the leaderboard")


def purpose_split(runs: Sequence[RunSummary]) -> go.Figure | None:
    """Calculation vs Verification: the share of executed cells with each purpose label."""
    labelled = [(r, r.purpose) for r in runs if r.purpose]
    if not labelled:
        return None
    names = [_label(r.name) for r, _ in labelled]
    figure = go.Figure(
        [
            go.Bar(y=names, x=[100 * shares[p] for _, shares in labelled], name=p.title(), orientation="h")
            for p in ("calculation", "verification")
        ]
    )
    figure.update_layout(
        LAYOUT, barmode="stack", title="Purpose of executed code cells",
        xaxis={"title": "% of labelled cells", "range": [0, 100]},
        height=_bar_height(len(labelled)), yaxis={"autorange": "reversed"},
    )  # fmt: skip
    return figure


def behaviour_rates(runs: Sequence[RunSummary]) -> go.Figure | None:
    """Share of trajectories showing each inefficient behaviour Hint-Engineering removes."""
    labelled = [(r, r.behaviours) for r in runs if r.behaviours]
    if not labelled:
        return None
    names = [_label(r.name) for r, _ in labelled]
    kinds = list(dict.fromkeys(k for _, rates in labelled for k in rates))
    figure = go.Figure(
        [
            go.Bar(
                x=names,
                y=[100 * (rates.get(k) or 0) for _, rates in labelled],
                name=BEHAVIOUR_TITLES.get(k, k),
            )
            for k in kinds
        ]
    )
    figure.update_layout(
        LAYOUT,
        barmode="group",
        title="Inefficient behaviours",
        yaxis={"title": "% of trajectories", "range": [0, 100]},
    )
    return figure


def library_adoption(runs: Sequence[RunSummary], top: int = 15) -> go.Figure | None:
    """Which modules the code imports: share of trajectories per run and module (heatmap)."""
    used = [r for r in runs if r.libraries]
    if not used:
        return None
    totals: dict[str, float] = {}
    for r in used:
        for module, adoption in r.libraries.items():
            totals[module] = totals.get(module, 0.0) + adoption
    modules = sorted(totals, key=lambda m: -totals[m])[:top]
    figure = go.Figure(
        go.Heatmap(
            z=[[100 * r.libraries.get(m, 0.0) for m in modules] for r in used],
            x=[_label(m) for m in modules],
            y=[_label(r.name) for r in used],
            colorscale="Blues",
            zmin=0,
            zmax=100,
            colorbar={"title": "%"},
            hovertemplate="%{y}<br>%{x}: %{z:.1f}% of trajectories<extra></extra>",
        )
    )
    figure.update_layout(LAYOUT, title="Library adoption (% of trajectories importing)",
                         height=_bar_height(len(used)), yaxis={"autorange": "reversed"})  # fmt: skip
    return figure


def code_usage(runs: Sequence[RunSummary]) -> go.Figure | None:
    """Code usage rate (responses with an executed call) and code success rate (calls without error)."""
    measured = [(r, usage) for r in runs if (usage := r.code.get("usage")) is not None]
    if not measured:
        return None
    names = [_label(r.name) for r, _ in measured]
    calls = [r.code.get("calls") or 0 for r, _ in measured]
    figure = go.Figure(
        [
            go.Bar(x=names, y=[100 * usage for _, usage in measured], name="code usage rate",
                   customdata=calls, hovertemplate="%{x}: %{y:.1f}% (%{customdata:.2f} calls / response)<extra></extra>"),
            go.Bar(x=names, y=[100 * (r.code.get("success") or 0) for r, _ in measured], name="code success rate"),
        ]
    )  # fmt: skip
    figure.update_layout(
        LAYOUT, barmode="group", title="Code usage and success", yaxis={"title": "%", "range": [0, 100]}
    )
    return figure


def budget_curves(runs: Sequence[RunSummary]) -> go.Figure | None:
    """Accuracy had generation been cut at each token budget, one line per run."""
    curves = [r for r in runs if r.budget_accuracy]
    if not curves:
        return None
    figure = go.Figure(
        [
            go.Scatter(x=r.budgets, y=r.budget_accuracy, mode="lines+markers", name=_label(r.name),
                       hovertemplate=f"{_label(r.name)}<br>budget %{{x:,}}: %{{y:.1f}}%<extra></extra>")
            for r in curves
        ]
    )  # fmt: skip
    figure.update_layout(LAYOUT, title="Accuracy under a token budget", yaxis={"title": "avg@k (%)", "range": [0, 100]},
                         xaxis={"type": "log", "title": "response token budget", "tickvals": _ticks(curves)})  # fmt: skip
    return figure


def task_budget_curves(budgets: list[int], curves: dict[str, list[float]]) -> go.Figure | None:
    """One run's budget curve per task (percent)."""
    if not budgets or not curves:
        return None
    figure = go.Figure(
        [go.Scatter(x=budgets, y=c, mode="lines+markers", name=_label(t)) for t, c in curves.items()]
    )
    figure.update_layout(LAYOUT, title="Accuracy under a token budget, per task",
                         yaxis={"title": "avg@k (%)", "range": [0, 100]},
                         xaxis={"type": "log", "title": "response token budget", "tickvals": budgets})  # fmt: skip
    return figure


def _log_range(values: list[float]) -> list[float]:
    """A log axis' range (in decades) holding every positive value with room for its label: runs
    can differ tenfold in tokens (a smoke test beside a full run), and none sits on the frame."""
    low, high = math.log10(min(values)), math.log10(max(values))
    pad = 0.1 * (high - low) + 0.1
    return [low - pad, high + pad]


def _ticks(runs: Sequence[RunSummary]) -> list[int]:
    return sorted({b for r in runs for b in r.budgets})


def _bar_height(bars: int) -> int:
    return max(300, 120 + 24 * bars)


def _label(text: str) -> str:
    return html.escape(text, quote=False)
