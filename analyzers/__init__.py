"""Grading, metrics with uncertainty and code-behaviour analyses over run records."""
