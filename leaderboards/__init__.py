"""Static HTML leaderboards, reports and regression checks.

The site: `cortbench.leaderboards.site.build_site(run_dirs, out)`, behind `cortbench leaderboard`
(docs/leaderboard.md). Nothing is imported here, so that `cortbench check` stays light.
"""
