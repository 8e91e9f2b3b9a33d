"""Static HTML leaderboards, reports and regression checks."""
